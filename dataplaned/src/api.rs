//! `kolach.dataplane.v1.Dataplane` on `<run-dir>/dataplaned.sock`.
//!
//! Sync and Apply feed the engine's one apply path and need root or the
//! controld user (SO_PEERCRED); Status and Routes are open to anyone who can
//! open the socket (its mode decides that).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kolach_proto::dataplane::dataplane_server::{Dataplane, DataplaneServer};
use kolach_proto::dataplane::{
    ApplyReply, DataplaneStatus, RoutesReply, RoutesRequest, Snapshot, StatusRequest,
};
use kolach_proto::uds::PeerGate;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{Engine, Origin};

pub struct Service {
    engine: Arc<Engine>,
    gate: PeerGate,
    /// Turns true at shutdown; ends open Sync streams so the server can stop.
    stopping: watch::Receiver<bool>,
}

impl Service {
    pub fn new(engine: Arc<Engine>, gate: PeerGate, stopping: watch::Receiver<bool>) -> Self {
        Service {
            engine,
            gate,
            stopping,
        }
    }

    pub fn into_server(self) -> DataplaneServer<Service> {
        DataplaneServer::new(self)
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
        Ok(Response::new(self.engine.status()))
    }

    async fn routes(&self, _req: Request<RoutesRequest>) -> Result<Response<RoutesReply>, Status> {
        Ok(Response::new(self.engine.routes()))
    }
}
