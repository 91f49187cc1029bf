//! The backends behind one enum, chosen by a factory from the snapshot's type.
//!
//! udp runs the TUN/UDP packet loop; alloc does nothing (leases only). vxlan and
//! host-gw program the kernel and are the next issue: the factory refuses them
//! with a reason instead of pretending.

use std::sync::Arc;

use crate::counters::Counters;
use crate::netlink::Kernel;
use crate::snapshot::{BackendKind, ValidSnapshot};
use crate::udp::{UdpBackend, UdpError};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend {0} is not implemented yet")]
    NotImplemented(&'static str),
    #[error(transparent)]
    Udp(#[from] UdpError),
}

pub enum Backend {
    Alloc,
    Udp(UdpBackend),
}

impl Backend {
    /// Makes a backend of `kind`; nothing runs until the first apply.
    pub fn create(
        kind: BackendKind,
        tun_name: &str,
        counters: Arc<Counters>,
    ) -> Result<Backend, BackendError> {
        match kind {
            BackendKind::Udp => Ok(Backend::Udp(UdpBackend::new(tun_name, counters))),
            BackendKind::Alloc => Ok(Backend::Alloc),
            BackendKind::Vxlan | BackendKind::HostGw => {
                Err(BackendError::NotImplemented(kind.name()))
            }
        }
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Alloc => BackendKind::Alloc,
            Backend::Udp(_) => BackendKind::Udp,
        }
    }

    /// The device this backend forwards through, if any.
    pub fn device(&self) -> Option<&str> {
        match self {
            Backend::Alloc => None,
            Backend::Udp(u) => Some(u.device()),
        }
    }

    /// Packet I/O mode for the status.
    pub fn mode(&self) -> &'static str {
        match self {
            Backend::Alloc => "none",
            Backend::Udp(_) => "basic",
        }
    }

    /// Applies a snapshot; returns warnings worth showing in the status.
    pub async fn apply(
        &mut self,
        s: &ValidSnapshot,
        kernel: &dyn Kernel,
    ) -> Result<Vec<String>, BackendError> {
        match self {
            Backend::Alloc => Ok(Vec::new()),
            Backend::Udp(u) => Ok(u.apply(s, kernel).await?),
        }
    }

    /// Stops the runtime (threads, fds); kernel state stays.
    pub fn stop(&mut self) {
        match self {
            Backend::Alloc => {}
            Backend::Udp(u) => u.stop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory() {
        let c = Arc::new(Counters::default());
        assert_eq!(
            Backend::create(BackendKind::Udp, "kolach0", c.clone())
                .unwrap()
                .kind(),
            BackendKind::Udp
        );
        let alloc = Backend::create(BackendKind::Alloc, "kolach0", c.clone()).unwrap();
        assert_eq!(alloc.kind(), BackendKind::Alloc);
        assert_eq!(alloc.device(), None);
        for k in [BackendKind::Vxlan, BackendKind::HostGw] {
            let e = Backend::create(k, "kolach0", c.clone()).err().unwrap();
            assert_eq!(
                e.to_string(),
                format!("backend {} is not implemented yet", k.name())
            );
        }
    }

    #[tokio::test]
    async fn alloc_apply_touches_nothing() {
        let k = crate::fake_kernel::FakeKernel::default();
        let mut b =
            Backend::create(BackendKind::Alloc, "kolach0", Arc::new(Counters::default())).unwrap();
        let mut s = crate::snapshot::validate(&crate::snapshot::tests::good()).unwrap();
        s.backend = BackendKind::Alloc;
        assert!(b.apply(&s, &k).await.unwrap().is_empty());
        assert!(k.take_calls().is_empty());
    }
}
