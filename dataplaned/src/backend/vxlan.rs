//! The vxlan backend: the kernel forwards. Per snapshot it wants the device
//! `kolach.<VNI>` (VNI, dstport, local = PublicIP, dev = iface, learning off,
//! MTU, MAC = the snapshot's VTEP MAC, address `<subnet>.0/32`, up) and per
//! peer a route (and one per pool block it holds, via the same gateway), a
//! neighbour and an FDB entry; [`sync`] makes it so.

use ipnet::Ipv4Net;

use crate::backend::Outcome;
use crate::kernel::kobjects::vxlan_name;
use crate::kernel::sync::{sync, Desired, SyncError, VxlanPeer, VxlanWish};
use crate::kernel::Kernel;
use crate::snapshot::ValidSnapshot;

/// What a validated vxlan snapshot asks of the kernel.
pub fn desired(s: &ValidSnapshot, tun: &str) -> Desired {
    let wish = VxlanWish {
        name: vxlan_name(s.vni),
        vni: s.vni,
        port: s.port,
        local: s
            .public_ip
            .expect("validated: vxlan snapshots carry a public IP"),
        underlay: (!s.iface.is_empty()).then(|| s.iface.clone()),
        mtu: s.mtu,
        mac: s
            .local_vtep_mac
            .expect("validated: vxlan snapshots carry a VTEP MAC"),
        address: Ipv4Net::new(s.local_subnet.network(), 32).expect("32 is a valid prefix"),
        peers: s
            .routes
            .iter()
            .map(|r| VxlanPeer {
                subnet: r.subnet,
                public_ip: r.public_ip,
                mac: r
                    .vtep_mac
                    .expect("validated: vxlan routes carry a VTEP MAC"),
                blocks: r.blocks.clone(),
            })
            .collect(),
    };
    Desired {
        tun: tun.to_string(),
        keep_tun: false,
        vxlan: Some(wish),
        routes: Vec::new(),
    }
}

pub struct VxlanBackend {
    tun: String,
    device: Option<String>,
}

impl VxlanBackend {
    pub fn new(tun: &str) -> Self {
        VxlanBackend {
            tun: tun.to_string(),
            device: None,
        }
    }

    /// `kolach.<VNI>` once a snapshot has been applied.
    pub fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }

    pub async fn apply(&mut self, s: &ValidSnapshot, k: &dyn Kernel) -> Result<Outcome, SyncError> {
        let d = desired(s, &self.tun);
        let report = sync(k, &d).await?;
        self.device = d.vxlan.map(|v| v.name);
        Ok(Outcome {
            warnings: report.errors,
            routes: s.routes.len(),
        })
    }
}
