//! The udp backend: a persistent TUN device, a UDP socket on PublicIP:Port and
//! the packet loop between them.
//!
//! Applying a snapshot programs the device (address, MTU, up), swaps the route
//! table under the running loop, and rebinds the socket (restarting the loop
//! threads) only when the public address or port changed. Stopping ends the
//! threads and closes the fds; the device and its kernel state stay.
//!
//! The fds may come from a previous image (hot upgrade) or systemd's fd store
//! ([`UdpBackend::adopt`]); every fd in use is put in the fd store, so a
//! restarted service gets it back. A hot upgrade [pauses](UdpBackend::pause)
//! the loop, keeping the fds open, and [resumes](UdpBackend::resume) it if
//! the exec fails.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::counters::Counters;
use crate::forward::ForwardTable;
use crate::inherit::Inherited;
use crate::netlink::{configure_device, Kernel, KernelError};
use crate::notify;
use crate::offload::{self, Features, Offload};
use crate::routes::RouteTable;
use crate::snapshot::ValidSnapshot;
use crate::tun::{self, Framing, TunError};
use crate::udp_loop::{LoopIo, Loops};

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
    socket: Arc<UdpSocket>,
    gso: bool,
    gro: bool,
}

#[derive(Clone)]
struct Tun {
    file: Arc<File>,
    framing: Framing,
    /// Whether coalesced UDP writes (`GSO_UDP_L4`) are taken.
    uso: bool,
}

/// How the udp backend runs, from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `--offload`.
    pub offload: Offload,
    /// `--busy-poll`; zero is off.
    pub busy_poll: Duration,
    /// `--loop-threads`: 1, or 2 (one per direction; not with busy-poll).
    pub threads: u8,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            offload: Offload::default(),
            busy_poll: Duration::ZERO,
            threads: 1,
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

/// Socket buffer size: a burst from the TUN side of a peer must not overflow
/// the default ~200 KiB receive queue while our loop thread is busy.
const SOCKET_BUFFER: usize = 8 << 20;

/// Raises the socket's buffers; with CAP_NET_ADMIN the FORCE variants go past
/// net.core.{r,w}mem_max. Failure only costs throughput.
fn size_buffers(s: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    let r = setsockopt(s, sockopt::RcvBufForce, &SOCKET_BUFFER)
        .or_else(|_| setsockopt(s, sockopt::RcvBuf, &SOCKET_BUFFER));
    let w = setsockopt(s, sockopt::SndBufForce, &SOCKET_BUFFER)
        .or_else(|_| setsockopt(s, sockopt::SndBuf, &SOCKET_BUFFER));
    if let Err(e) = r.and(w) {
        tracing::debug!(error = %e, "cannot raise UDP socket buffers");
    }
}

/// Binds PublicIP:Port; where the PublicIP is not a local address (a NATed
/// host's `--public-ip`), falls back to the wildcard address and says so.
fn bind(wanted: SocketAddrV4) -> Result<(UdpSocket, Option<String>), UdpError> {
    match UdpSocket::bind(wanted) {
        Ok(s) => Ok((s, None)),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
            let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, wanted.port());
            let s = UdpSocket::bind(any).map_err(|source| UdpError::Bind { addr: any, source })?;
            let warning = format!(
                "public IP {} is not a local address; UDP socket bound to {any} instead",
                wanted.ip()
            );
            tracing::warn!(wanted = %wanted, bound = %any, "{warning}");
            Ok((s, Some(warning)))
        }
        Err(source) => Err(UdpError::Bind {
            addr: wanted,
            source,
        }),
    }
}

