//! The udp backend: a persistent TUN device, a UDP socket on PublicIP:Port and
//! the packet loop between them.
//!
//! Applying a snapshot programs the device (address, MTU, up), swaps the route
//! table under the running loop, and rebinds the socket (restarting the loop
//! threads) only when the public address or port changed. The device's
//! address sends the whole Network into it; each peer's pool block, outside
//! the Network, gets a route of its own into it ([`desired`]). Stopping ends
//! the threads and closes the fds; the device and its kernel state stay.
//!
//! The device has a queue per CPU (`--queues`), each with its own UDP socket
//! of one `SO_REUSEPORT` group and its own loop thread ([`steer`]).
//!
//! The fds may come from a previous image (hot upgrade) or systemd's fd store
//! ([`UdpBackend::adopt`]); every fd in use is put in the fd store, so a
//! restarted service gets it back. A hot upgrade [pauses](UdpBackend::pause)
//! the loop, keeping the fds open, and [resumes](UdpBackend::resume) it if
//! the exec fails.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::datapath::counters::Counters;
use crate::datapath::offload::{self, Features, Offload};
use crate::datapath::steer::{self, Queues};
use crate::datapath::tun::{Framing, TunError};
use crate::datapath::udp_loop::Loops;
use crate::datapath::LoopIo;
use crate::handover::inherit::Inherited;
use crate::handover::{self, notify};
use crate::kernel::kobjects::KRoute;
use crate::kernel::sync::Desired;
use crate::kernel::{configure_device, Kernel, KernelError};
use crate::snapshot::ValidSnapshot;
use kolach_packet::forward::ForwardTable;
use kolach_packet::ratelimit::{TokenBucket, ICMP_BURST, ICMP_PER_SEC};
use kolach_packet::routes::RouteTable;

mod fds;

#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    #[error(transparent)]
    Tun(#[from] TunError),
    #[error("configuring {device}: {source}")]
    Kernel { device: String, source: KernelError },
    #[error("cannot bind the UDP socket to {addr}: {source}")]
    Bind {
        addr: SocketAddrV4,
        source: io::Error,
    },
    #[error("cannot start the packet loop: {0}")]
    Threads(io::Error),
}

/// What the udp backend wants of kolach's kernel objects: its TUN `tun` (at
/// `tun_index`) and, for each peer's pool block, `<block> dev <tun> scope
/// link proto 107`, so the kernel hands the packet loop what is sent there.
pub fn desired(s: &ValidSnapshot, tun: &str, tun_index: u32) -> Desired {
    Desired {
        routes: s
            .routes
            .iter()
            .flat_map(|r| &r.blocks)
            .map(|b| KRoute::device(*b, tun_index))
            .collect(),
        ..Desired::only_tun(tun, true)
    }
}

/// Where an fd in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    /// Already ours.
    Kept,
    /// From a previous image or systemd's fd store.
    HandedDown,
    New,
}

struct Bound {
    /// The address the snapshot asked for (PublicIP:Port).
    wanted: SocketAddrV4,
    /// One per queue, in the reuseport group's order.
    sockets: Vec<Arc<UdpSocket>>,
    gso: bool,
    gro: bool,
    /// Whether the group hands a datagram to the socket of its CPU.
    by_cpu: bool,
}

#[derive(Clone)]
struct Tun {
    /// The device's queues, in queue order.
    files: Vec<Arc<File>>,
    framing: Framing,
    /// Whether coalesced UDP writes (`GSO_UDP_L4`) are taken.
    uso: bool,
    /// Whether the device puts a packet in the queue of its CPU.
    by_cpu: bool,
}

/// How the udp backend runs, from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `--offload`.
    pub offload: Offload,
    /// `--busy-poll`; zero is off.
    pub busy_poll: Duration,
    /// `--queues`: TUN queues, UDP sockets and loop threads.
    pub queues: Queues,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            offload: Offload::default(),
            busy_poll: Duration::ZERO,
            queues: Queues::Auto,
        }
    }
}

