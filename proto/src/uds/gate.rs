//! The peer-credential gate as a tower layer: privileged methods are refused
//! with PERMISSION_DENIED for any other uid before the request body is read,
//! decoded or handed to a handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::transport::server::UdsConnectInfo;
use tower::{Layer, Service};

use super::PeerGate;

/// The dataplane's methods that change state: only root and the controld
/// user may call them.
pub const DATAPLANE_PRIVILEGED: &[&str] = &[
    "/kolach.dataplane.v1.Dataplane/Sync",
    "/kolach.dataplane.v1.Dataplane/Apply",
    "/kolach.dataplane.v1.DataplaneAdmin/Upgrade",
];

/// controld's pod-address service: every method, reads included (addresses
/// name containers), is root's only (DESIGN §10).
pub const IPAM_PRIVILEGED: &[&str] = &[
    "/kolach.ipam.v1.Ipam/Allocate",
    "/kolach.ipam.v1.Ipam/Release",
    "/kolach.ipam.v1.Ipam/Check",
    "/kolach.ipam.v1.Ipam/Gc",
    "/kolach.ipam.v1.Ipam/Status",
    "/kolach.ipam.v1.Ipam/Addresses",
    "/kolach.ipam.v1.Ipam/Pools",
    "/kolach.ipam.v1.Ipam/Blocks",
    "/kolach.ipam.v1.Ipam/CreatePool",
    "/kolach.ipam.v1.Ipam/AddPoolSubnet",
    "/kolach.ipam.v1.Ipam/DeletePool",
];

/// `Server::builder().layer(GateLayer::new(gate, DATAPLANE_PRIVILEGED))`.
#[derive(Clone, Debug)]
pub struct GateLayer {
    gate: PeerGate,
    methods: Arc<[&'static str]>,
}

impl GateLayer {
    /// Gates the gRPC paths in `methods` (`/package.Service/Method`).
    pub fn new(gate: PeerGate, methods: &[&'static str]) -> Self {
        GateLayer {
            gate,
            methods: methods.into(),
        }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            gate: self.gate.clone(),
            methods: self.methods.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Gated<S> {
    inner: S,
    gate: PeerGate,
    methods: Arc<[&'static str]>,
}

impl<S, B, R> Service<http::Request<B>> for Gated<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        if self.methods.contains(&path) {
            let uid = req
                .extensions()
                .get::<UdsConnectInfo>()
                .and_then(|i| i.peer_cred)
                .map(|c| c.uid());
            if let Err(status) = self.gate.check_uid(uid) {
                tracing::warn!(method = path, uid = ?uid, "refused: not root or the controld user");
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
        }
        Box::pin(self.inner.call(req))
    }
}