impl UdpBackend {
    pub fn new(tun_name: &str, options: Options, counters: Arc<Counters>) -> Self {
        let empty = ForwardTable {
            network: Default::default(),
            local_subnet: Default::default(),
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

    /// The socket for `wanted`: the inherited one if it fits, else a new one.
    /// The bool says whether it is a new socket (not handed down).
    fn socket_for(
        &mut self,
        wanted: SocketAddrV4,
    ) -> Result<(UdpSocket, Option<String>, bool), UdpError> {
        if let Some((sock, warning)) = self.inherited_socket(wanted) {
            return Ok((sock, warning, false));
        }
        let (sock, warning) = bind(wanted)?;
        size_buffers(&sock);
        tracing::info!(address = %wanted, "UDP socket bound");
        Ok((sock, warning, true))
    }

    /// The inherited socket if it is bound to `wanted` (or to the wildcard
    /// fallback that `wanted` still needs); otherwise it is closed.
    fn inherited_socket(&mut self, wanted: SocketAddrV4) -> Option<(UdpSocket, Option<String>)> {
        let s = self.inherited.udp.take()?;
        match s.local_addr() {
            Ok(SocketAddr::V4(a)) if a == wanted => {
                tracing::info!(address = %a, "UDP socket taken over");
                return Some((s, None));
            }
            Ok(SocketAddr::V4(a)) if a.ip().is_unspecified() && a.port() == wanted.port() => {
                // Bound to the wildcard because the public IP was not local:
                // keep it if that is still so.
                let not_local = UdpSocket::bind(wanted)
                    .is_err_and(|e| e.raw_os_error() == Some(libc::EADDRNOTAVAIL));
                if not_local {
                    tracing::info!(address = %a, "UDP socket taken over");
                    let w = format!(
                        "public IP {} is not a local address; UDP socket bound to {a} instead",
                        wanted.ip()
                    );
                    return Some((s, Some(w)));
                }
            }
            _ => {}
        }
        tracing::info!(inherited = ?s.local_addr(), wanted = %wanted, "the inherited UDP socket does not fit; binding a new one");
        None
    }

    /// The TUN fd: ours, else the inherited one, else the device opened;
    /// and which of the three.
    fn tun_file(&mut self) -> Result<(Tun, Got), UdpError> {
        if let Some(t) = &self.tun {
            return Ok((t.clone(), Got::Kept));
        }
        let (file, framing, got) = self.attach_tun()?;
        // Coalesced UDP writes need offload framing and Linux 6.2.
        let uso = framing == Framing::Offload && tun::uso_supported();
        let file = Arc::new(file);
        Ok((Tun { file, framing, uso }, got))
    }

    /// The inherited TUN fd if its framing is the one wanted, else the
    /// device opened anew.
    fn attach_tun(&mut self) -> Result<(File, Framing, Got), UdpError> {
        let want = match self.options.offload {
            Offload::Auto => Framing::Offload,
            Offload::Off => Framing::Plain,
        };
        if let Some(f) = self.inherited.tun.take() {
            match tun::framing(&f) {
                Ok(framing) if framing == want => {
                    if framing == Framing::Offload {
                        if let Err(e) = tun::set_offload(&f) {
                            tracing::warn!(device = %self.tun_name, error = %e, "cannot turn on TUN offloads on the inherited fd");
                        }
                    }
                    tracing::info!(device = %self.tun_name, "TUN fd taken over");
                    return Ok((f, framing, Got::HandedDown));
                }
                found => {
                    // A TUN fd's framing is fixed when it attaches: reopen.
                    // Packets queued in the device this instant are lost;
                    // this happens once, on a change of --offload or an
                    // upgrade from an image without offloads.
                    tracing::warn!(device = %self.tun_name, found = ?found, wanted = ?want, "the inherited TUN fd frames packets differently; reopening the device");
                    drop(f);
                }
            }
        }
        let (f, framing) = tun::open_persistent(&self.tun_name, want)?;
        if let Err(e) = tun::set_txqueuelen(&self.tun_name, tun::TXQUEUELEN) {
            tracing::debug!(device = %self.tun_name, error = %e, "cannot set the TUN queue length");
        }
        Ok((f, framing, Got::New))
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
            threads: self.options.threads,
        })
    }

    fn loop_io(&self) -> Option<LoopIo> {
        let (t, b) = (self.tun.as_ref()?, self.bound.as_ref()?);
        Some(LoopIo {
            tun: t.file.clone(),
            socket: b.socket.clone(),
            table: self.table.clone(),
            counters: self.counters.clone(),
            framing: t.framing,
            uso: t.uso,
            gso: b.gso,
            gro: b.gro,
            busy_poll: self.options.busy_poll,
            threads: self.options.threads,
        })
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
        let new_socket = match &self.bound {
            Some(b) if b.wanted == wanted => None,
            _ => {
                let (sock, warning, new) = self.socket_for(wanted)?;
                warnings.extend(warning);
                Some((sock, new))
            }
        };
        let (tun, got_tun) = self.tun_file()?;
        let device_warnings = configure_device(kernel, &self.tun_name, s.device_address(), s.mtu)
            .await
            .map_err(|source| UdpError::Kernel {
                device: self.tun_name.clone(),
                source,
            })?;
        warnings.extend(device_warnings);
        if got_tun != Got::Kept {
            notify::store_fd(notify::FD_TUN, tun.file.as_fd(), got_tun == Got::New);
        }
        self.tun = Some(tun);
        self.table.store(Arc::new(ForwardTable::from_snapshot(s)));
        if let Some((sock, new)) = new_socket {
            if let Some(old) = self.loops.take() {
                old.stop();
            }
            notify::store_fd(notify::FD_UDP, sock.as_fd(), new);
            let on = self.options.offload == Offload::Auto;
            let gso = on && offload::udp_gso_supported(sock.as_fd());
            // Set either way: a socket handed down may have it on.
            let gro = offload::set_udp_gro(sock.as_fd(), on);
            self.bound = Some(Bound {
                wanted,
                socket: Arc::new(sock),
                gso,
                gro,
            });
        }
        if self.loops.is_none() {
            let io = self.loop_io().expect("TUN and socket set above");
            self.loops = Some(Loops::start(io).map_err(UdpError::Threads)?);
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
        notify::remove_fds(notify::FD_TUN);
        notify::remove_fds(notify::FD_UDP);
    }

    /// Stops the loop threads for a handover, keeping the fds open; returns
    /// them (TUN, UDP) when the loop was running. Packets wait in the TUN
    /// queue and the socket's receive buffer meanwhile.
    pub fn pause(&mut self) -> Option<(RawFd, RawFd)> {
        let l = self.loops.take()?;
        l.stop();
        let tun = self.tun.as_ref()?.file.as_raw_fd();
        let udp = self.bound.as_ref()?.socket.as_raw_fd();
        Some((tun, udp))
    }

    /// Restarts the loop after [`pause`](Self::pause) (the handover failed).
    pub fn resume(&mut self) -> Result<(), UdpError> {
        if self.loops.is_some() {
            return Ok(());
        }
        let Some(io) = self.loop_io() else {
            return Ok(());
        };
        self.loops = Some(Loops::start(io).map_err(UdpError::Threads)?);
        tracing::info!(device = %self.tun_name, "packet loop resumed");
        Ok(())
    }
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.stop();
    }
}
