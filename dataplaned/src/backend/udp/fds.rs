//! Where the udp backend's fds come from: handed down by a previous image or
//! systemd's fd store where they fit the snapshot, else the TUN device's
//! queues opened (with the steer-by-CPU program) and the sockets bound.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;

use super::{Got, Tun, UdpBackend, UdpError};
use crate::datapath::offload::Offload;
use crate::datapath::socket::{bind_reuseport, size_buffers};
use crate::datapath::tun::{self, Framing};
use crate::datapath::{flow_steer, steer};

/// Binds `n` sockets of one reuseport group to PublicIP:Port; where the
/// PublicIP is not a local address (a NATed host's `--public-ip`), falls
/// back to the wildcard address and says so.
fn bind_group(
    wanted: SocketAddrV4,
    n: usize,
) -> Result<(Vec<UdpSocket>, Option<String>), UdpError> {
    let (first, warning) = match bind_reuseport(wanted) {
        Ok(s) => (s, None),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
            let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, wanted.port());
            let s = bind_reuseport(any).map_err(|source| UdpError::Bind { addr: any, source })?;
            let warning = format!(
                "public IP {} is not a local address; UDP socket bound to {any} instead",
                wanted.ip()
            );
            tracing::warn!(wanted = %wanted, bound = %any, "{warning}");
            (s, Some(warning))
        }
        Err(source) => {
            return Err(UdpError::Bind {
                addr: wanted,
                source,
            })
        }
    };
    let addr = match first.local_addr() {
        Ok(SocketAddr::V4(a)) => a,
        _ => wanted,
    };
    let mut sockets = vec![first];
    for _ in 1..n {
        sockets.push(bind_reuseport(addr).map_err(|source| UdpError::Bind { addr, source })?);
    }
    Ok((sockets, warning))
}

impl UdpBackend {
    /// `n` sockets for `wanted`: the inherited ones if they fit, else new
    /// ones. The bool says whether they are new (not handed down).
    pub(super) fn sockets_for(
        &mut self,
        wanted: SocketAddrV4,
        n: usize,
    ) -> Result<(Vec<UdpSocket>, Option<String>, bool), UdpError> {
        if let Some((sockets, warning)) = self.inherited_sockets(wanted, n) {
            return Ok((sockets, warning, false));
        }
        let (sockets, warning) = bind_group(wanted, n)?;
        for s in &sockets {
            size_buffers(s);
        }
        tracing::info!(address = %wanted, sockets = n, "UDP sockets bound");
        Ok((sockets, warning, true))
    }

    /// The inherited sockets if they are bound to `wanted` (or to the
    /// wildcard fallback that `wanted` still needs) and there are at least
    /// `n` (the first `n` are kept); otherwise they are closed.
    pub(super) fn inherited_sockets(
        &mut self,
        wanted: SocketAddrV4,
        n: usize,
    ) -> Option<(Vec<UdpSocket>, Option<String>)> {
        let mut sockets = std::mem::take(&mut self.inherited.udp);
        let first = sockets.first()?;
        let bound = first.local_addr();
        let fits = match bound {
            Ok(SocketAddr::V4(a)) if a == wanted => Some(None),
            Ok(SocketAddr::V4(a)) if a.ip().is_unspecified() && a.port() == wanted.port() => {
                // Bound to the wildcard because the public IP was not local:
                // keep them if that is still so.
                let not_local = UdpSocket::bind(wanted)
                    .is_err_and(|e| e.raw_os_error() == Some(libc::EADDRNOTAVAIL));
                not_local.then(|| {
                    Some(format!(
                        "public IP {} is not a local address; UDP socket bound to {a} instead",
                        wanted.ip()
                    ))
                })
            }
            _ => None,
        };
        match fits {
            Some(warning) if sockets.len() >= n => {
                sockets.truncate(n);
                tracing::info!(address = ?bound, sockets = n, "UDP sockets taken over");
                Some((sockets, warning))
            }
            _ => {
                tracing::info!(inherited = ?bound, count = sockets.len(), wanted = %wanted, queues = n, "the inherited UDP sockets do not fit; binding new ones");
                None
            }
        }
    }

