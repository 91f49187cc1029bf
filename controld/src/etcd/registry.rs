//! [`Registry`]: every call to etcd (v3 API) goes through it.
//!
//! Every write to a subnet key is a transaction: create compares the key's
//! create revision with 0, update and release compare its mod revision. So
//! kolach can never overwrite another host's lease (DESIGN §3).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    KeyValue, LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
    WatchStream,
};
use ipnet::Ipv4Net;

use super::endpoints::Endpoints;
use super::{Decoded, EtcdError, EtcdOptions, CALL_TIMEOUT};
use crate::model::lease::{Lease, LeaseAttrs};
use crate::model::subnet;
use crate::model::table::{Garbage, Listing, SubnetEvent};

#[derive(Clone)]
pub struct Registry {
    pool: Arc<Endpoints>,
    prefix: String,
    endpoints: String,
}

impl Registry {
    /// Builds the clients (one per endpoint, see [`crate::etcd::endpoints`]). The
    /// connections are lazy: an unreachable etcd shows up as errors from the
    /// calls, which the callers retry.
    pub async fn connect(opts: &EtcdOptions) -> Result<Self, EtcdError> {
        let endpoints = opts.endpoints.join(",");
        // require_leader: a member cut off from its cluster cancels our watches
        // and keepalives instead of answering nothing, so they move on to
        // another endpoint.
        let mut co = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        if opts.cafile.is_some() || opts.certfile.is_some() {
            if let Some(e) = opts.endpoints.iter().find(|e| e.starts_with("http://")) {
                return Err(EtcdError::TlsNeedsHttps(e.clone()));
            }
            let read = |what, p: &PathBuf| {
                std::fs::read(p).map_err(|source| EtcdError::TlsFile {
                    what,
                    path: p.clone(),
                    source,
                })
            };
            let mut tls = TlsOptions::new();
            if let Some(ca) = &opts.cafile {
                tls = tls.ca_certificate(Certificate::from_pem(read("--etcd-cafile", ca)?));
            }
            if let (Some(cert), Some(key)) = (&opts.certfile, &opts.keyfile) {
                crate::etcd::security::check_key_file(key)?;
                tls = tls.identity(Identity::from_pem(
                    read("--etcd-certfile", cert)?,
                    read("--etcd-keyfile", key)?,
                ));
            }
            co = co.with_tls(tls);
        }
        if let (Some(u), Some(p)) = (&opts.username, &opts.password) {
            // etcd's auth tokens expire (5 min by default); refresh them.
            co = co
                .with_user(u.clone(), p.clone())
                .with_auto_token_refresh(true);
        }
        if opts.endpoints.is_empty() {
            return Err(EtcdError::BadEndpoint {
                endpoints,
                reason: "no endpoint given".into(),
            });
        }
        let pool = Endpoints::new(opts.endpoints.clone(), co.clone());
        let bad = |reason: String| EtcdError::BadEndpoint {
            endpoints: endpoints.clone(),
            reason,
        };
        for (i, url) in opts.endpoints.iter().enumerate() {
            let full = if url.contains("://") {
                url.clone()
            } else {
                format!("http://{url}")
            };
            full.parse::<tonic::codegen::http::Uri>()
                .map_err(|e| bad(format!("{url}: {e}")))?;
            if opts.username.is_none() {
                // Without auth, making a client connects nothing yet.
                let c = Client::connect([url], Some(co.clone()))
                    .await
                    .map_err(|e| bad(format!("{url}: {e}")))?;
                pool.preset(i, c);
            }
        }
        Ok(Registry {
            pool: Arc::new(pool),
            prefix: opts.prefix.trim_end_matches('/').to_string(),
            endpoints,
        })
    }

    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    pub fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    pub fn pools_prefix(&self) -> String {
        format!("{}/pools/", self.prefix)
    }

    pub fn blocks_prefix(&self) -> String {
        format!("{}/blocks/", self.prefix)
    }

    pub fn subnet_key(&self, subnet: Ipv4Net) -> String {
        format!("{}{}", self.subnets_prefix(), subnet::key_name(subnet))
    }

    /// The endpoint to use now and its client.
    pub(super) async fn pick(&self) -> Result<(usize, Client), EtcdError> {
        self.pool
            .pick()
            .await
            .map_err(|source| EtcdError::Unreachable {
                endpoints: self.endpoints.clone(),
                source,
            })
    }

    /// A stream opened on endpoint `idx` broke: the next call goes elsewhere.
    pub fn stream_failed(&self, idx: usize) {
        self.pool.failed(idx);
    }

    /// [`Registry::stream_failed`] for a stream that broke with `e`; returns
    /// what to tell the state task (`what`: "subnet watch", "keepalive stream").
    pub fn stream_broke(&self, idx: usize, what: &str, e: &etcd_client::Error) -> String {
        self.stream_failed(idx);
        format!(
            "etcd unreachable at {}: {what} broke: {e}",
            self.endpoints()
        )
    }

