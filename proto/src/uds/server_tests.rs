//! The limits and the gate on a real tonic server over a Unix socket.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::*;
use crate::dataplane::dataplane_client::DataplaneClient;
use crate::dataplane::dataplane_server::{Dataplane, DataplaneServer};
use crate::dataplane::{
    ApplyReply, DataplaneStatus, Route, RoutesReply, RoutesRequest, Snapshot, StatusRequest,
};

/// A dataplane that counts the calls that reached a handler.
#[derive(Clone, Default)]
struct Counting {
    applies: Arc<AtomicUsize>,
}

type Replies = Pin<Box<dyn Stream<Item = Result<ApplyReply, Status>> + Send>>;

#[tonic::async_trait]
impl Dataplane for Counting {
    type SyncStream = Replies;

    async fn sync(&self, _: Request<Streaming<Snapshot>>) -> Result<Response<Replies>, Status> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        Err(Status::unimplemented("test"))
    }

    async fn apply(&self, _: Request<Snapshot>) -> Result<Response<ApplyReply>, Status> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(ApplyReply {
            applied: true,
            ..Default::default()
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<DataplaneStatus>, Status> {
        Ok(Response::new(DataplaneStatus {
            pid: 7,
            ..Default::default()
        }))
    }

    async fn routes(&self, _: Request<RoutesRequest>) -> Result<Response<RoutesReply>, Status> {
        Ok(Response::new(RoutesReply::default()))
    }
}

struct Served {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
    applies: Arc<AtomicUsize>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Served {
    fn close(self) {
        let _ = self.stop.send(());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves a counting dataplane the way the daemons should: limits, the gate
/// layer over the privileged methods, a 1 MiB message cap.
async fn serve(tag: &str, limits: Limits, gate: PeerGate) -> Served {
    let dir = std::env::temp_dir().join(format!("kolach-uds-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let listener = bind(&path).await.unwrap();
    let svc = Counting::default();
    let applies = svc.applies.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server_builder(&limits)
        .layer(GateLayer::new(gate.clone(), DATAPLANE_PRIVILEGED))
        .add_service(DataplaneServer::new(svc).max_decoding_message_size(limits.max_message_bytes))
        .serve_with_incoming_shutdown(Incoming::new(listener, limits, gate), async move {
            let _ = stopped.await;
        });
    tokio::spawn(server);
    Served {
        dir,
        path,
        applies,
        stop,
    }
}

fn limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_millis(300),
        idle_timeout: Some(Duration::from_millis(400)),
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(200),
        max_message_bytes: 1024 * 1024,
        ..Limits::default()
    }
}

async fn status(path: &std::path::Path) -> Result<DataplaneStatus, Status> {
    let ch = connect(path, "test").await.unwrap();
    DataplaneClient::new(ch)
        .status(StatusRequest {})
        .await
        .map(Response::into_inner)
}

async fn apply(path: &std::path::Path, s: Snapshot) -> Result<ApplyReply, Status> {
    let ch = connect(path, "test").await.unwrap();
    DataplaneClient::new(ch)
        .max_encoding_message_size(64 * 1024 * 1024)
        .apply(s)
        .await
        .map(Response::into_inner)
}

fn big_snapshot(bytes: usize) -> Snapshot {
    Snapshot {
        routes: vec![Route {
            subnet: None,
            public_ip: None,
            vtep_mac: vec![0xab; bytes],
            blocks: vec![],
        }],
        ..Default::default()
    }
}

/// Waits until the server closes `s` (EOF or reset); returns how long it took.
async fn closed_within(s: &mut UnixStream, within: Duration) -> Option<Duration> {
    let t = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return t.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_silent_client_blocks_nobody_and_is_closed() {
    let sv = serve("silent", limits(), PeerGate::new(None)).await;
    let mut silent = UnixStream::connect(&sv.path).await.unwrap();
    // Others are served at once meanwhile.
    for _ in 0..3 {
        let st = tokio::time::timeout(Duration::from_secs(2), status(&sv.path))
            .await
            .expect("served despite the silent client")
            .unwrap();
        assert_eq!(st.pid, 7);
    }
    let took = closed_within(&mut silent, Duration::from_secs(3))
        .await
        .expect("the silent connection is closed");
    assert!(took < Duration::from_secs(2), "{took:?}");
    sv.close();
}

#[tokio::test]
async fn a_client_that_stops_after_the_preface_is_closed() {
    let sv = serve("preface", limits(), PeerGate::new(None)).await;
    let mut s = UnixStream::connect(&sv.path).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // It never answers the server's SETTINGS or PINGs.
    assert!(closed_within(&mut s, Duration::from_secs(3))
        .await
        .is_some());
    sv.close();
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let l = Limits {
        max_privileged: 3,
        handshake_timeout: Duration::from_secs(30),
        ..limits()
    };
    let sv = serve("flood", l, PeerGate::new(None)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(UnixStream::connect(&sv.path).await.unwrap());
    }
    // Give the server time to accept them all.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = UnixStream::connect(&sv.path).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(1))
            .await
            .is_some(),
        "the 4th connection must be closed"
    );
    // Slots come back when held connections go (two: `connect` probes first).
    held.truncate(1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let st = tokio::time::timeout(Duration::from_secs(2), status(&sv.path))
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert_eq!(st.pid, 7);
    sv.close();
}

#[tokio::test]
async fn the_gate_refuses_before_reading_the_message() {
    // Root (the test) is not allowed by this gate.
    let sv = serve("gate", limits(), PeerGate::only(54321)).await;
    let small = apply(&sv.path, Snapshot::default()).await.unwrap_err();
    assert_eq!(small.code(), Code::PermissionDenied, "{small:?}");
    // An oversized message would be RESOURCE_EXHAUSTED had it been decoded.
    let big = apply(&sv.path, big_snapshot(2 * 1024 * 1024))
        .await
        .unwrap_err();
    assert_eq!(big.code(), Code::PermissionDenied, "{big:?}");
    assert_eq!(sv.applies.load(Ordering::SeqCst), 0, "a handler ran");
    // Reading is open to anyone the socket mode lets in.
    assert_eq!(status(&sv.path).await.unwrap().pid, 7);
    sv.close();
}

#[tokio::test]
async fn an_oversized_message_is_refused_and_the_server_goes_on() {
    let sv = serve("big", limits(), PeerGate::new(None)).await;
    let err = apply(&sv.path, big_snapshot(2 * 1024 * 1024))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert_eq!(sv.applies.load(Ordering::SeqCst), 0);
    assert!(apply(&sv.path, big_snapshot(1000)).await.unwrap().applied);
    assert_eq!(sv.applies.load(Ordering::SeqCst), 1);
    sv.close();
}