    /// The TUN queues: ours, else the inherited ones, else the device
    /// opened; and which of the three.
    pub(super) fn tun_queues(&mut self) -> Result<(Tun, Got), UdpError> {
        if let Some(t) = &self.tun {
            return Ok((t.clone(), Got::Kept));
        }
        let (files, framing, got) = self.attach_tun()?;
        // Coalesced UDP writes need offload framing and Linux 6.2.
        let uso = framing == Framing::Offload && tun::uso_supported();
        let by_cpu = files.len() > 1
            && self.steered(
                flow_steer::steer_tun_by_cpu(files[0].as_fd()),
                "cannot load the steer-by-CPU program (kolach-dataplaned needs CAP_BPF): the TUN spreads packets over its queues by flow",
            );
        let files = files.into_iter().map(Arc::new).collect();
        let tun = Tun {
            files,
            framing,
            uso,
            by_cpu,
        };
        Ok((tun, got))
    }

    /// Whether a steer-by-CPU program went in place; if the kernel refused
    /// it, says so (`what`: what runs instead) and the queues steer by flow.
    pub(super) fn steered(&self, r: io::Result<()>, what: &str) -> bool {
        match r {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(device = %self.tun_name, error = %e, "{what}");
                false
            }
        }
    }

    /// The inherited TUN queues if their framing is the one wanted, else
    /// the device's queues opened anew.
    pub(super) fn attach_tun(&mut self) -> Result<(Vec<File>, Framing, Got), UdpError> {
        let want = match self.options.offload {
            Offload::Auto => Framing::Offload,
            Offload::Off => Framing::Plain,
        };
        let n = self.options.queues.count(steer::allowed_cpus().len());
        let inherited = std::mem::take(&mut self.inherited.tun);
        if let Some(first) = inherited.first() {
            let found = inherited
                .iter()
                .map(tun::framing)
                .collect::<Result<Vec<_>, _>>();
            match found {
                Ok(f) if f.iter().all(|x| *x == want) => {
                    if want == Framing::Offload {
                        if let Err(e) = tun::set_offload(first) {
                            tracing::warn!(device = %self.tun_name, error = %e, "cannot turn on TUN offloads on the inherited fd");
                        }
                    }
                    tracing::info!(device = %self.tun_name, queues = inherited.len(), "TUN queues taken over");
                    if n != inherited.len() {
                        tracing::info!(device = %self.tun_name, queues = inherited.len(), wanted = n, "running the queues handed over, not the {n} --queues asks for: a restart or hot upgrade keeps its queues; stop and start the service to change them");
                    }
                    return Ok((inherited, want, Got::HandedDown));
                }
                found => {
                    // A TUN fd's framing is fixed when it attaches: reopen.
                    // Packets queued in the device this instant are lost;
                    // this happens once, on a change of --offload or an
                    // upgrade from an image without offloads.
                    tracing::warn!(device = %self.tun_name, found = ?found, wanted = ?want, "the inherited TUN fds frame packets differently; reopening the device");
                    drop(inherited);
                }
            }
        }
        let (files, framing, single) = tun::open_queues(&self.tun_name, want, n)?;
        if single && n > 1 {
            tracing::warn!(device = %self.tun_name, queues = n, "the device was made single-queue (by a kolach-dataplaned from before queues): running one queue; delete the device (ip link del) in a quiet moment to get a queue per CPU");
        }
        if let Err(e) = tun::set_txqueuelen(&self.tun_name, tun::TXQUEUELEN) {
            tracing::debug!(device = %self.tun_name, error = %e, "cannot set the TUN queue length");
        }
        Ok((files, framing, Got::New))
    }
}
