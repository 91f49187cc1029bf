//! Per-CPU queues: a packet is moved by the loop thread of the CPU it shows
//! up on, so a request and its answer cross no CPU (the kernel's own data
//! paths work that way: softirq processing stays on the CPU of the packet).
//!
//! With N queues, queue `q` serves the CPUs `c` with `c % N == q`:
//! - the TUN device is multi-queue; its steering program (eBPF, see
//!   [`flow_steer`](crate::datapath::flow_steer)) puts a packet a pod sends on CPU `c`
//!   into queue `c % N`, unless the packet's flow is active in another
//!   queue (then it follows the flow, so a sender that moves between CPUs
//!   is not reordered);
//! - the N UDP sockets form one `SO_REUSEPORT` group whose classic BPF
//!   program (load the CPU, modulo N) hands a datagram received on CPU `c`
//!   to socket `c % N`;
//! - loop thread `q` owns TUN queue `q` and socket `q` and is pinned to the
//!   CPUs of queue `q`, so the kernel wakes it where the packet is.
//!
//! The queue index of a TUN fd and of a socket in its group is the order in
//! which they were attached or bound; fds are handed to the next image in
//! that order, so the indices survive a hot upgrade.
//!
//! Where the kernel will not load the eBPF program (no CAP_BPF), the TUN
//! picks queues by flow (an answer goes to the queue that wrote the
//! request); every queue is still read, only CPU locality is lost.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sched::CpuSet;
use nix::unistd::Pid;

/// `--queues auto` at most: each queue costs a thread and ~2 MiB of buffers.
pub const MAX_AUTO_QUEUES: usize = 8;
/// `--queues N` at most.
pub const MAX_QUEUES: usize = 64;

/// `--queues`: a number, or one per CPU the process may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queues {
    Auto,
    Count(usize),
}

impl std::fmt::Display for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queues::Auto => f.write_str("auto"),
            Queues::Count(n) => write!(f, "{n}"),
        }
    }
}

/// Parses `--queues`: `auto` or 1..=64.
pub fn parse(s: &str) -> Result<Queues, String> {
    if s == "auto" {
        return Ok(Queues::Auto);
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_QUEUES).contains(&n) => Ok(Queues::Count(n)),
        _ => Err(format!(
            "{s:?} is not a queue count: auto (one per CPU, at most {MAX_AUTO_QUEUES}) or 1 to {MAX_QUEUES}"
        )),
    }
}

impl Queues {
    /// How many queues for a process allowed on `cpus` CPUs.
    pub fn count(self, cpus: usize) -> usize {
        match self {
            Queues::Auto => cpus.clamp(1, MAX_AUTO_QUEUES),
            Queues::Count(n) => n,
        }
    }
}

/// The CPUs of queue `q` of `n`: those of `allowed` whose number is `q`
/// modulo `n`; all of `allowed` if none is (the queue then has no home,
/// which costs locality, never packets).
pub fn queue_cpus(allowed: &[usize], n: usize, q: usize) -> Vec<usize> {
    let home: Vec<usize> = allowed.iter().copied().filter(|c| c % n == q).collect();
    if home.is_empty() {
        allowed.to_vec()
    } else {
        home
    }
}

/// For each of `n` queues, the CPUs its thread is pinned to: none (runs
/// anywhere) when there is one queue.
pub fn pinning(n: usize) -> Vec<Vec<usize>> {
    if n <= 1 {
        return vec![Vec::new(); n];
    }
    let allowed = allowed_cpus();
    (0..n).map(|q| queue_cpus(&allowed, n, q)).collect()
}

/// The CPUs this process may run on (its affinity mask).
pub fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|c| set.is_set(*c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Pins the calling thread to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    let mut set = CpuSet::new();
    for c in cpus {
        set.set(*c).map_err(io::Error::from)?;
    }
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set).map_err(io::Error::from)
}

