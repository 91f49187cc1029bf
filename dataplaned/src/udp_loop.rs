//! The udp backend's packet loop: TUN → UDP ([`Tx`]) and UDP → TUN ([`Rx`]).
//!
//! By default one OS thread moves both directions: it blocks in poll() on
//! the TUN, the socket and a stop eventfd, and drains a bounded batch of
//! each per wakeup. What a TUN write makes the kernel answer at once (a
//! pod's TCP ACK, an echo reply) is already queued in the TUN when the write
//! returns, and is sent in the same round. One thread costs the least CPU
//! per byte: no handoff between threads, no cross-CPU wakeups (`make bench`
//! on 2 cores: a fifth less CPU per GB, a sixth more TCP and a quarter more
//! small-packet throughput than one thread per direction).
//!
//! With `--busy-poll` (see [`busy_poll`](crate::busy_poll)) that thread keeps
//! polling until the window passed without a packet before it sleeps.
//!
//! With `--loop-threads 2`, one thread per direction, for hosts with cores to
//! spare whose pods send and receive heavily at once. The UDP → TUN thread
//! then sends the answers its writes produced itself rather than waking the
//! other thread; [`Tx`] sits behind a mutex for that (taken once per batch,
//! never contended for long), which also keeps each flow's packets in order.
//!
//! The decisions come from `forward.rs`; `tx.rs` and `rx.rs` move the bytes.
//! The route table is read through an `ArcSwap`, so applying a snapshot never
//! waits for the loop.

use std::fs::File;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::busy_poll::IdleClock;
use crate::counters::Counters;
use crate::forward::ForwardTable;
use crate::rx::Rx;
use crate::tun::Framing;
use crate::tx::Tx;

/// TUN reads per wakeup before checking the stop signal again.
const BATCH: usize = 64;
/// recvmmsg calls per wakeup before checking the stop signal again.
const ROUNDS: usize = 8;
/// TUN reads the UDP → TUN thread does after its writes.
const ANSWER_READS: usize = 16;

/// What both threads share.
#[derive(Clone)]
pub struct LoopIo {
    pub tun: Arc<File>,
    pub socket: Arc<UdpSocket>,
    pub table: Arc<ArcSwap<ForwardTable>>,
    pub counters: Arc<Counters>,
    /// How the TUN fd frames packets (offloads or plain).
    pub framing: Framing,
    /// Whether the TUN takes coalesced UDP writes.
    pub uso: bool,
    /// Whether to send with `UDP_SEGMENT` / the socket has `UDP_GRO` on.
    pub gso: bool,
    pub gro: bool,
    /// `--busy-poll`: zero sleeps whenever both fds are empty.
    pub busy_poll: Duration,
    /// `--loop-threads`: 2 runs one thread per direction (busy-poll aside).
    pub threads: u8,
}

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
    pub fn start(io: LoopIo) -> io::Result<Loops> {
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
        let tx = Arc::new(Mutex::new(Tx::new(io.framing, io.gso)));
        if io.threads < 2 || !io.busy_poll.is_zero() {
            loops.spawn("kolach-udp-loop", move || both_ways(&io, &tx, &stop))?;
            return Ok(loops);
        }
        let (io1, stop1, tx1) = (io.clone(), stop.clone(), tx.clone());
        loops.spawn("kolach-tun-to-udp", move || tun_to_udp(&io1, &tx1, &stop1))?;
        loops.spawn("kolach-udp-to-tun", move || udp_to_tun(&io, &tx, &stop))?;
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

/// Waits until `fd` is readable (true) or stop is signalled (false).
fn wait_readable(fd: BorrowedFd<'_>, stop: &Stop) -> bool {
    wait_any(&[fd], stop)
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

/// Logs I/O errors without flooding: the first, then every 10000th.
pub(crate) struct ErrorLog {
    what: &'static str,
    seen: u64,
}

impl ErrorLog {
    pub(crate) fn new(what: &'static str) -> Self {
        ErrorLog { what, seen: 0 }
    }

    pub(crate) fn note(&mut self, e: &dyn std::fmt::Display) {
        if self.seen % 10_000 == 0 {
            tracing::warn!(error = %e, count = self.seen + 1, "packet loop: {}", self.what);
        }
        self.seen += 1;
    }
}

fn tun_to_udp(io: &LoopIo, tx: &Mutex<Tx>, stop: &Stop) {
    while wait_readable(io.tun.as_fd(), stop) {
        lock(tx).run_batch(io, BATCH);
    }
}

fn udp_to_tun(io: &LoopIo, tx: &Mutex<Tx>, stop: &Stop) {
    let mut rx = Rx::new(io.framing, io.gro, io.uso);
    while wait_readable(io.socket.as_fd(), stop) {
        if rx.run_batch(io, ROUNDS) > 0 {
            // Answers to what was just written; if the other thread is
            // sending, it will find them itself.
            if let Ok(mut tx) = tx.try_lock() {
                tx.run_batch(io, ANSWER_READS);
            }
        }
    }
}

/// Both directions in one thread. It sleeps in poll() on both fds when a
/// round moved nothing, or, with `io.busy_poll`, once that long passed
/// without a packet (an empty round meanwhile yields the CPU to anything
/// else that wants to run).
fn both_ways(io: &LoopIo, tx: &Mutex<Tx>, stop: &Stop) {
    let mut rx = Rx::new(io.framing, io.gro, io.uso);
    let mut tx = lock(tx);
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

/// The lock, also after a panic elsewhere (the state is only buffers).
fn lock(tx: &Mutex<Tx>) -> std::sync::MutexGuard<'_, Tx> {
    tx.lock().unwrap_or_else(|p| p.into_inner())
}
