//! The udp backend: a persistent TUN device, a UDP socket on PublicIP:Port and
//! the packet loop between them.
//!
//! Applying a snapshot programs the device (address, MTU, up), swaps the route
//! table under the running loop, and rebinds the socket (restarting the loop
//! threads) only when the public address or port changed. Stopping ends the
//! threads and closes the fds; the device and its kernel state stay.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::counters::Counters;
use crate::forward::ForwardTable;
use crate::netlink::{configure_device, Kernel, KernelError};
use crate::routes::RouteTable;
use crate::snapshot::ValidSnapshot;
use crate::tun::{self, TunError};
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

struct Bound {
    /// The address the snapshot asked for (PublicIP:Port).
    wanted: SocketAddrV4,
    socket: Arc<UdpSocket>,
}

pub struct UdpBackend {
    tun_name: String,
    counters: Arc<Counters>,
    table: Arc<ArcSwap<ForwardTable>>,
    tun: Option<Arc<File>>,
    bound: Option<Bound>,
    loops: Option<Loops>,
}

/// Socket buffer size: a burst from the TUN side of a peer must not overflow
/// the default ~200 KiB receive queue while our loop thread is busy.
const SOCKET_BUFFER: usize = 4 << 20;

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
    pub fn new(tun_name: &str, counters: Arc<Counters>) -> Self {
        let empty = ForwardTable {
            network: Default::default(),
            local_subnet: Default::default(),
            tun_addr: Ipv4Addr::UNSPECIFIED,
            port: 0,
            routes: RouteTable::default(),
        };
        UdpBackend {
            tun_name: tun_name.to_string(),
            counters,
            table: Arc::new(ArcSwap::from_pointee(empty)),
            tun: None,
            bound: None,
            loops: None,
        }
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
                let (sock, warning) = bind(wanted)?;
                size_buffers(&sock);
                warnings.extend(warning);
                Some(sock)
            }
        };
        let tun = match &self.tun {
            Some(t) => t.clone(),
            None => Arc::new(tun::open_persistent(&self.tun_name)?),
        };
        let device_warnings = configure_device(kernel, &self.tun_name, s.device_address(), s.mtu)
            .await
            .map_err(|source| UdpError::Kernel {
                device: self.tun_name.clone(),
                source,
            })?;
        warnings.extend(device_warnings);
        self.tun = Some(tun.clone());
        self.table.store(Arc::new(ForwardTable::from_snapshot(s)));
        if let Some(sock) = new_socket {
            if let Some(old) = self.loops.take() {
                old.stop();
            }
            tracing::info!(address = %wanted, "UDP socket bound");
            self.bound = Some(Bound {
                wanted,
                socket: Arc::new(sock),
            });
        }
        if self.loops.is_none() {
            let socket = self.bound.as_ref().expect("bound above").socket.clone();
            let io = LoopIo {
                tun,
                socket,
                table: self.table.clone(),
                counters: self.counters.clone(),
            };
            self.loops = Some(Loops::start(io).map_err(UdpError::Threads)?);
            tracing::info!(device = %self.tun_name, "packet loop started");
        }
        Ok(warnings)
    }

    /// Ends the loop threads and closes the fds. The device stays.
    pub fn stop(&mut self) {
        if let Some(l) = self.loops.take() {
            l.stop();
            tracing::info!(device = %self.tun_name, "packet loop stopped");
        }
        self.bound = None;
        self.tun = None;
    }
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.stop();
    }
}
