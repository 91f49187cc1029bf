//! The udp backend's packet loop: two OS threads, TUN → UDP and UDP → TUN.
//!
//! Each thread owns preallocated buffers, blocks in poll() on its fd plus a
//! stop eventfd, and drains a bounded batch per wakeup. The decisions come from
//! `forward.rs`; this file only moves bytes and counts. The route table is read
//! through an `ArcSwap`, so applying a snapshot never waits for the loop.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{recvmsg, MsgFlags, SockaddrIn};

use crate::counters::{Counters, DropReason};
use crate::forward::{self, ForwardTable, TunVerdict};
use crate::icmp;

/// Packets handled per wakeup before checking the stop signal again.
const BATCH: usize = 64;
/// Large enough for any IPv4 packet, so nothing is ever truncated.
const BUF_LEN: usize = 65536;

/// What both threads share.
#[derive(Clone)]
pub struct LoopIo {
    pub tun: Arc<File>,
    pub socket: Arc<UdpSocket>,
    pub table: Arc<ArcSwap<ForwardTable>>,
    pub counters: Arc<Counters>,
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
struct ErrorLog {
    what: &'static str,
    seen: u64,
}

impl ErrorLog {
    fn new(what: &'static str) -> Self {
        ErrorLog { what, seen: 0 }
    }

    fn note(&mut self, e: &dyn std::fmt::Display) {
        if self.seen % 10_000 == 0 {
            tracing::warn!(error = %e, count = self.seen + 1, "packet loop: {}", self.what);
        }
        self.seen += 1;
    }
}

fn tun_to_udp(io: &LoopIo, stop: &EventFd) {
    let mut buf = vec![0u8; BUF_LEN];
    let mut answer = [0u8; icmp::MAX_ANSWER_LEN];
    let mut read_err = ErrorLog::new("TUN read failed");
    let mut send_err = ErrorLog::new("UDP send failed");
    let mut write_err = ErrorLog::new("TUN write of an ICMP error failed");
    while wait_readable(io.tun.as_fd(), stop) {
        for _ in 0..BATCH {
            let n = match nix::unistd::read(&*io.tun, &mut buf) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    // A deleted device keeps poll() readable: do not spin.
                    read_err.note(&e);
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
            };
            io.counters.tun_rx(n);
            let table = io.table.load();
            let pkt = &mut buf[..n];
            match forward::from_tun(&table, pkt, &mut answer) {
                TunVerdict::Send(to) => match io.socket.send_to(pkt, SocketAddr::V4(to)) {
                    Ok(_) => io.counters.udp_tx(n),
                    Err(e) => {
                        send_err.note(&e);
                        io.counters.count_drop(DropReason::IoError);
                    }
                },
                TunVerdict::Drop { reason, answer: a } => {
                    io.counters.count_drop(reason);
                    if let Some(len) = a {
                        match nix::unistd::write(&*io.tun, &answer[..len]) {
                            Ok(_) => {
                                io.counters.tun_tx(len);
                                if reason == DropReason::Unleased {
                                    io.counters.icmp_unreachable();
                                }
                            }
                            Err(e) => write_err.note(&e),
                        }
                    }
                }
            }
        }
    }
}

fn udp_to_tun(io: &LoopIo, stop: &EventFd) {
    let mut buf = vec![0u8; BUF_LEN];
    let mut recv_err = ErrorLog::new("UDP receive failed");
    let mut write_err = ErrorLog::new("TUN write failed");
    let fd = io.socket.as_raw_fd();
    while wait_readable(io.socket.as_fd(), stop) {
        for _ in 0..BATCH {
            let (n, sender) = {
                let mut iov = [IoSliceMut::new(&mut buf)];
                match recvmsg::<SockaddrIn>(fd, &mut iov, None, MsgFlags::MSG_DONTWAIT) {
                    Ok(m) => (m.bytes, m.address.map(|a| a.ip())),
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        recv_err.note(&e);
                        break;
                    }
                }
            };
            io.counters.udp_rx(n);
            let Some(sender) = sender else {
                io.counters.count_drop(DropReason::UnknownSender);
                continue;
            };
            let table = io.table.load();
            let pkt = &buf[..n];
            match forward::from_udp(&table, sender, pkt) {
                Ok(()) => match nix::unistd::write(&*io.tun, pkt) {
                    Ok(_) => io.counters.tun_tx(n),
                    Err(e) => {
                        write_err.note(&e);
                        io.counters.count_drop(DropReason::IoError);
                    }
                },
                Err(reason) => io.counters.count_drop(reason),
            }
        }
    }
}
