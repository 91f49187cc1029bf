//! The udp backend's packet loop: TUN → UDP ([`Tx`]) and UDP → TUN ([`Rx`]).
//!
//! One OS thread per queue (see [`steer`](crate::datapath::steer)) moves both
//! directions of its TUN queue and socket: it blocks in poll() on the two
//! and a stop eventfd, and drains a bounded batch of each per wakeup. What a
//! TUN write makes the kernel answer at once (a pod's TCP ACK, an echo
//! reply) is already queued in the same TUN queue when the write returns
//! (the answer is sent on the same CPU), and is sent in the same round. A
//! thread per queue, pinned to that queue's CPUs, means a packet is moved
//! on the CPU it arrived on: no handoff between threads and no cross-CPU
//! wakeup, which on a virtual machine costs tens of microseconds each.
//!
//! With `--busy-poll` (see [`busy_poll`](crate::datapath::busy_poll)) each thread
//! keeps polling until the window passed without a packet before it sleeps.
//!
//! The decisions come from kolach-packet's `forward`; `tx.rs` and `rx/`
//! move the bytes.
//! The route table is read through an `ArcSwap`, so applying a snapshot never
//! waits for the loop.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::datapath::busy_poll::IdleClock;
use crate::datapath::rx::Rx;
use crate::datapath::tx::Tx;
use crate::datapath::LoopIo;

/// TUN reads per wakeup before checking the stop signal again.
const BATCH: usize = 64;
/// recvmmsg calls per wakeup before checking the stop signal again.
const ROUNDS: usize = 8;
/// TUN reads after a round's writes, for what they were answered with.
const ANSWER_READS: usize = 16;

/// The running threads; stopping joins them. Dropping stops too.
pub struct Loops {
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<()>>,
}

/// How the threads are told to end: a flag a polling thread checks every
/// round, and an eventfd that wakes a sleeping one.
struct Stop {
    flag: AtomicBool,
    fd: EventFd,
}

impl Stop {
    fn requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

impl Loops {
    /// Starts a thread per queue (`kolach-udp-q0`, ...).
    pub fn start(queues: Vec<LoopIo>) -> io::Result<Loops> {
        let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(io::Error::from)?;
        let stop = Arc::new(Stop {
            flag: AtomicBool::new(false),
            fd,
        });
        let mut loops = Loops {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for (q, io) in queues.into_iter().enumerate() {
            let stop = stop.clone();
            loops.spawn(&format!("kolach-udp-q{q}"), move || {
                run_queue(q, &io, &stop)
            })?;
        }
        Ok(loops)
    }

    /// Starts a thread; if that fails, dropping `self` stops the others.
    fn spawn(&mut self, name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let t = std::thread::Builder::new().name(name.into()).spawn(f)?;
        self.threads.push(t);
        Ok(())
    }

    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.stop.flag.store(true, Ordering::Relaxed);
        if let Err(e) = self.stop.fd.write(1) {
            tracing::error!(error = %e, "cannot signal the packet loop to stop");
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Waits until one of `fds` is readable (true) or stop is signalled (false).
fn wait_any(fds: &[BorrowedFd<'_>], stop: &Stop) -> bool {
    loop {
        // The stop fd first, then `fds` (one or two): no allocation.
        debug_assert!((1..=2).contains(&fds.len()));
        let on_stop = || PollFd::new(stop.fd.as_fd(), PollFlags::POLLIN);
        let mut polled = [on_stop(), on_stop(), on_stop()];
        for (p, fd) in polled[1..].iter_mut().zip(fds) {
            *p = PollFd::new(*fd, PollFlags::POLLIN);
        }
        let polled = &mut polled[..=fds.len()];
        match poll(polled, PollTimeout::NONE) {
            Ok(_) => {
                if polled[0].any().unwrap_or(false) {
                    return false;
                }
                if polled[1..].iter().any(|p| p.any().unwrap_or(false)) {
                    return true;
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::error!(error = %e, "poll failed in the packet loop");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// One queue's thread: pinned to its CPUs, then [`both_ways`].
fn run_queue(q: usize, io: &LoopIo, stop: &Stop) {
    if !io.cpus.is_empty() {
        match crate::datapath::steer::pin_current_thread(&io.cpus) {
            Ok(()) => tracing::debug!(queue = q, cpus = ?io.cpus, "packet loop thread pinned"),
            Err(e) => {
                tracing::warn!(queue = q, cpus = ?io.cpus, error = %e, "cannot pin the packet loop thread; it runs on any CPU")
            }
        }
    }
    both_ways(io, stop);
}

/// Both directions of one queue. It sleeps in poll() on both fds when a
/// round moved nothing, or, with `io.busy_poll`, once that long passed
/// without a packet (an empty round meanwhile yields the CPU to anything
/// else that wants to run).
fn both_ways(io: &LoopIo, stop: &Stop) {
    let mut rx = Rx::new(io.framing, io.gro, io.uso);
    let mut tx = Tx::new(io.framing, io.gso);
    let mut clock = IdleClock::new(io.busy_poll, Instant::now());
    while !stop.requested() {
        let mut moved = tx.run_batch(io, BATCH);
        let got = rx.run_batch(io, ROUNDS);
        if got > 0 {
            // Answers to what was just written.
            moved += got + tx.run_batch(io, ANSWER_READS);
        }
        let now = Instant::now();
        if moved > 0 {
            clock.busy(now);
        }
        if clock.may_sleep(now) {
            // poll() returns at once if either fd has more.
            if !wait_any(&[io.tun.as_fd(), io.socket.as_fd()], stop) {
                return;
            }
            clock.busy(Instant::now());
        } else if moved == 0 {
            std::thread::yield_now();
        }
    }
}
