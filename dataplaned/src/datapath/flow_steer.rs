//! The TUN's steering program: a packet goes to the queue of the CPU it is
//! sent on, unless its flow sent a packet less than [`KEEP`] ago, in which
//! case it follows that packet into the same queue.
//!
//! Steering purely by CPU reorders a flow whose sender moves to another CPU
//! mid-burst: the burst's head waits in the old CPU's queue while its tail
//! is already sent from the new one. The kernel's XPS avoids that by
//! switching a socket's queue only when it has nothing in flight; the TUN
//! program cannot see the socket, so it keeps a flow on its queue while the
//! flow is active (a packet within [`KEEP`]), which is longer than a queue
//! takes to drain. A flow that pauses longer picks its CPU's queue again, so
//! request/response traffic keeps its locality.
//!
//! A flow is (source, destination, protocol, ports) of an IPv4 packet; the
//! ports are 0 for other protocols and for fragments (so all fragments of a
//! datagram share a flow). What is not IPv4 goes by CPU. Flows live in an
//! LRU hash map of [`FLOWS`] entries, which the device's program holds: an
//! evicted flow just loses its stickiness.
//!
//! The program is written here instruction by instruction ([`program`],
//! pure) and tested by running it in the kernel on crafted packets.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::datapath::ebpf::{self, Cond, Insn, Reg};

/// How long a flow keeps its queue after its last packet.
pub const KEEP: Duration = Duration::from_millis(5);

/// Flows remembered at most (least recently used ones go first).
pub const FLOWS: u32 = 4096;

/// Map key: saddr, daddr, ports, protocol (each a u32 on the stack).
const KEY_SIZE: u32 = 16;
/// Map value: queue (u32), padding (u32), last packet's time in ns (u64).
const VALUE_SIZE: u32 = 16;
const KEY: i16 = -16;
const VALUE: i16 = -32;

