//! Keys other than subnets, read and written the same careful way: whole
//! listings under a prefix, watches from a revision, and writes that are
//! transactions on the key's create or mod revision, never blind puts.
//! Pools (`<prefix>/pools/`) and blocks (`<prefix>/blocks/`) use these.

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};

use super::{EtcdError, Registry};

/// One key under a prefix: `name` is the part after the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawKv {
    pub name: String,
    pub value: Vec<u8>,
    pub lease: i64,
    pub mod_revision: i64,
    pub create_revision: i64,
}

/// Every key under a prefix, read at `revision`.
#[derive(Debug, Clone, Default)]
pub struct RawListing {
    pub revision: i64,
    pub kvs: Vec<RawKv>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEvent {
    Put(RawKv),
    Deleted { name: String, revision: i64 },
}

impl RawEvent {
    pub fn revision(&self) -> i64 {
        match self {
            RawEvent::Put(kv) => kv.mod_revision,
            RawEvent::Deleted { revision, .. } => *revision,
        }
    }
}

fn raw(prefix: &str, kv: &etcd_client::KeyValue) -> RawKv {
    let key = String::from_utf8_lossy(kv.key());
    RawKv {
        name: key.strip_prefix(prefix).unwrap_or(&key).to_string(),
        value: kv.value().to_vec(),
        lease: kv.lease(),
        mod_revision: kv.mod_revision(),
        create_revision: kv.create_revision(),
    }
}

/// What a conditional write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Done, at this revision.
    At(i64),
    /// The key was not as expected (exists, changed or gone); nothing written.
    Conflict,
}

impl Registry {
    pub async fn list_prefix(&self, prefix: &str) -> Result<RawListing, EtcdError> {
        let (idx, client) = self.pick().await?;
        let mut kv = client.kv_client();
        let resp = self
            .call(idx, kv.get(prefix, Some(GetOptions::new().with_prefix())))
            .await?;
        Ok(RawListing {
            revision: resp.header().map_or(0, |h| h.revision()),
            kvs: resp.kvs().iter().map(|kv| raw(prefix, kv)).collect(),
        })
    }

    pub async fn get_raw(&self, prefix: &str, name: &str) -> Result<Option<RawKv>, EtcdError> {
        let (idx, client) = self.pick().await?;
        let mut kv = client.kv_client();
        let resp = self
            .call(idx, kv.get(format!("{prefix}{name}"), None))
            .await?;
        Ok(resp.kvs().first().map(|kv| raw(prefix, kv)))
    }

    /// Watches everything under `prefix` from `start` (inclusive).
    pub async fn watch_prefix(
        &self,
        prefix: &str,
        start: i64,
    ) -> Result<(usize, WatchStream), EtcdError> {
        let opts = WatchOptions::new().with_prefix().with_start_revision(start);
        self.watch(prefix.to_string(), opts).await
    }

    /// Decodes one watch event under `prefix`.
    pub fn raw_event(prefix: &str, ev: &etcd_client::Event) -> Option<RawEvent> {
        let kv = ev.kv()?;
        Some(match ev.event_type() {
            EventType::Put => RawEvent::Put(raw(prefix, kv)),
            EventType::Delete => {
                let r = raw(prefix, kv);
                RawEvent::Deleted {
                    name: r.name,
                    revision: r.mod_revision,
                }
            }
        })
    }

    /// Puts `key` only if it does not exist; attached to `lease` unless 0.
    pub async fn create_if_absent(
        &self,
        key: String,
        value: String,
        lease: i64,
    ) -> Result<Written, EtcdError> {
        let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, opts)]);
        self.txn(txn, lease).await
    }

    /// Puts `key` only if its mod revision is still `mod_revision`,
    /// attached to `lease` (0: none; pools are not attached to one).
    pub async fn put_if_unchanged(
        &self,
        key: String,
        value: String,
        mod_revision: i64,
        lease: i64,
    ) -> Result<Written, EtcdError> {
        let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then([TxnOp::put(key, value, opts)]);
        self.txn(txn, lease).await
    }

    /// Deletes `key` only if its mod revision is still `mod_revision`.
    pub async fn delete_if_unchanged(
        &self,
        key: String,
        mod_revision: i64,
    ) -> Result<Written, EtcdError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then([TxnOp::delete(key, None)]);
        self.txn(txn, 0).await
    }

    async fn txn(&self, txn: Txn, lease: i64) -> Result<Written, EtcdError> {
        let (idx, client) = self.pick().await?;
        let mut kv = client.kv_client();
        let resp = match self.call(idx, kv.txn(txn)).await {
            Err(EtcdError::Unreachable {
                source: etcd_client::Error::GRpcStatus(s),
                ..
            }) if s.code() == tonic::Code::NotFound && lease != 0 => {
                return Err(EtcdError::LeaseGone(lease))
            }
            other => other?,
        };
        Ok(if resp.succeeded() {
            Written::At(resp.header().map_or(0, |h| h.revision()))
        } else {
            Written::Conflict
        })
    }
}
