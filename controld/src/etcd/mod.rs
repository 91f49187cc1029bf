//! The etcd side: every call to etcd goes through [`Registry`]; the tasks
//! around it follow keys ([`watcher`]) and keep this host's etcd lease alive
//! ([`keeper`]). This module holds what they share: the errors, how to reach
//! etcd, and reporting a failed call. What they read (a listing, a subnet
//! event) is the model's: [`crate::model::table`].
//!
//! - [`registry`]: every call to etcd; every subnet write is a txn.
//! - [`endpoints`]: one etcd client per endpoint, used in turn: failover.
//! - [`watcher`]: list + watch of `<prefix>/subnets/`, and the config watch.
//! - [`kv`]: listings, watches and conditional writes of other keys.
//! - [`ipam_watch`]: list + watch of `<prefix>/pools/` and `<prefix>/blocks/`.
//! - [`keeper`]: etcd lease keepalive.
//! - [`security`]: the client key's file mode, plaintext endpoints off this host.

pub mod endpoints;
pub mod ipam_watch;
pub mod keeper;
pub mod kv;
pub mod registry;
pub mod security;
pub mod watcher;

use std::path::PathBuf;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::event::{sleep_or_stop, Event, EventTx, Shutdown};
use crate::model::lease::Lease;
use crate::model::table::Garbage;

pub use registry::Registry;

/// Unary calls that take longer than this count as "etcd unreachable".
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd unreachable at {endpoints}: {source}")]
    Unreachable {
        endpoints: String,
        source: etcd_client::Error,
    },
    #[error("etcd unreachable at {endpoints}: no answer within {}s", CALL_TIMEOUT.as_secs())]
    Timeout { endpoints: String },
    #[error("cannot read {what} {}: {source}", path.display())]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--etcd-cafile/--etcd-certfile need https:// endpoints, got {0}")]
    TlsNeedsHttps(String),
    #[error("bad --etcd-endpoints {endpoints}: {reason}")]
    BadEndpoint { endpoints: String, reason: String },
    #[error("etcd lease {0:x} no longer exists")]
    LeaseGone(i64),
    #[error(transparent)]
    KeyFile(#[from] crate::etcd::security::KeyFileError),
}

impl EtcdError {
    /// Whether retrying later can help (as opposed to a setup mistake).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EtcdError::Unreachable { .. } | EtcdError::Timeout { .. }
        )
    }
}

/// How to reach etcd (from the flags).
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub cafile: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// One decoded key under `<prefix>/subnets/`.
#[derive(Debug, Clone)]
pub enum Decoded {
    Lease(Lease),
    Garbage(Garbage),
}

/// An etcd call of a background task failed: tell the state task, then wait
/// out the backoff. False when shutdown came first.
async fn retry_after(
    e: &EtcdError,
    tx: &EventTx,
    backoff: &mut Backoff,
    shutdown: &mut Shutdown,
) -> bool {
    let _ = tx.send(Event::EtcdDown(e.to_string()));
    sleep_or_stop(backoff.next_delay(), shutdown).await
}