/// A program with symbolic jump targets.
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<(&'static str, usize)>,
    jumps: Vec<(usize, &'static str)>,
}

impl Asm {
    fn new() -> Asm {
        Asm {
            insns: Vec::new(),
            labels: Vec::new(),
            jumps: Vec::new(),
        }
    }

    fn push(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }

    fn jmp(&mut self, cond: Cond, reg: Reg, imm: i32, to: &'static str) -> &mut Self {
        self.jumps.push((self.insns.len(), to));
        self.push(ebpf::jmp_imm(cond, reg, imm, 0))
    }

    fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.push((name, self.insns.len()));
        self
    }

    fn finish(mut self) -> Vec<Insn> {
        for &(at, to) in &self.jumps {
            let target = self
                .labels
                .iter()
                .find(|(n, _)| *n == to)
                .map(|&(_, i)| i)
                .unwrap_or_else(|| panic!("no label {to}"));
            self.insns[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.insns
    }
}

/// The steering program over the flow map `map`, keeping a flow on its
/// queue for `keep_ns` after its last packet.
pub fn program(map: RawFd, keep_ns: i32) -> Vec<Insn> {
    use ebpf::*;
    let mut a = Asm::new();
    a.push(mov(R6, R1)) // packet loads read the context from r6
        .push(ld_abs(Size::B, 0))
        .push(mov(R7, R0))
        .push(and_imm(R7, 0x0f))
        .push(lsh_imm(R7, 2)) // r7 = IP header length
        .push(rsh_imm(R0, 4))
        .jmp(Cond::Ne, R0, 4, "by_cpu")
        .push(ld_abs(Size::W, 12))
        .push(stx(Size::W, FP, KEY, R0)) // source
        .push(ld_abs(Size::W, 16))
        .push(stx(Size::W, FP, KEY + 4, R0)) // destination
        .push(st_imm(Size::W, FP, KEY + 8, 0)) // ports, unless read below
        .push(ld_abs(Size::B, 9))
        .push(stx(Size::W, FP, KEY + 12, R0)) // protocol
        .push(mov(R8, R0))
        .push(ld_abs(Size::H, 6))
        .push(and_imm(R0, 0x3fff)) // more fragments or an offset
        .jmp(Cond::Ne, R0, 0, "lookup")
        .jmp(Cond::Eq, R8, libc::IPPROTO_TCP, "ports")
        .jmp(Cond::Ne, R8, libc::IPPROTO_UDP, "lookup")
        .label("ports")
        .push(ld_ind(Size::W, R7, 0))
        .push(stx(Size::W, FP, KEY + 8, R0))
        .label("lookup");
    for i in ld_map_fd(R1, map) {
        a.push(i);
    }
    a.push(mov(R2, FP))
        .push(add_imm(R2, KEY.into()))
        .push(call(MAP_LOOKUP_ELEM))
        .push(mov(R9, R0))
        .push(call(KTIME_GET_NS))
        .push(mov(R7, R0)) // r7 = now
        .jmp(Cond::Eq, R9, 0, "fresh")
        .push(ldx(Size::DW, R1, R9, 8))
        .push(mov(R2, R7))
        .push(sub(R2, R1))
        .jmp(Cond::Gt, R2, keep_ns, "fresh")
        .push(stx(Size::DW, R9, 8, R7)) // still active: keep its queue
        .push(ldx(Size::W, R0, R9, 0))
        .push(exit())
        .label("fresh")
        .push(call(GET_SMP_PROCESSOR_ID))
        .push(mov(R8, R0))
        .push(stx(Size::W, FP, VALUE, R8))
        .push(st_imm(Size::W, FP, VALUE + 4, 0))
        .push(stx(Size::DW, FP, VALUE + 8, R7));
    for i in ld_map_fd(R1, map) {
        a.push(i);
    }
    a.push(mov(R2, FP))
        .push(add_imm(R2, KEY.into()))
        .push(mov(R3, FP))
        .push(add_imm(R3, VALUE.into()))
        .push(mov_imm(R4, 0)) // BPF_ANY
        .push(call(MAP_UPDATE_ELEM))
        .push(mov(R0, R8))
        .push(exit())
        .label("by_cpu")
        .push(call(GET_SMP_PROCESSOR_ID))
        .push(exit());
    a.finish()
}

/// Creates the flow map and loads the program over it; the program holds
/// the map, so only the program's fd is returned.
pub fn load() -> io::Result<OwnedFd> {
    load_keeping(KEEP)
}

/// [`load`] with another keep time (at most ~2 s).
fn load_keeping(keep: Duration) -> io::Result<OwnedFd> {
    let map = ebpf::create_map(ebpf::BPF_MAP_TYPE_LRU_HASH, KEY_SIZE, VALUE_SIZE, FLOWS)?;
    let keep_ns = i32::try_from(keep.as_nanos()).expect("a keep time that fits an i32 of ns");
    ebpf::load_socket_filter(&program(map.as_fd().as_raw_fd(), keep_ns))
}

// TUNSETSTEERINGEBPF is _IOR('T', 224, int): it reads the program fd.
nix::ioctl_read!(tunsetsteeringebpf, b'T', 224, libc::c_int);

/// Makes the multi-queue TUN behind `tun` put each packet in the queue of
/// the CPU it is sent on, a flow's packets in one queue while it is active
/// (the program [`load`] makes). The device keeps the program; the
/// fd may close.
pub fn steer_tun_by_cpu(tun: BorrowedFd<'_>) -> io::Result<()> {
    let prog = load()?;
    let mut fd: libc::c_int = prog.as_raw_fd();
    // SAFETY: TUNSETSTEERINGEBPF reads one int from the pointer, which lives
    // for the call.
    unsafe { tunsetsteeringebpf(tun.as_raw_fd(), &mut fd) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::ebpf::test_run;
    use std::os::fd::BorrowedFd;

    /// An Ethernet frame around an IPv4 packet of `proto` from `src` to
    /// `dst` whose first four payload bytes are `ports`.
    fn frame(src: u8, dst: u8, proto: u8, ports: [u8; 4], frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&28u16.to_be_bytes());
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&[10, 0, 1, src]);
        ip[16..20].copy_from_slice(&[10, 0, 2, dst]);
        f[34..38].copy_from_slice(&ports);
        f
    }

    /// Runs `prog` on `frame` on CPU `cpu`.
    fn run_on(prog: BorrowedFd<'_>, cpu: usize, frame: &[u8]) -> u32 {
        let raw = prog.as_raw_fd();
        let frame = frame.to_vec();
        std::thread::spawn(move || {
            crate::datapath::steer::pin_current_thread(&[cpu]).unwrap();
            // SAFETY: the caller's fd outlives this joined thread.
            test_run(unsafe { BorrowedFd::borrow_raw(raw) }, &frame).unwrap()
        })
        .join()
        .unwrap()
    }

    /// Two CPUs to move between (the same one twice on a one-CPU machine,
    /// where every check below still holds).
    fn two_cpus() -> (usize, usize) {
        let cpus = crate::datapath::steer::allowed_cpus();
        (cpus[0], *cpus.last().unwrap())
    }

    #[test]
    fn jumps_land_on_their_labels() {
        let p = program(3, 1000);
        let exits = p.iter().filter(|i| i.code == 0x95).count();
        assert_eq!(exits, 3);
        for (at, i) in p.iter().enumerate() {
            if matches!(i.code, 0x15 | 0x55 | 0x25) {
                let to = at as isize + 1 + i.off as isize;
                assert!(to > at as isize && (to as usize) < p.len(), "jump at {at}");
            }
        }
    }

    /// Longer than a loaded test machine may stall between two runs, so
    /// "kept" never depends on timing; the shipped program keeps [`KEEP`].
    const TEST_KEEP: Duration = Duration::from_millis(500);

    #[test]
    fn the_shipped_program_loads() {
        load().expect("load the flow steering program");
    }

    #[test]
    fn an_active_flow_keeps_its_queue_when_its_sender_moves() {
        let prog = load_keeping(TEST_KEEP).expect("load the flow steering program");
        let prog = prog.as_fd();
        let (a, b) = two_cpus();
        let udp = frame(1, 2, 17, [0x30, 0x39, 0x00, 0x35], 0);
        assert_eq!(run_on(prog, a, &udp), a as u32, "a new flow: its CPU");
        assert_eq!(run_on(prog, b, &udp), a as u32, "the sender moved: kept");
        let other_ports = frame(1, 2, 17, [0x30, 0x3a, 0x00, 0x35], 0);
        assert_eq!(run_on(prog, b, &other_ports), b as u32, "another flow");
        let tcp = frame(1, 2, 6, [0x30, 0x39, 0x00, 0x35], 0);
        assert_eq!(run_on(prog, b, &tcp), b as u32, "TCP is another flow");
        assert_eq!(run_on(prog, a, &tcp), b as u32);
        std::thread::sleep(TEST_KEEP + Duration::from_millis(50));
        assert_eq!(
            run_on(prog, b, &udp),
            b as u32,
            "after a pause: its CPU again"
        );
        assert_eq!(run_on(prog, a, &udp), b as u32);
    }

    #[test]
    fn fragments_share_a_flow_and_what_is_not_ipv4_goes_by_cpu() {
        let prog = load_keeping(TEST_KEEP).unwrap();
        let prog = prog.as_fd();
        let (a, b) = two_cpus();
        // The first fragment (more fragments set) and a later one, whose
        // "ports" are payload: one flow.
        let first = frame(3, 4, 17, [1, 2, 3, 4], 0x2000);
        let later = frame(3, 4, 17, [9, 9, 9, 9], 0x0003);
        assert_eq!(run_on(prog, a, &first), a as u32);
        assert_eq!(run_on(prog, b, &later), a as u32);
        // ICMP: no ports, one flow per address pair.
        let icmp = frame(5, 6, 1, [8, 0, 0, 0], 0);
        assert_eq!(run_on(prog, b, &icmp), b as u32);
        assert_eq!(run_on(prog, a, &frame(5, 6, 1, [0, 0, 1, 1], 0)), b as u32);
        // IPv6 (version 6): never remembered.
        let mut v6 = vec![0u8; 14 + 40 + 8];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6[14] = 0x60;
        v6[18..20].copy_from_slice(&8u16.to_be_bytes());
        v6[20] = 17;
        assert_eq!(run_on(prog, a, &v6), a as u32);
        assert_eq!(run_on(prog, b, &v6), b as u32);
    }
}
