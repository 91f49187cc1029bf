//! Pool writes from kolachctl: checked by the same rules the watch applies,
//! then written by transaction (create-if-absent, or compare the mod
//! revision read), so two edits never silently overwrite each other.

use tracing::info;

use super::pool::{PoolSpec, DEFAULT_MAX_BLOCKS_PER_HOST};
use super::report::PoolReport;
use super::task::Task;
use super::{IpamError, PoolEdit};
use crate::etcd::kv::Written;
use crate::etcd::EtcdError;

/// An etcd write's outcome: written at a revision, or `conflict` when the
/// key was not as read.
fn written(
    pool: &str,
    w: Result<Written, EtcdError>,
    conflict: impl FnOnce() -> IpamError,
) -> Result<i64, IpamError> {
    match w {
        Ok(Written::At(rev)) => Ok(rev),
        Ok(Written::Conflict) => Err(conflict()),
        Err(source) => Err(IpamError::PoolWrite {
            pool: pool.to_string(),
            source,
        }),
    }
}

impl Task {
    /// The raw value and mod revision of pool `name`, which must exist.
    fn existing(&self, name: &str) -> Result<(Vec<u8>, i64), IpamError> {
        self.pools
            .raw(name)
            .cloned()
            .ok_or_else(|| IpamError::UnknownPool {
                pool: name.to_string(),
                by: "the request",
            })
    }

    pub(super) async fn edit(&mut self, e: PoolEdit) -> Result<Option<PoolReport>, IpamError> {
        if !self.pools_listed {
            return Err(IpamError::NoLease {
                phase: "reading pools and blocks",
            });
        }
        let reg = self.reg()?;
        let prefix = reg.pools_prefix();
        match e {
            PoolEdit::Create {
                name,
                subnets,
                block_len,
                max_blocks_per_host,
            } => {
                let spec = PoolSpec::new(
                    &name,
                    subnets,
                    block_len,
                    max_blocks_per_host.unwrap_or(DEFAULT_MAX_BLOCKS_PER_HOST),
                )?;
                spec.check_against(self.pools.network(), self.pools.specs())?;
                if self.pools.raw(&name).is_some() {
                    return Err(IpamError::PoolExists { pool: name });
                }
                let json = spec.to_json();
                let w = reg
                    .create_if_absent(format!("{prefix}{name}"), json.clone(), 0)
                    .await;
                let rev = written(&name, w, || IpamError::PoolExists { pool: name.clone() })?;
                info!(pool = %name, value = %json, "pool created");
                self.pools.put(name.clone(), json.into_bytes(), rev);
                Ok(self.pool_report(&name))
            }
            PoolEdit::AddSubnet { name, subnet } => {
                let (raw, rev) = self.existing(&name)?;
                let old = PoolSpec::parse(&name, &raw).map_err(|e| IpamError::BrokenPool {
                    pool: name.clone(),
                    why: e.to_string(),
                })?;
                let mut subnets = old.subnets.clone();
                subnets.push(subnet);
                let spec =
                    PoolSpec::new(&name, subnets, Some(old.block_len), old.max_blocks_per_host)?;
                spec.check_against(self.pools.network(), self.pools.specs())?;
                let json = spec.to_json();
                let w = reg
                    .put_if_unchanged(format!("{prefix}{name}"), json.clone(), rev, 0)
                    .await;
                let rev = written(&name, w, || IpamError::Conflict { pool: name.clone() })?;
                info!(pool = %name, subnet = %subnet, "subnet added to pool");
                self.pools.put(name.clone(), json.into_bytes(), rev);
                Ok(self.pool_report(&name))
            }
            PoolEdit::Delete { name } => {
                let (_, rev) = self.existing(&name)?;
                let held: Vec<_> = self.blocks.of_pool(&name).collect();
                if let Some(first) = held.first() {
                    return Err(IpamError::PoolInUse {
                        pool: name.clone(),
                        held: held.len(),
                        first: first.net,
                        holder: first.public_ip,
                    });
                }
                let w = reg
                    .delete_if_unchanged(format!("{prefix}{name}"), rev)
                    .await;
                written(&name, w, || IpamError::Conflict { pool: name.clone() })?;
                info!(pool = %name, "pool deleted");
                self.pools.delete(&name);
                Ok(None)
            }
        }
    }
}
