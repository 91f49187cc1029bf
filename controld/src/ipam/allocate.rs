//! ADD: which pool, which range, which address; claiming a block when this
//! host holds none with room.

use ipnet::Ipv4Net;
use tracing::{info, warn};

use super::alloc::{Allocation, Range};
use super::block::{self, BlockValue};
use super::pool::{PoolSpec, DEFAULT_POOL};
use super::standing::PoolUsage;
use super::task::{now_unix, Task};
use super::{AllocateArgs, IpamError};
use crate::etcd::kv::Written;
use crate::model::subnet;

/// Where an address comes from.
enum Source {
    Default,
    Named(PoolSpec),
}

/// How many blocks one ADD tries to claim before giving up (others won the race).
const CLAIM_TRIES: usize = 8;

impl Task {
    /// The attachment's allocation: the one it has (true), or a new one
    /// (false; the caller journals it).
    pub(super) async fn allocate(
        &mut self,
        args: AllocateArgs,
    ) -> Result<(Allocation, bool), IpamError> {
        let att = args
            .attachment
            .clone()
            .filter(|a| !a.container_id.is_empty() && !a.ifname.is_empty())
            .ok_or_else(|| IpamError::BadRequest("container ID and ifname are required".into()))?;
        if let Some(a) = self.allocs.get(&att) {
            return Ok((a.clone(), true));
        }
        if let Err(e) = &self.journal {
            return Err(IpamError::Store(e.clone()));
        }
        let view = self.view.borrow().clone();
        let Some(subnet) = view.subnet else {
            return Err(IpamError::NoLease { phase: view.phase });
        };
        if !self.pools_listed || !self.blocks_listed {
            return Err(IpamError::NoLease {
                phase: "reading pools and blocks",
            });
        }
        let (pool, range) = match self.source(&args)? {
            Source::Default => {
                let r = Range::host_subnet(subnet);
                match self.allocs.next_free(&r) {
                    Some(a) => ((DEFAULT_POOL.to_string(), a), r),
                    None => {
                        return Err(IpamError::DefaultFull {
                            subnet,
                            size: r.size(),
                        })
                    }
                }
            }
            Source::Named(spec) => {
                let r = self.range_in(&spec, view.lease_id).await?;
                let a = self
                    .allocs
                    .next_free(&r)
                    .expect("range_in returns a range with room");
                ((spec.name.clone(), a), r)
            }
        };
        let (pool, address) = pool;
        let a = Allocation {
            attachment: att,
            address,
            pool,
            block: range.block,
            network: args.network,
            pod_namespace: args.pod_namespace,
            pod_name: args.pod_name,
            netns: args.netns,
            allocated_at_unix: now_unix(),
        };
        self.allocs.insert(a.clone());
        self.empty_since.remove(&range.block);
        info!(container = %a.attachment, address = %a.address, pool = %a.pool, block = %a.block,
            namespace = %a.pod_namespace, pod = %a.pod_name, "allocated");
        Ok((a, false))
    }

    /// The pod's pool: its namespace's, else the plugin config's, else the default.
    fn source(&self, args: &AllocateArgs) -> Result<Source, IpamError> {
        if !args.pod_namespace.is_empty() {
            if let Some(e) = self.pools.get(&args.pod_namespace) {
                return match &e.spec {
                    Some(s) => Ok(Source::Named(s.clone())),
                    None => Err(IpamError::BrokenPool {
                        pool: args.pod_namespace.clone(),
                        why: e.error.clone().unwrap_or_default(),
                    }),
                };
            }
        }
        if args.pool.is_empty() || args.pool == DEFAULT_POOL {
            return Ok(Source::Default);
        }
        match self.pools.get(&args.pool) {
            Some(e) => match &e.spec {
                Some(s) => Ok(Source::Named(s.clone())),
                None => Err(IpamError::BrokenPool {
                    pool: args.pool.clone(),
                    why: e.error.clone().unwrap_or_default(),
                }),
            },
            None => Err(IpamError::UnknownPool {
                pool: args.pool.clone(),
                by: "the CNI config's \"pool\"",
            }),
        }
    }

    /// A block of `spec` this host holds with a free address; claims one
    /// when none has room.
    async fn range_in(&mut self, spec: &PoolSpec, lease_id: i64) -> Result<Range, IpamError> {
        let me = self
            .my_ip()
            .ok_or(IpamError::NoLease { phase: "starting" })?;
        // A block of the pool outside its subnets now (an edit in etcd
        // removed one) hands out nothing and does not count against the
        // limit; it is given back once empty (tend).
        let held: Vec<Ipv4Net> = self
            .blocks
            .held(&spec.name, me)
            .map(|b| b.net)
            .filter(|net| spec.contains(*net))
            .collect();
        for net in &held {
            let r = Range::block(*net);
            if self.allocs.next_free(&r).is_some() {
                return Ok(r);
            }
        }
        if held.len() >= spec.max_blocks_per_host as usize {
            return Err(IpamError::MaxBlocks {
                pool: spec.name.clone(),
                max: spec.max_blocks_per_host,
                usage: PoolUsage::of(spec, &self.blocks, &self.allocs, me),
            });
        }
        let net = self.claim(spec, me, lease_id).await?;
        Ok(Range::block(net))
    }

    /// Claims the first free block of `spec` by create-if-absent; a block
    /// another host took first is read back and the next one tried.
    async fn claim(
        &mut self,
        spec: &PoolSpec,
        me: std::net::Ipv4Addr,
        lease_id: i64,
    ) -> Result<Ipv4Net, IpamError> {
        let reg = self.reg()?;
        let prefix = reg.blocks_prefix();
        let mut tried = Vec::new();
        for _ in 0..CLAIM_TRIES {
            let Some(net) = self.blocks.free_block(spec, &tried) else {
                break;
            };
            let name = subnet::key_name(net);
            let value = BlockValue {
                pool: spec.name.clone(),
                public_ip: me,
            };
            let claim = |source| IpamError::Claim {
                pool: spec.name.clone(),
                source,
            };
            match reg
                .create_if_absent(format!("{prefix}{name}"), value.to_json(), lease_id)
                .await
                .map_err(claim)?
            {
                Written::At(rev) => {
                    self.blocks.put(block::Block {
                        net,
                        pool: value.pool,
                        public_ip: me,
                        lease_id,
                        mod_revision: rev,
                        create_revision: rev,
                    });
                    info!(block = %net, pool = %spec.name, lease = format!("{lease_id:x}"), "claimed a block");
                    self.blocks_changed();
                    return Ok(net);
                }
                Written::Conflict => {
                    warn!(block = %net, pool = %spec.name, "another host claimed the block first; trying the next");
                    tried.push(net);
                    if let Ok(Some(kv)) = reg.get_raw(&prefix, &name).await {
                        if let Ok(b) = block::decode(
                            &kv.name,
                            &kv.value,
                            kv.lease,
                            kv.mod_revision,
                            kv.create_revision,
                        ) {
                            self.blocks.put(b);
                        }
                    }
                }
            }
        }
        Err(IpamError::NoFreeBlock {
            pool: spec.name.clone(),
            usage: PoolUsage::of(spec, &self.blocks, &self.allocs, me),
        })
    }
}
