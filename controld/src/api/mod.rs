//! The control API (`kolach.control.v1.Control`) on `<run-dir>/controld.sock`:
//! status and the lease table, read from the view the state task publishes.
//! Read-only, so any local user the socket mode lets in may call it.
//!
//! - [`view`]: what the state task publishes for the API to serve.
//! - [`ipam`]: `kolach.ipam.v1.Ipam`, pod addresses, on the same socket,
//!   root only.

pub mod ipam;
pub mod view;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use kolach_proto::control::control_server::Control;
use kolach_proto::control::{
    AwsStatus as PbAwsStatus, ControlStatus, Lease as PbLease, LeasesReply, LeasesRequest,
    StatusRequest,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::{debug, instrument};

use self::view::View;
use crate::aws::AwsStatus;
use crate::etcd::Registry;
use crate::model::config::BackendKind;

/// Facts fixed at start.
#[derive(Debug, Clone)]
pub struct Static {
    pub pid: u32,
    pub version: String,
    pub start_time_unix: i64,
    pub etcd_endpoints: Vec<String>,
    pub subnet_file: PathBuf,
}

pub struct ControlApi {
    pub statics: Static,
    pub view: watch::Receiver<Arc<View>>,
    /// Set once etcd is connected; used for lease expiry times.
    pub registry: Arc<OnceLock<Registry>>,
    /// What the aws-vpc backend last reported; shown while it is the backend.
    pub aws: watch::Receiver<AwsStatus>,
}

#[tonic::async_trait]
impl Control for ControlApi {
    #[instrument(skip_all)]
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<ControlStatus>, Status> {
        let v = self.view.borrow().clone();
        let s = &self.statics;
        let aws =
            (v.backend == BackendKind::AwsVpc.as_str()).then(|| aws_to_pb(&self.aws.borrow()));
        Ok(Response::new(ControlStatus {
            pid: s.pid,
            version: s.version.clone(),
            start_time_unix: s.start_time_unix,
            phase: v.phase.to_string(),
            subnet: v.subnet.map(Into::into),
            public_ip: v.public_ip.map(Into::into),
            iface: v.iface.clone(),
            backend: v.backend.clone(),
            network: v.network.map(Into::into),
            mtu: v.mtu,
            reservation: v.reservation,
            lease_ttl_seconds: v.lease_ttl_seconds(Instant::now()),
            etcd_endpoints: s.etcd_endpoints.clone(),
            etcd_reachable: v.etcd_reachable,
            watched_revision: v.watched_revision,
            dataplane_connected: v.dataplane_connected,
            epoch: v.epoch,
            generation: v.generation,
            applied_generation: v.applied_generation,
            peer_count: v.peer_count,
            config_error: v.config_error.clone(),
            subnet_file: s.subnet_file.display().to_string(),
            warnings: v.warnings.clone(),
            aws,
        }))
    }

    #[instrument(skip_all)]
    async fn leases(&self, _: Request<LeasesRequest>) -> Result<Response<LeasesReply>, Status> {
        let v = self.view.borrow().clone();
        // One TimeToLive per etcd lease; unknown (etcd down) reads as 0.
        let mut ttl: BTreeMap<i64, i64> = BTreeMap::new();
        if let Some(reg) = self.registry.get() {
            for l in v.leases.iter().filter(|l| !l.is_reservation()) {
                if ttl.contains_key(&l.lease_id) {
                    continue;
                }
                let t = match reg.time_to_live(l.lease_id).await {
                    Ok(t) => t.unwrap_or(0),
                    Err(e) => {
                        debug!(error = %e, "lease TTL unknown");
                        break;
                    }
                };
                ttl.insert(l.lease_id, t);
            }
        }
        let leases = v
            .leases
            .iter()
            .map(|l| PbLease {
                subnet: Some(l.subnet.into()),
                public_ip: Some(l.attrs.public_ip.into()),
                backend_type: l.attrs.backend_type.clone(),
                expires_in_seconds: if l.is_reservation() {
                    -1
                } else {
                    ttl.get(&l.lease_id).copied().unwrap_or(0)
                },
                reservation: l.is_reservation(),
                is_self: v.subnet == Some(l.subnet),
                backend_data: l.attrs.backend_data_json(),
            })
            .collect();
        Ok(Response::new(LeasesReply {
            revision: v.watched_revision,
            leases,
        }))
    }
}

fn aws_to_pb(a: &AwsStatus) -> PbAwsStatus {
    PbAwsStatus {
        ok: a.ok,
        message: a.message.clone(),
        instance_id: a.instance_id.clone(),
        interface_id: a.interface_id.clone(),
        region: a.region.clone(),
        tables: a.tables.clone(),
        checked_unix: a.checked_unix,
        writes: a.writes,
    }
}
