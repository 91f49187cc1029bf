//! `kolach.dataplane.v1.Dataplane` and `DataplaneAdmin` on
//! `<run-dir>/dataplaned.sock`.
//!
//! Sync, Apply and Upgrade need root or the controld user (SO_PEERCRED);
//! Status and Routes are open to anyone who can open the socket (its mode
//! decides that).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kolach_proto::dataplane::dataplane_admin_server::{DataplaneAdmin, DataplaneAdminServer};
use kolach_proto::dataplane::dataplane_server::{Dataplane, DataplaneServer};
use kolach_proto::dataplane::{
    ApplyReply, DataplaneStatus, RoutesReply, RoutesRequest, Snapshot, StatusRequest, UpgradeReply,
    UpgradeRequest,
};
use kolach_proto::uds::PeerGate;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{Engine, Origin};
use crate::handover::upgrade::Upgrader;

#[derive(Clone)]
pub struct Service {
    engine: Arc<Engine>,
    upgrader: Arc<Upgrader>,
    gate: PeerGate,
    /// Turns true at shutdown or handover; ends open Sync streams so the
    /// server can stop.
    stopping: watch::Receiver<bool>,
}

impl Service {
    pub fn new(
        engine: Arc<Engine>,
        upgrader: Arc<Upgrader>,
        gate: PeerGate,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Service {
            engine,
            upgrader,
            gate,
            stopping,
        }
    }

    pub fn into_server(self) -> DataplaneServer<Service> {
        DataplaneServer::new(self)
    }

    pub fn into_admin_server(self) -> DataplaneAdminServer<Service> {
        DataplaneAdminServer::new(self)
    }

    /// The engine's status with the process fields (binary, upgrades).
    pub fn status(&self) -> DataplaneStatus {
        let mut st = self.engine.status();
        self.upgrader.annotate(&mut st);
        st
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<ApplyReply, Status>> + Send>>;

#[tonic::async_trait]
impl Dataplane for Service {
    type SyncStream = ReplyStream;

    #[tracing::instrument(skip_all)]
    async fn sync(
        &self,
        req: Request<Streaming<Snapshot>>,
    ) -> Result<Response<ReplyStream>, Status> {
        self.gate.check(&req)?;
        tracing::info!("controld connected (Sync)");
        let engine = self.engine.clone();
        let mut stopping = self.stopping.clone();
        let stop = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        let replies = req
            .into_inner()
            .then(move |msg| {
                let engine = engine.clone();
                async move {
                    match msg {
                        Ok(s) => Ok(engine.apply(s, Origin::Controld).await),
                        Err(status) => {
                            tracing::info!(error = %status, "Sync stream ended");
                            Err(status)
                        }
                    }
                }
            })
            .take_until(Box::pin(stop));
        Ok(Response::new(Box::pin(replies)))
    }

    #[tracing::instrument(skip_all)]
    async fn apply(&self, req: Request<Snapshot>) -> Result<Response<ApplyReply>, Status> {
        self.gate.check(&req)?;
        Ok(Response::new(
            self.engine.apply(req.into_inner(), Origin::Controld).await,
        ))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<DataplaneStatus>, Status> {
        Ok(Response::new(Service::status(self)))
    }

    async fn routes(&self, _req: Request<RoutesRequest>) -> Result<Response<RoutesReply>, Status> {
        Ok(Response::new(self.engine.routes()))
    }
}

#[tonic::async_trait]
impl DataplaneAdmin for Service {
    #[tracing::instrument(skip_all)]
    async fn upgrade(
        &self,
        req: Request<UpgradeRequest>,
    ) -> Result<Response<UpgradeReply>, Status> {
        self.gate.check(&req)?;
        let st = Service::status(self);
        let mut reply = UpgradeReply {
            pid: st.pid,
            version: st.version,
            upgrades: st.upgrades,
            ..Default::default()
        };
        match self.upgrader.request("Upgrade RPC").await {
            Ok(plan) => {
                reply.started = true;
                reply.new_version = plan.new_version;
                reply.binary = Some(plan.binary.to_pb(false));
            }
            Err(why) => reply.reason = why,
        }
        Ok(Response::new(reply))
    }
}