    /// Runs a call on endpoint `idx` with a deadline; a failure moves on to
    /// the next endpoint (but not an answer such as "no such lease").
    pub(super) async fn call<T, F>(&self, idx: usize, f: F) -> Result<T, EtcdError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => {
                let answered = matches!(&source, etcd_client::Error::GRpcStatus(s)
                    if s.code() == tonic::Code::NotFound);
                if !answered {
                    self.pool.failed(idx);
                }
                Err(EtcdError::Unreachable {
                    endpoints: self.endpoints.clone(),
                    source,
                })
            }
            Err(_) => {
                self.pool.failed(idx);
                self.pool.reconnect(idx);
                Err(EtcdError::Timeout {
                    endpoints: self.endpoints.clone(),
                })
            }
        }
    }

    /// The config value (None when the key is absent) and the revision read at.
    pub async fn get_config(&self) -> Result<(Option<Vec<u8>>, i64), EtcdError> {
        let (idx, client) = self.pick().await?;
        let mut kv = client.kv_client();
        let resp = self.call(idx, kv.get(self.config_key(), None)).await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok((resp.kvs().first().map(|kv| kv.value().to_vec()), rev))
    }

    pub async fn list_subnets(&self) -> Result<Listing, EtcdError> {
        let (idx, client) = self.pick().await?;
        let mut kv = client.kv_client();
        let resp = self
            .call(
                idx,
                kv.get(self.subnets_prefix(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let mut listing = Listing {
            revision: resp.header().map_or(0, |h| h.revision()),
            ..Listing::default()
        };
        for kv in resp.kvs() {
            match self.decode(kv) {
                Decoded::Lease(l) => listing.leases.push(l),
                Decoded::Garbage(g) => listing.garbage.push(g),
            }
        }
        Ok(listing)
    }

    /// Turns a key/value under the subnets prefix into a lease, or a garbage
    /// record naming what is wrong with it.
    pub fn decode(&self, kv: &KeyValue) -> Decoded {
        let key = String::from_utf8_lossy(kv.key());
        let name = key
            .strip_prefix(&self.subnets_prefix())
            .unwrap_or(&key)
            .to_string();
        let garbage = |subnet, error: String| {
            Decoded::Garbage(Garbage {
                key: name.clone(),
                subnet,
                error,
                mod_revision: kv.mod_revision(),
            })
        };
        let subnet = match subnet::parse_key(&name) {
            Ok(s) => s,
            Err(e) => return garbage(None, e.to_string()),
        };
        match LeaseAttrs::parse(kv.value()) {
            Ok(attrs) => Decoded::Lease(Lease {
                subnet,
                attrs,
                value: String::from_utf8_lossy(kv.value()).into_owned(),
                lease_id: kv.lease(),
                mod_revision: kv.mod_revision(),
                create_revision: kv.create_revision(),
            }),
            Err(e) => garbage(Some(subnet), e.to_string()),
        }
    }

    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let (idx, client) = self.pick().await?;
        let mut lc = client.lease_client();
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        Ok(self.call(idx, lc.grant(ttl, None)).await?.id())
    }

    pub async fn revoke(&self, lease_id: i64) -> Result<(), EtcdError> {
        let (idx, client) = self.pick().await?;
        let mut lc = client.lease_client();
        self.call(idx, lc.revoke(lease_id)).await.map(|_| ())
    }

    /// Seconds the etcd lease has left; None when it no longer exists.
    pub async fn time_to_live(&self, lease_id: i64) -> Result<Option<i64>, EtcdError> {
        let (idx, client) = self.pick().await?;
        let mut lc = client.lease_client();
        let ttl = self.call(idx, lc.time_to_live(lease_id, None)).await?.ttl();
        Ok((ttl >= 0).then_some(ttl))
    }

    /// Creates `subnet`'s key attached to `lease_id` if the key does not exist.
    /// Returns the new lease record, or None when someone else holds the key.
    pub async fn create(
        &self,
        subnet: Ipv4Net,
        attrs: &LeaseAttrs,
        lease_id: i64,
    ) -> Result<Option<Lease>, EtcdError> {
        let key = self.subnet_key(subnet);
        let value = attrs.to_json();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value.clone(),
                Some(PutOptions::new().with_lease(lease_id)),
            )]);
        let (idx, client) = self.pick().await?;
        let mut kv = client.kv_client();
        let resp = match self.call(idx, kv.txn(txn)).await {
            Err(EtcdError::Unreachable {
                source: etcd_client::Error::GRpcStatus(s),
                ..
            }) if s.code() == tonic::Code::NotFound => return Err(EtcdError::LeaseGone(lease_id)),
            other => other?,
        };
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok(resp.succeeded().then(|| Lease {
            subnet,
            attrs: attrs.clone(),
            value,
            lease_id,
            mod_revision: rev,
            create_revision: rev,
        }))
    }

    /// Rewrites the value of a key we hold, only if it is unchanged since
    /// `lease` was read. Keeps the key's etcd lease (a reservation stays one:
    /// no lease). None on conflict.
    pub async fn update(
        &self,
        lease: &Lease,
        attrs: &LeaseAttrs,
    ) -> Result<Option<Lease>, EtcdError> {
        let key = self.subnet_key(lease.subnet);
        let opts = (lease.lease_id != 0).then(|| PutOptions::new().with_lease(lease.lease_id));
        let value = attrs.to_json();
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                lease.mod_revision,
            )])
            .and_then([TxnOp::put(key, value.clone(), opts)]);
        let (idx, client) = self.pick().await?;
        let mut kv = client.kv_client();
        let resp = self.call(idx, kv.txn(txn)).await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok(resp.succeeded().then(|| Lease {
            attrs: attrs.clone(),
            value,
            mod_revision: rev,
            ..lease.clone()
        }))
    }

    /// Deletes a key we hold, only if it is unchanged since `lease` was read.
    /// Returns whether it was deleted.
    pub async fn release(&self, lease: &Lease) -> Result<bool, EtcdError> {
        let key = self.subnet_key(lease.subnet);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                lease.mod_revision,
            )])
            .and_then([TxnOp::delete(key, None)]);
        let (idx, client) = self.pick().await?;
        let mut kv = client.kv_client();
        Ok(self.call(idx, kv.txn(txn)).await?.succeeded())
    }

    /// Opens a keepalive stream. A lease that is already gone is
    /// [`EtcdError::LeaseGone`], not a transient error.
    pub async fn keep_alive(
        &self,
        lease_id: i64,
    ) -> Result<(usize, LeaseKeeper, LeaseKeepAliveStream), EtcdError> {
        let (idx, client) = self.pick().await?;
        let mut lc = client.lease_client();
        match self.call(idx, lc.keep_alive(lease_id)).await {
            Err(EtcdError::Unreachable {
                source: etcd_client::Error::LeaseKeepAliveError(_),
                ..
            }) => Err(EtcdError::LeaseGone(lease_id)),
            Err(EtcdError::Unreachable {
                source: etcd_client::Error::GRpcStatus(s),
                ..
            }) if s.code() == tonic::Code::NotFound => Err(EtcdError::LeaseGone(lease_id)),
            Err(e) => Err(e),
            Ok((keeper, stream)) => Ok((idx, keeper, stream)),
        }
    }

    /// Watches `<prefix>/subnets/` from `start_revision` (inclusive), with
    /// previous values.
    pub async fn watch_subnets(
        &self,
        start_revision: i64,
    ) -> Result<(usize, WatchStream), EtcdError> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(start_revision);
        self.watch(self.subnets_prefix(), opts).await
    }

    /// Watches `<prefix>/config` from `start_revision` (inclusive).
    pub async fn watch_config(
        &self,
        start_revision: i64,
    ) -> Result<(usize, WatchStream), EtcdError> {
        let opts = WatchOptions::new().with_start_revision(start_revision);
        self.watch(self.config_key(), opts).await
    }

    /// Opens a watch on the current endpoint; the stream's failures are
    /// reported back with [`Registry::stream_broke`] and its index.
    pub(super) async fn watch(
        &self,
        key: String,
        opts: WatchOptions,
    ) -> Result<(usize, WatchStream), EtcdError> {
        let (idx, client) = self.pick().await?;
        let mut wc = client.watch_client();
        let stream = self.call(idx, wc.watch(key, Some(opts))).await?;
        Ok((idx, stream))
    }

    /// Decodes one watch event under the subnets prefix.
    pub fn subnet_event(&self, ev: &etcd_client::Event) -> Option<SubnetEvent> {
        let kv = ev.kv()?;
        match ev.event_type() {
            EventType::Put => Some(match self.decode(kv) {
                Decoded::Lease(l) => SubnetEvent::Put(l),
                Decoded::Garbage(g) => SubnetEvent::Garbage(g),
            }),
            EventType::Delete => {
                let key = String::from_utf8_lossy(kv.key());
                let name = key.strip_prefix(&self.subnets_prefix()).unwrap_or(&key);
                Some(match subnet::parse_key(name) {
                    Ok(subnet) => SubnetEvent::Deleted {
                        subnet,
                        revision: kv.mod_revision(),
                    },
                    Err(_) => SubnetEvent::GarbageDeleted {
                        key: name.to_string(),
                        revision: kv.mod_revision(),
                    },
                })
            }
        }
    }
}
