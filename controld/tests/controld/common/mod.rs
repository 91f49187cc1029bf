//! Test harness: a real etcd on loopback (the test kit's: random ports, temp
//! data dir, killed and removed on drop), controld instances run in-process through
//! `kolach_controld::run`, and a fake dataplane that acks every snapshot.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use clap::Parser;
use etcd_client::{Client, GetOptions, PutOptions};
use ipnet::Ipv4Net;
use kolach_proto::control::control_client::ControlClient;
use kolach_proto::control::{ControlStatus, LeasesReply, LeasesRequest, StatusRequest};
use kolach_proto::dataplane::dataplane_server::{Dataplane, DataplaneServer};
use kolach_proto::dataplane::{
    ApplyReply, DataplaneStatus, RoutesReply, RoutesRequest, Snapshot,
    StatusRequest as DpStatusRequest,
};
use kolach_proto::uds;
use kolach_testkit::etcd::local::LocalEtcd;
/// A temp directory, removed on drop.
pub use kolach_testkit::tempdir::TempDir;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

mod dataplane;
mod etcd;
mod host;

pub use dataplane::*;
pub use etcd::*;
pub use host::*;

pub const PREFIX: &str = "/coreos.com/network";

pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kolach_controld=info"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .init();
    });
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after `within`.
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
