//! The backends behind one enum, chosen by a factory from the snapshot's type.
//!
//! udp runs the TUN/UDP packet loop; vxlan and host-gw program the kernel,
//! which then forwards; alloc (leases only) and aws-vpc (the VPC routes)
//! do nothing. Every apply ends in
//! [`sync`], which also removes what an earlier backend left
//! in the kernel, so switching backends needs no special path; then
//! [`export`] keeps this host's subnet and blocks in the export table, the
//! same for every backend.

use std::os::fd::RawFd;
use std::sync::Arc;

use crate::datapath::counters::Counters;
use crate::datapath::offload::Features;
use crate::kernel::export;
use crate::kernel::sync::{sync, Desired, SyncError};
use crate::kernel::{Kernel, KernelError};
use crate::snapshot::{BackendKind, ValidSnapshot};
use hostgw::HostGwBackend;
use udp::{UdpBackend, UdpError};
use vxlan::VxlanBackend;

pub mod hostgw;
pub mod udp;
pub mod vxlan;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Udp(#[from] UdpError),
    #[error(transparent)]
    Kernel(#[from] SyncError),
}

/// What an apply did, for the status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Problems worth showing in `DataplaneStatus.errors`.
    pub warnings: Vec<String>,
    /// Peers actually routed.
    pub routes: usize,
}

pub enum Backend {
    Alloc {
        tun: String,
    },
    /// aws-vpc: the VPC's route tables carry the packets (controld keeps
    /// them); here, like alloc, nothing but clearing what others left.
    AwsVpc {
        tun: String,
    },
    Udp(UdpBackend),
    Vxlan(VxlanBackend),
    HostGw(HostGwBackend),
}

impl Backend {
    /// Makes a backend of `kind`; nothing runs until the first apply.
    pub fn create(
        kind: BackendKind,
        tun_name: &str,
        udp: udp::Options,
        counters: Arc<Counters>,
    ) -> Backend {
        match kind {
            BackendKind::Udp => Backend::Udp(UdpBackend::new(tun_name, udp, counters)),
            BackendKind::Vxlan => Backend::Vxlan(VxlanBackend::new(tun_name)),
            BackendKind::HostGw => Backend::HostGw(HostGwBackend::new(tun_name)),
            BackendKind::Alloc => Backend::Alloc {
                tun: tun_name.to_string(),
            },
            BackendKind::AwsVpc => Backend::AwsVpc {
                tun: tun_name.to_string(),
            },
        }
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Alloc { .. } => BackendKind::Alloc,
            Backend::AwsVpc { .. } => BackendKind::AwsVpc,
            Backend::Udp(_) => BackendKind::Udp,
            Backend::Vxlan(_) => BackendKind::Vxlan,
            Backend::HostGw(_) => BackendKind::HostGw,
        }
    }

    /// The device this backend forwards through, if any.
    pub fn device(&self) -> Option<&str> {
        match self {
            Backend::Alloc { .. } | Backend::AwsVpc { .. } => None,
            Backend::Udp(u) => Some(u.device()),
            Backend::Vxlan(v) => v.device(),
            Backend::HostGw(h) => h.device(),
        }
    }

    /// Packet I/O mode for the status: who moves the packets ("kernel",
    /// "none"); for udp see [`features`](Self::features).
    pub fn mode(&self) -> String {
        match self {
            Backend::Alloc { .. } | Backend::AwsVpc { .. } => "none".into(),
            Backend::Udp(u) => u
                .features()
                .map(|f| f.to_string())
                .unwrap_or_else(|| "stopped".into()),
            Backend::Vxlan(_) | Backend::HostGw(_) => "kernel".into(),
        }
    }

    /// The udp backend's offloads in use, once its loop runs.
    pub fn features(&self) -> Option<Features> {
        match self {
            Backend::Udp(u) => u.features(),
            _ => None,
        }
    }

    /// Applies a snapshot: the backend's part, then the export table,
    /// which is the same for every backend (a failed export is a warning).
    pub async fn apply(
        &mut self,
        s: &ValidSnapshot,
        kernel: &dyn Kernel,
    ) -> Result<Outcome, BackendError> {
        let mut outcome = self.apply_backend(s, kernel).await?;
        let report = export::sync(kernel, s.export_table, &s.exported()).await;
        outcome.warnings.extend(report.errors);
        Ok(outcome)
    }

    async fn apply_backend(
        &mut self,
        s: &ValidSnapshot,
        kernel: &dyn Kernel,
    ) -> Result<Outcome, BackendError> {
        match self {
            Backend::Alloc { tun } | Backend::AwsVpc { tun } => {
                let report = sync(kernel, &Desired::only_tun(tun, false)).await?;
                Ok(Outcome {
                    warnings: report.errors,
                    routes: s.routes.len(),
                })
            }
            Backend::Udp(u) => {
                let mut warnings = u.apply(s, kernel).await?;
                let tun = u.device();
                let d = if s.routes.iter().any(|r| !r.blocks.is_empty()) {
                    udp::desired(s, tun, device_index(kernel, tun).await?)
                } else {
                    Desired::only_tun(tun, true)
                };
                let report = sync(kernel, &d).await?;
                warnings.extend(report.errors);
                Ok(Outcome {
                    warnings,
                    routes: s.routes.len(),
                })
            }
            Backend::Vxlan(v) => Ok(v.apply(s, kernel).await?),
            Backend::HostGw(h) => Ok(h.apply(s, kernel).await?),
        }
    }

    /// Stops the runtime (threads, fds); kernel state stays.
    pub fn stop(&mut self) {
        if let Backend::Udp(u) = self {
            u.stop();
        }
    }

    /// Stops for good: another backend takes over.
    pub fn retire(&mut self) {
        if let Backend::Udp(u) = self {
            u.retire();
        }
    }

    /// Pauses the packet loop for a hot upgrade; the (TUN, UDP) fds to hand
    /// over, queue by queue, at most `max_queues`, if this backend has a loop.
    pub fn pause(&mut self, max_queues: usize) -> Option<(Vec<RawFd>, Vec<RawFd>)> {
        match self {
            Backend::Udp(u) => u.pause(max_queues),
            _ => None,
        }
    }

    /// Undoes [`pause`](Self::pause).
    pub fn resume(&mut self) -> Result<(), BackendError> {
        match self {
            Backend::Udp(u) => Ok(u.resume()?),
            _ => Ok(()),
        }
    }
}

/// The index of the device `name`, which must exist.
async fn device_index(kernel: &dyn Kernel, name: &str) -> Result<u32, SyncError> {
    let what = || format!("reading {name}");
    match kernel.link(name).await {
        Ok(Some((index, _))) => Ok(index),
        Ok(None) => Err(SyncError::Kernel {
            what: what(),
            source: KernelError::NoDevice(name.to_string()),
        }),
        Err(source) => Err(SyncError::Kernel {
            what: what(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests;
