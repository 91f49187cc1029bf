//! A fake kolach-dataplaned that acks and records every snapshot.
#![allow(dead_code)]

use super::*;

/// A dataplane stand-in: acks every snapshot and records it.
#[derive(Clone)]
pub struct Recorder {
    pub snapshots: Arc<Mutex<Vec<Snapshot>>>,
    /// Set on stop: open Sync streams end, as when the process dies.
    closed: tokio::sync::watch::Receiver<bool>,
}

impl Recorder {
    pub fn last(&self) -> Option<Snapshot> {
        self.snapshots.lock().unwrap().last().cloned()
    }
    pub fn count(&self) -> usize {
        self.snapshots.lock().unwrap().len()
    }
}

#[tonic::async_trait]
impl Dataplane for Recorder {
    type SyncStream = ReceiverStream<Result<ApplyReply, Status>>;

    async fn sync(
        &self,
        req: Request<Streaming<Snapshot>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let rec = self.snapshots.clone();
        let mut closed = self.closed.clone();
        tokio::spawn(async move {
            loop {
                let s = tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(s)) => s,
                        _ => break,
                    },
                    _ = closed.wait_for(|c| *c) => break,
                };
                let version = s.version;
                rec.lock().unwrap().push(s);
                let reply = ApplyReply {
                    applied: true,
                    applied_version: version,
                    reason: String::new(),
                };
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn apply(&self, req: Request<Snapshot>) -> Result<Response<ApplyReply>, Status> {
        let s = req.into_inner();
        let version = s.version;
        self.snapshots.lock().unwrap().push(s);
        Ok(Response::new(ApplyReply {
            applied: true,
            applied_version: version,
            reason: String::new(),
        }))
    }

    async fn status(
        &self,
        _: Request<DpStatusRequest>,
    ) -> Result<Response<DataplaneStatus>, Status> {
        Ok(Response::new(DataplaneStatus::default()))
    }

    async fn routes(&self, _: Request<RoutesRequest>) -> Result<Response<RoutesReply>, Status> {
        Ok(Response::new(RoutesReply::default()))
    }
}

pub struct FakeDataplane {
    pub rec: Recorder,
    close: tokio::sync::watch::Sender<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeDataplane {
    pub async fn start(run_dir: &Path) -> FakeDataplane {
        let (close, closed) = tokio::sync::watch::channel(false);
        let rec = Recorder {
            snapshots: Arc::default(),
            closed,
        };
        let listener = uds::bind(&run_dir.join(kolach_proto::DATAPLANED_SOCKET))
            .await
            .unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let svc = DataplaneServer::new(rec.clone());
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = rx.await;
                })
                .await;
        });
        FakeDataplane {
            rec,
            close,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        let _ = self.close.send(true);
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}