pub struct UdpBackend {
    tun_name: String,
    options: Options,
    counters: Arc<Counters>,
    table: Arc<ArcSwap<ForwardTable>>,
    tun: Option<Tun>,
    bound: Option<Bound>,
    loops: Option<Loops>,
    /// fds handed down, used by the first apply that fits them.
    inherited: Inherited,
}

impl UdpBackend {
    pub fn new(tun_name: &str, options: Options, counters: Arc<Counters>) -> Self {
        let empty = ForwardTable {
            network: Default::default(),
            local_subnet: Default::default(),
            local_blocks: Vec::new(),
            tun_addr: Ipv4Addr::UNSPECIFIED,
            port: 0,
            routes: RouteTable::default(),
        };
        UdpBackend {
            tun_name: tun_name.to_string(),
            options,
            counters,
            table: Arc::new(ArcSwap::from_pointee(empty)),
            tun: None,
            bound: None,
            loops: None,
            inherited: Inherited::default(),
        }
    }

    /// Uses these fds (from a previous image or the fd store) instead of
    /// opening the device and binding a socket, where they fit the snapshot.
    pub fn adopt(&mut self, fds: Inherited) {
        self.inherited = fds;
    }

    /// The offloads in use, once the loop runs.
    pub fn features(&self) -> Option<Features> {
        let (t, b) = (self.tun.as_ref()?, self.bound.as_ref()?);
        Some(Features {
            tun_tso: t.framing == Framing::Offload,
            tun_uso: t.uso,
            udp_gso: b.gso,
            udp_gro: b.gro,
            busy_poll: self.options.busy_poll,
            queues: t.files.len(),
            by_cpu: t.by_cpu && b.by_cpu,
        })
    }

    /// What each queue's thread works with (TUN queue and socket `q`,
    /// pinned to queue `q`'s CPUs when there are several).
    fn loop_ios(&self) -> Option<Vec<LoopIo>> {
        let (t, b) = (self.tun.as_ref()?, self.bound.as_ref()?);
        let icmp_limit = Arc::new(std::sync::Mutex::new(TokenBucket::new(
            ICMP_PER_SEC,
            ICMP_BURST,
            std::time::Instant::now(),
        )));
        let pinning = steer::pinning(t.files.len());
        let ios = t.files.iter().zip(&b.sockets).zip(pinning);
        let ios = ios.map(|((tun, socket), cpus)| LoopIo {
            tun: tun.clone(),
            socket: socket.clone(),
            table: self.table.clone(),
            counters: self.counters.clone(),
            framing: t.framing,
            uso: t.uso,
            gso: b.gso,
            gro: b.gro,
            busy_poll: self.options.busy_poll,
            cpus,
            icmp_limit: icmp_limit.clone(),
        });
        Some(ios.collect())
    }

    pub fn device(&self) -> &str {
        &self.tun_name
    }