/// The reuseport program: `A = cpu; A %= n; return A`.
fn reuseport_program(n: u32) -> [libc::sock_filter; 3] {
    const SKF_AD_CPU: u32 = 36;
    let ld_cpu = (libc::SKF_AD_OFF as u32).wrapping_add(SKF_AD_CPU);
    [
        libc::sock_filter {
            code: 0x20, // BPF_LD | BPF_W | BPF_ABS
            jt: 0,
            jf: 0,
            k: ld_cpu,
        },
        libc::sock_filter {
            code: 0x94, // BPF_ALU | BPF_MOD | BPF_K
            jt: 0,
            jf: 0,
            k: n,
        },
        libc::sock_filter {
            code: 0x16, // BPF_RET | BPF_A
            jt: 0,
            jf: 0,
            k: 0,
        },
    ]
}

/// Makes the `SO_REUSEPORT` group of `socket` (of `n` sockets) hand each
/// datagram to the socket of the CPU it is received on.
pub fn steer_group_by_cpu(socket: BorrowedFd<'_>, n: usize) -> io::Result<()> {
    let mut prog = reuseport_program(n.max(1) as u32);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: fprog and the program it points to live for the call.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_queue_counts() {
        assert_eq!(parse("auto"), Ok(Queues::Auto));
        assert_eq!(parse("1"), Ok(Queues::Count(1)));
        assert_eq!(parse("64"), Ok(Queues::Count(64)));
        for bad in ["0", "65", "-1", "two", ""] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("auto (one per CPU"), "{bad}: {e}");
        }
        assert_eq!(Queues::Auto.to_string(), "auto");
        assert_eq!(Queues::Count(3).to_string(), "3");
    }

    #[test]
    fn auto_is_one_per_cpu_up_to_the_cap() {
        assert_eq!(Queues::Auto.count(2), 2);
        assert_eq!(Queues::Auto.count(0), 1);
        assert_eq!(Queues::Auto.count(96), MAX_AUTO_QUEUES);
        assert_eq!(Queues::Count(3).count(96), 3);
    }

    #[test]
    fn every_cpu_has_exactly_one_queue() {
        let allowed: Vec<usize> = (0..12).collect();
        for n in 1..=12 {
            let mut seen = vec![0; 12];
            for q in 0..n {
                for c in queue_cpus(&allowed, n, q) {
                    assert_eq!(c % n, q, "the steering programs send CPU {c} to queue {q}");
                    seen[c] += 1;
                }
            }
            assert!(seen.iter().all(|s| *s == 1), "n={n}: {seen:?}");
        }
    }

    #[test]
    fn a_queue_without_home_cpus_runs_anywhere_allowed() {
        // Allowed on the even CPUs only: queue 1 of 2 has none of its own.
        assert_eq!(queue_cpus(&[0, 2, 4], 2, 0), vec![0, 2, 4]);
        assert_eq!(queue_cpus(&[0, 2, 4], 2, 1), vec![0, 2, 4]);
        assert_eq!(queue_cpus(&[1, 2], 2, 1), vec![1]);
        // One queue: its thread is not pinned.
        assert_eq!(pinning(1), vec![Vec::<usize>::new()]);
    }

    #[test]
    fn reuseport_program_reads_the_cpu_modulo_n() {
        let p = reuseport_program(4);
        assert_eq!(p[0].k, 0xffff_f000 + 36);
        assert_eq!((p[1].code, p[1].k), (0x94, 4));
        assert_eq!(p[2].code, 0x16);
    }

    #[test]
    fn the_affinity_mask_is_read() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        std::thread::spawn(move || {
            pin_current_thread(&cpus[..1]).unwrap();
            assert_eq!(allowed_cpus(), cpus[..1]);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_reuseport_group_takes_the_program() {
        let s = crate::datapath::socket::bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        steer_group_by_cpu(std::os::fd::AsFd::as_fd(&s), 2).unwrap();
    }
}
