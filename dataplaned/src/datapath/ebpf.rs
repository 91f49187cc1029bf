//! Just enough eBPF to load the TUN steering program without a toolchain:
//! instruction encoders (pure), and the `bpf()` calls that create a map,
//! load a socket-filter program (with the verifier's log on refusal) and run
//! a program once on a packet (`BPF_PROG_TEST_RUN`, for the tests).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// `struct bpf_insn`: opcode, dst (low nibble) and src (high nibble)
/// registers, offset, immediate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// Registers: r0 return value, r1-r5 helper arguments (clobbered by calls
/// and by packet loads), r6-r9 kept across calls, r10 the frame pointer.
pub type Reg = u8;
pub const R0: Reg = 0;
pub const R1: Reg = 1;
pub const R2: Reg = 2;
pub const R3: Reg = 3;
pub const R4: Reg = 4;
pub const R6: Reg = 6;
pub const R7: Reg = 7;
pub const R8: Reg = 8;
pub const R9: Reg = 9;
pub const FP: Reg = 10;

/// Helper function ids (`enum bpf_func_id`).
pub const MAP_LOOKUP_ELEM: i32 = 1;
pub const MAP_UPDATE_ELEM: i32 = 2;
pub const KTIME_GET_NS: i32 = 5;
pub const GET_SMP_PROCESSOR_ID: i32 = 8;

/// Access sizes of loads and stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }
}

/// Conditional jumps against an immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Eq,
    Ne,
    /// Unsigned greater than.
    Gt,
}

fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// `dst = src` (64 bit).
pub fn mov(dst: Reg, src: Reg) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
/// `dst = imm` (64 bit, sign-extended).
pub fn mov_imm(dst: Reg, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
/// `dst += imm`.
pub fn add_imm(dst: Reg, imm: i32) -> Insn {
    insn(0x07, dst, 0, 0, imm)
}
/// `dst -= src`.
pub fn sub(dst: Reg, src: Reg) -> Insn {
    insn(0x1f, dst, src, 0, 0)
}
/// `dst &= imm`.
pub fn and_imm(dst: Reg, imm: i32) -> Insn {
    insn(0x57, dst, 0, 0, imm)
}
/// `dst <<= imm`.
pub fn lsh_imm(dst: Reg, imm: i32) -> Insn {
    insn(0x67, dst, 0, 0, imm)
}
/// `dst >>= imm` (logical).
pub fn rsh_imm(dst: Reg, imm: i32) -> Insn {
    insn(0x77, dst, 0, 0, imm)
}
/// `r0 = packet[off]` in host byte order (legacy packet access: needs the
/// context in r6, clobbers r1-r5, ends the program with 0 past the end).
pub fn ld_abs(size: Size, off: i32) -> Insn {
    insn(0x20 | size.bits(), 0, 0, 0, off)
}
/// `r0 = packet[src + off]`, as [`ld_abs`].
pub fn ld_ind(size: Size, src: Reg, off: i32) -> Insn {
    insn(0x40 | size.bits(), 0, src, 0, off)
}
/// `dst = *(size *)(src + off)`.
pub fn ldx(size: Size, dst: Reg, src: Reg, off: i16) -> Insn {
    insn(0x61 | size.bits(), dst, src, off, 0)
}
/// `*(size *)(dst + off) = src`.
pub fn stx(size: Size, dst: Reg, off: i16, src: Reg) -> Insn {
    insn(0x63 | size.bits(), dst, src, off, 0)
}
/// `*(size *)(dst + off) = imm`.
pub fn st_imm(size: Size, dst: Reg, off: i16, imm: i32) -> Insn {
    insn(0x62 | size.bits(), dst, 0, off, imm)
}
/// `if dst <cond> imm goto +off`.
pub fn jmp_imm(cond: Cond, dst: Reg, imm: i32, off: i16) -> Insn {
    let op = match cond {
        Cond::Eq => 0x15,
        Cond::Ne => 0x55,
        Cond::Gt => 0x25,
    };
    insn(op, dst, 0, off, imm)
}
/// `r0 = helper(r1, ..., r5)`.
pub fn call(helper: i32) -> Insn {
    insn(0x85, 0, 0, 0, helper)
}
/// `return r0`.
pub fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}
/// `dst = map` (two instructions: a 64-bit immediate naming the map's fd).
pub fn ld_map_fd(dst: Reg, map: RawFd) -> [Insn; 2] {
    const BPF_PSEUDO_MAP_FD: Reg = 1;
    [
        insn(0x18, dst, BPF_PSEUDO_MAP_FD, 0, map),
        insn(0, 0, 0, 0, 0),
    ]
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
#[cfg(test)]
const BPF_PROG_TEST_RUN: libc::c_long = 10;
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// `bpf(cmd, attr, sizeof attr)`: the new fd, or the error.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a #[repr(C)] prefix of `union bpf_attr` for cmd, and
    // it (with what it points to) lives for the call; the size is attr's.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the bpf() call returned a new fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// A new map of `map_type` (e.g. [`BPF_MAP_TYPE_LRU_HASH`]).
pub fn create_map(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    let attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags: 0,
    };
    bpf(BPF_MAP_CREATE, &attr).map(owned)
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// Loads `prog` as a socket filter (the type TUNSETSTEERINGEBPF takes).
/// When the verifier refuses it, the error carries the verifier's last
/// words, which name the offending instruction.
pub fn load_socket_filter(prog: &[Insn]) -> io::Result<OwnedFd> {
    let license = c"Dual MIT/GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
    };
    match bpf(BPF_PROG_LOAD, &attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            // Load again with the log on, only to say why.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &attr);
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim_end();
            let last: Vec<&str> = text
                .lines()
                .rev()
                .filter(|l| !l.starts_with("processed ") && !l.starts_with("verification time"))
                .take(2)
                .collect();
            let last: Vec<&str> = last.into_iter().rev().collect();
            Err(io::Error::new(
                e.kind(),
                format!("{e}; verifier: {}", last.join(" | ")),
            ))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[repr(C)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

/// Runs `prog` once on `frame` (an Ethernet frame: a socket filter then
/// sees the packet from the network header) on the calling CPU; its return
/// value. For the tests: the daemon never runs a program itself.
#[cfg(test)]
pub fn test_run(prog: std::os::fd::BorrowedFd<'_>, frame: &[u8]) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        retval: 0,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        duration: 0,
    };
    // SAFETY: as in bpf(); the kernel writes retval and the output buffer,
    // both of which live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr.retval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_kernels() {
        // Values as the kernel's BPF_* macros build them.
        assert_eq!(
            mov(R6, R1),
            Insn {
                code: 0xbf,
                regs: 0x16,
                off: 0,
                imm: 0
            }
        );
        assert_eq!(ld_abs(Size::B, 9).code, 0x30);
        assert_eq!(ld_abs(Size::H, 6).code, 0x28);
        assert_eq!(ld_abs(Size::W, 12).code, 0x20);
        assert_eq!(
            ld_ind(Size::W, R7, 0),
            Insn {
                code: 0x40,
                regs: 0x70,
                off: 0,
                imm: 0
            }
        );
        assert_eq!(
            ldx(Size::DW, R1, R9, 8),
            Insn {
                code: 0x79,
                regs: 0x91,
                off: 8,
                imm: 0
            }
        );
        assert_eq!(ldx(Size::W, R0, R9, 0).code, 0x61);
        assert_eq!(
            stx(Size::W, FP, -16, R0),
            Insn {
                code: 0x63,
                regs: 0x0a,
                off: -16,
                imm: 0
            }
        );
        assert_eq!(stx(Size::DW, R9, 8, R7).code, 0x7b);
        assert_eq!(st_imm(Size::W, FP, -8, 0).code, 0x62);
        assert_eq!(
            jmp_imm(Cond::Gt, R2, 7, 3),
            Insn {
                code: 0x25,
                regs: 0x02,
                off: 3,
                imm: 7
            }
        );
        assert_eq!(jmp_imm(Cond::Ne, R0, 4, 1).code, 0x55);
        assert_eq!(jmp_imm(Cond::Eq, R9, 0, 1).code, 0x15);
        assert_eq!(
            call(GET_SMP_PROCESSOR_ID),
            Insn {
                code: 0x85,
                regs: 0,
                off: 0,
                imm: 8
            }
        );
        assert_eq!(exit().code, 0x95);
        let [lo, hi] = ld_map_fd(R1, 7);
        assert_eq!((lo.code, lo.regs, lo.imm), (0x18, 0x11, 7));
        assert_eq!(
            hi,
            Insn {
                code: 0,
                regs: 0,
                off: 0,
                imm: 0
            }
        );
    }

    #[test]
    fn a_refused_program_says_why() {
        // Reads r2 before anything wrote it.
        let e = load_socket_filter(&[mov(R0, R2), exit()]).unwrap_err();
        assert!(e.to_string().contains("verifier:"), "{e}");
        assert!(e.to_string().contains("R2"), "{e}");
    }

    #[test]
    fn a_program_runs_on_a_packet() {
        let prog = load_socket_filter(&[mov_imm(R0, 42), exit()]).unwrap();
        let mut frame = [0u8; 64];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(
            test_run(std::os::fd::AsFd::as_fd(&prog), &frame).unwrap(),
            42
        );
    }
}
