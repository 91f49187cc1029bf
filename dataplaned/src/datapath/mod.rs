//! The udp backend's data path: the packet loop between the TUN device and
//! the UDP sockets, and the devices and kernel features it runs over.
//!
//! - [`udp_loop`]: a thread per queue moving both directions,
//!   [`tx`] (TUN → UDP: segmentation, GSO sends planned by kolach-packet's
//!   `gso_plan`) and [`rx`] (UDP → TUN: GRO receives, coalescing).
//! - [`mmsg`]: the batch syscalls; [`socket`]: the UDP sockets of one
//!   `SO_REUSEPORT` group; [`tun`]: creating/attaching the persistent TUN
//!   device (own ioctls).
//! - [`offload`]: which kernel offloads run; [`busy_poll`]: `--busy-poll`,
//!   polling instead of sleeping while traffic flows.
//! - [`steer`]: a TUN queue, socket and thread per CPU; [`flow_steer`]: the
//!   TUN's steering program (built with [`ebpf`]).
//! - [`counters`]: packet and drop counters shared by the loop and Status.
//!
//! What to do with each packet is decided by kolach-packet (plain functions
//! over bytes); the files here do the syscalls. Here: what the loop's
//! threads and both directions share ([`LoopIo`], `ErrorLog`), so `tx.rs`
//! and `rx/` need not import `udp_loop.rs`, which drives them.

use std::fs::File;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use kolach_packet::forward::ForwardTable;
use kolach_packet::ratelimit::TokenBucket;

use counters::Counters;
use tun::Framing;

pub mod busy_poll;
pub mod counters;
pub mod ebpf;
pub mod flow_steer;
pub mod mmsg;
pub mod offload;
pub mod rx;
pub mod socket;
pub mod steer;
pub mod tun;
pub mod tx;
pub mod udp_loop;

/// What one queue's thread works with.
#[derive(Clone)]
pub struct LoopIo {
    /// This queue's TUN fd and UDP socket.
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
    /// The CPUs the thread runs on; empty: wherever the kernel puts it.
    pub cpus: Vec<usize>,
    /// The ICMP answers' rate limit, one for all queues (as the kernel's).
    pub icmp_limit: Arc<std::sync::Mutex<TokenBucket>>,
}

impl LoopIo {
    /// Whether an ICMP answer may go out now (taken from the shared bucket).
    pub fn icmp_allowed(&self) -> bool {
        let mut bucket = self.icmp_limit.lock().unwrap_or_else(|p| p.into_inner());
        bucket.allow(Instant::now())
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
