//! The udp backend's packet loop: two OS threads, TUN → UDP ([`Tx`]) and
//! UDP → TUN ([`Rx`]).
//!
//! Each thread owns preallocated buffers, blocks in poll() on its fd plus a
//! stop eventfd, and drains a bounded batch per wakeup. What a TUN write
//! makes the kernel answer at once (a pod's TCP ACK, an echo reply) is
//! already queued in the TUN when the write returns: the UDP → TUN thread
//! sends it itself rather than waking the other thread, which saves a
//! thread wakeup per round trip. [`Tx`] sits behind a mutex for that (taken
//! once per batch, never contended for long), which also keeps each flow's
//! packets in order. The decisions come from
//! `forward.rs`; `tx.rs` and `rx.rs` move the bytes. The route table is read
//! through an `ArcSwap`, so applying a snapshot never waits for the loop.

use std::fs::File;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

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
}

/// The running threads; stopping joins them. Dropping stops too.
pub struct Loops {
    stop: Arc<EventFd>,
    threads: Vec<JoinHandle<()>>,
}

impl Loops {
    pub fn start(io: LoopIo) -> io::Result<Loops> {
        let stop = Arc::new(
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(io::Error::from)?,
        );
        let mut loops = Loops {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        let tx = Arc::new(Mutex::new(Tx::new(io.framing, io.gso)));
        let (io1, stop1, tx1) = (io.clone(), stop.clone(), tx.clone());
        loops.threads.push(
            std::thread::Builder::new()
                .name("kolach-tun-to-udp".into())
                .spawn(move || tun_to_udp(&io1, &tx1, &stop1))?,
        );
        loops.threads.push(
            std::thread::Builder::new()
                .name("kolach-udp-to-tun".into())
                .spawn(move || udp_to_tun(&io, &tx, &stop))?,
        );
        Ok(loops)
    }

    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        if let Err(e) = self.stop.write(1) {
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
fn wait_readable(fd: BorrowedFd<'_>, stop: &EventFd) -> bool {
    loop {
        let mut fds = [
            PollFd::new(fd, PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                if fds[1].any().unwrap_or(false) {
                    return false;
                }
                if fds[0].any().unwrap_or(false) {
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

fn tun_to_udp(io: &LoopIo, tx: &Mutex<Tx>, stop: &EventFd) {
    while wait_readable(io.tun.as_fd(), stop) {
        lock(tx).run_batch(io, BATCH);
    }
}

fn udp_to_tun(io: &LoopIo, tx: &Mutex<Tx>, stop: &EventFd) {
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

/// The lock, also after a panic elsewhere (the state is only buffers).
fn lock(tx: &Mutex<Tx>) -> std::sync::MutexGuard<'_, Tx> {
    tx.lock().unwrap_or_else(|p| p.into_inner())
}