    /// Makes the device, socket and loop match `s`. On error nothing that
    /// was running is stopped. Returns warnings for the status.
    pub async fn apply(
        &mut self,
        s: &ValidSnapshot,
        kernel: &dyn Kernel,
    ) -> Result<Vec<String>, UdpError> {
        let mut warnings = Vec::new();
        let public_ip = s
            .public_ip
            .expect("validated: udp snapshots carry a public IP");
        let wanted = SocketAddrV4::new(public_ip, s.port);
        let (tun, got_tun) = self.tun_queues()?;
        let n = tun.files.len();
        let new_sockets = match &self.bound {
            Some(b) if b.wanted == wanted && b.sockets.len() == n => None,
            _ => {
                let (sockets, warning, new) = self.sockets_for(wanted, n)?;
                warnings.extend(warning);
                Some((sockets, new))
            }
        };
        let device_warnings = configure_device(kernel, &self.tun_name, s.device_address(), s.mtu)
            .await
            .map_err(|source| UdpError::Kernel {
                device: self.tun_name.clone(),
                source,
            })?;
        warnings.extend(device_warnings);
        if got_tun != Got::Kept {
            notify::store_fds(handover::FD_TUN, &tun.files, got_tun == Got::New);
        }
        self.tun = Some(tun);
        self.table.store(Arc::new(s.forward_table()));
        if let Some((sockets, new)) = new_sockets {
            if let Some(old) = self.loops.take() {
                old.stop();
            }
            notify::store_fds(handover::FD_UDP, &sockets, new);
            let on = self.options.offload == Offload::Auto;
            let gso = on && offload::udp_gso_supported(sockets[0].as_fd());
            // Set on every socket either way: one handed down may have it on.
            let mut gro = true;
            for s in &sockets {
                gro &= offload::set_udp_gro(s.as_fd(), on);
            }
            let by_cpu = n > 1
                && self.steered(
                    steer::steer_group_by_cpu(sockets[0].as_fd(), n),
                    "cannot attach the steer-by-CPU program to the UDP sockets: datagrams spread over them by hash",
                );
            self.bound = Some(Bound {
                wanted,
                sockets: sockets.into_iter().map(Arc::new).collect(),
                gso,
                gro,
                by_cpu,
            });
        }
        if self.loops.is_none() {
            let ios = self.loop_ios().expect("TUN and sockets set above");
            self.loops = Some(Loops::start(ios).map_err(UdpError::Threads)?);
            let mode = self.features().unwrap_or_default();
            tracing::info!(device = %self.tun_name, mode = %mode, "packet loop started");
        }
        Ok(warnings)
    }

    /// Ends the loop threads and closes the fds. The device stays, and so do
    /// the fds in systemd's fd store (a restart takes them back).
    pub fn stop(&mut self) {
        if let Some(l) = self.loops.take() {
            l.stop();
            tracing::info!(device = %self.tun_name, "packet loop stopped");
        }
        self.bound = None;
        self.tun = None;
    }

    /// [`stop`](Self::stop) for good (another backend takes over, the TUN
    /// goes): the fd store lets go of the fds too.
    pub fn retire(&mut self) {
        self.stop();
        self.inherited = Inherited::default();
        notify::remove_fds(handover::FD_TUN);
        notify::remove_fds(handover::FD_UDP);
    }

    /// Stops the loop threads for a handover, keeping the fds open; returns
    /// them (TUN queues, UDP sockets, in queue order) when the loop was
    /// running. Packets wait in the TUN queues and the sockets' receive
    /// buffers meanwhile. An image that adopts fewer queues (`max_queues`;
    /// one for an image from before queues) gets the first ones: the others
    /// are closed, which detaches them, so nothing waits in a queue no one
    /// reads.
    pub fn pause(&mut self, max_queues: usize) -> Option<(Vec<RawFd>, Vec<RawFd>)> {
        let l = self.loops.take()?;
        l.stop();
        let max = max_queues.max(1);
        let (t, b) = (self.tun.as_mut()?, self.bound.as_mut()?);
        if t.files.len() > max {
            tracing::info!(device = %self.tun_name, queues = t.files.len(), handed_over = max, "the new image adopts fewer queues; closing the others");
            t.files.truncate(max);
            b.sockets.truncate(max);
            notify::store_fds(handover::FD_TUN, &t.files, true);
            notify::store_fds(handover::FD_UDP, &b.sockets, true);
        }
        let tun = t.files.iter().map(|f| f.as_raw_fd()).collect();
        let udp = b.sockets.iter().map(|s| s.as_raw_fd()).collect();
        Some((tun, udp))
    }

    /// Restarts the loop after [`pause`](Self::pause) (the handover failed).
    pub fn resume(&mut self) -> Result<(), UdpError> {
        if self.loops.is_some() {
            return Ok(());
        }
        let Some(ios) = self.loop_ios() else {
            return Ok(());
        };
        self.loops = Some(Loops::start(ios).map_err(UdpError::Threads)?);
        tracing::info!(device = %self.tun_name, "packet loop resumed");
        Ok(())
    }
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.stop();
    }
}
