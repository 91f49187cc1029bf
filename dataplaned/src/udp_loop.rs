//! The udp backend's packet loop: two OS threads, TUN → UDP ([`Tx`]) and
//! UDP → TUN ([`Rx`]).
//!
//! Each thread owns preallocated buffers, blocks in poll() on its fd plus a
//! stop eventfd, and drains a bounded batch per wakeup. The decisions come from
//! `forward.rs`; `tx.rs` and `rx.rs` move the bytes. The route table is read
//! through an `ArcSwap`, so applying a snapshot never waits for the loop.

use std::fs::File;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
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

/// What both threads share.
#[derive(Clone)]
pub struct LoopIo {
    pub tun: Arc<File>,
    pub socket: Arc<UdpSocket>,
    pub table: Arc<ArcSwap<ForwardTable>>,
    pub counters: Arc<Counters>,
    /// How the TUN fd frames packets (offloads or plain).
    pub framing: Framing,
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
        let (io1, stop1) = (io.clone(), stop.clone());
        loops.threads.push(
            std::thread::Builder::new()
                .name("kolach-tun-to-udp".into())
                .spawn(move || tun_to_udp(&io1, &stop1))?,
        );
        loops.threads.push(
            std::thread::Builder::new()
                .name("kolach-udp-to-tun".into())
                .spawn(move || udp_to_tun(&io, &stop))?,
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

fn tun_to_udp(io: &LoopIo, stop: &EventFd) {
    let mut tx = Tx::new(io.framing, io.gso);
    while wait_readable(io.tun.as_fd(), stop) {
        tx.run_batch(io, BATCH);
    }
}

fn udp_to_tun(io: &LoopIo, stop: &EventFd) {
    let mut rx = Rx::new(io.framing, io.gro);
    while wait_readable(io.socket.as_fd(), stop) {
        rx.run_batch(io, ROUNDS);
    }
}
