//! `kolach.ipam.v1.Ipam` on controld.sock (root only, by the gate layer):
//! converts the wire's typed messages at the edge and asks the IPAM task.
//! Errors map to gRPC codes in one place, [`status`].

use std::collections::HashSet;

use kolach_proto::ipam::ipam_server::Ipam;
use kolach_proto::ipam::{self as pb};
use tonic::{Code, Request, Response, Status};
use tracing::instrument;

use crate::ipam::standing::{Trouble, Troubled};
use crate::ipam::{
    AllocateArgs, Allocation, Attachment, BlockReport, IpamError, IpamHandle, PoolEdit, PoolReport,
};

pub struct IpamApi {
    pub ipam: IpamHandle,
}

/// The one place an [`IpamError`] becomes a gRPC status.
pub fn status(e: &IpamError) -> Status {
    let code = match e {
        IpamError::NoLease { .. } | IpamError::Claim { .. } | IpamError::PoolWrite { .. } => {
            Code::Unavailable
        }
        IpamError::Stopping => Code::Unavailable,
        IpamError::DefaultFull { .. }
        | IpamError::NoFreeBlock { .. }
        | IpamError::MaxBlocks { .. } => Code::ResourceExhausted,
        IpamError::UnknownPool { .. } | IpamError::NotFound(_) => Code::NotFound,
        IpamError::Pool(_) | IpamError::BadRequest(_) => Code::InvalidArgument,
        IpamError::BrokenPool { .. } | IpamError::PoolInUse { .. } => Code::FailedPrecondition,
        IpamError::PoolExists { .. } => Code::AlreadyExists,
        IpamError::Conflict { .. } => Code::Aborted,
        IpamError::Store(_) | IpamError::Journal(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
}

fn attachment(a: Option<pb::Attachment>) -> Result<Attachment, Status> {
    let a = a.ok_or_else(|| Status::invalid_argument("attachment is missing"))?;
    if a.container_id.is_empty() || a.ifname.is_empty() {
        return Err(Status::invalid_argument(
            "attachment needs a container ID and an ifname",
        ));
    }
    Ok(Attachment {
        container_id: a.container_id,
        ifname: a.ifname,
    })
}

fn to_pb(a: &Allocation) -> pb::Allocation {
    pb::Allocation {
        attachment: Some(pb::Attachment {
            container_id: a.attachment.container_id.clone(),
            ifname: a.attachment.ifname.clone(),
        }),
        address: Some(a.address.into()),
        pool: a.pool.clone(),
        block: Some(a.block.into()),
        network: a.network.clone(),
        pod_namespace: a.pod_namespace.clone(),
        pod_name: a.pod_name.clone(),
        netns: a.netns.clone(),
        allocated_at_unix: a.allocated_at_unix,
    }
}

fn pool_pb(p: &PoolReport) -> pb::Pool {
    pb::Pool {
        name: p.name.clone(),
        subnets: p.subnets.iter().map(|s| (*s).into()).collect(),
        block_len: u32::from(p.block_len),
        max_blocks_per_host: p.max_blocks_per_host,
        is_default: p.is_default,
        error: p.error.clone(),
        blocks_total: u32::try_from(p.blocks_total).unwrap_or(u32::MAX),
        blocks_held: p.blocks_held,
        blocks_mine: p.blocks_mine,
        addresses_in_use: p.addresses_in_use,
    }
}

fn trouble_pb(t: Option<Trouble>) -> pb::BlockTrouble {
    match t {
        None => pb::BlockTrouble::None,
        Some(Trouble::Lost { .. }) => pb::BlockTrouble::Lost,
        Some(Trouble::OutsidePool) => pb::BlockTrouble::OutsidePool,
        Some(Trouble::PoolGone) => pb::BlockTrouble::PoolGone,
    }
}

fn troubled_pb(t: &Troubled) -> pb::TroubledBlock {
    pb::TroubledBlock {
        trouble: trouble_pb(Some(t.trouble)).into(),
        block: Some(t.block.into()),
        pool: t.pool.clone(),
        holder: match t.trouble {
            Trouble::Lost { holder } => Some(holder.into()),
            _ => None,
        },
        allocations: t.allocations.iter().map(to_pb).collect(),
    }
}

fn block_pb(b: &BlockReport) -> pb::Block {
    pb::Block {
        trouble: trouble_pb(b.trouble).into(),
        block: Some(b.block.net.into()),
        pool: b.block.pool.clone(),
        public_ip: Some(b.block.public_ip.into()),
        is_self: b.is_self,
        in_use: b.in_use,
        size: b.size,
        empty_since_unix: b.empty_since_unix,
    }
}

fn subnet(
    n: Option<kolach_proto::netpb::IpNetwork>,
    field: &str,
) -> Result<ipnet::Ipv4Net, Status> {
    let n = n.ok_or_else(|| Status::invalid_argument(format!("{field} is missing")))?;
    ipnet::Ipv4Net::try_from(&n).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn answer<T, U>(r: Result<T, IpamError>, f: impl FnOnce(T) -> U) -> Result<Response<U>, Status> {
    r.map(|v| Response::new(f(v))).map_err(|e| status(&e))
}

#[tonic::async_trait]
impl Ipam for IpamApi {
    #[instrument(skip_all)]
    async fn allocate(
        &self,
        req: Request<pb::AllocateRequest>,
    ) -> Result<Response<pb::AllocateReply>, Status> {
        let r = req.into_inner();
        let args = AllocateArgs {
            attachment: Some(attachment(r.attachment)?),
            network: r.network,
            pod_namespace: r.pod_namespace,
            pod_name: r.pod_name,
            pool: r.pool,
            netns: r.netns,
        };
        answer(self.ipam.allocate(args).await, |(a, existing, mtu)| {
            pb::AllocateReply {
                allocation: Some(to_pb(&a)),
                existing,
                mtu,
            }
        })
    }

    #[instrument(skip_all)]
    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseReply>, Status> {
        let att = attachment(req.into_inner().attachment)?;
        answer(self.ipam.release(att).await, |a| pb::ReleaseReply {
            released: a.is_some(),
            allocation: a.as_ref().map(to_pb),
        })
    }

    #[instrument(skip_all)]
    async fn check(
        &self,
        req: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::Allocation>, Status> {
        let att = attachment(req.into_inner().attachment)?;
        answer(self.ipam.check(att).await, |a| to_pb(&a))
    }

    #[instrument(skip_all)]
    async fn gc(&self, req: Request<pb::GcRequest>) -> Result<Response<pb::GcReply>, Status> {
        let r = req.into_inner();
        let valid: HashSet<Attachment> = r
            .valid
            .into_iter()
            .map(|a| Attachment {
                container_id: a.container_id,
                ifname: a.ifname,
            })
            .collect();
        answer(self.ipam.gc(r.network, valid).await, |freed| pb::GcReply {
            freed: freed.iter().map(to_pb).collect(),
        })
    }

    #[instrument(skip_all)]
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::IpamStatus>, Status> {
        answer(self.ipam.status().await, |s| pb::IpamStatus {
            ready: s.ready,
            reason: s.reason,
            default_pool: s.default_pool.map(Into::into),
            pools: s.pools,
            blocks_held: s.blocks_held,
            addresses_in_use: s.addresses_in_use,
            mtu: s.mtu,
            troubled_blocks: s.troubled.iter().map(troubled_pb).collect(),
        })
    }

    #[instrument(skip_all)]
    async fn addresses(
        &self,
        _: Request<pb::AddressesRequest>,
    ) -> Result<Response<pb::AddressesReply>, Status> {
        answer(self.ipam.addresses().await, |all| pb::AddressesReply {
            allocations: all.iter().map(to_pb).collect(),
        })
    }

    #[instrument(skip_all)]
    async fn pools(
        &self,
        _: Request<pb::PoolsRequest>,
    ) -> Result<Response<pb::PoolsReply>, Status> {
        answer(self.ipam.pools().await, |all| pb::PoolsReply {
            pools: all.iter().map(pool_pb).collect(),
        })
    }

    #[instrument(skip_all)]
    async fn blocks(
        &self,
        _: Request<pb::BlocksRequest>,
    ) -> Result<Response<pb::BlocksReply>, Status> {
        answer(self.ipam.blocks().await, |(revision, all)| {
            pb::BlocksReply {
                revision,
                blocks: all.iter().map(block_pb).collect(),
            }
        })
    }

    #[instrument(skip_all)]
    async fn create_pool(
        &self,
        req: Request<pb::CreatePoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let r = req.into_inner();
        let subnets = r
            .subnets
            .into_iter()
            .map(|s| subnet(Some(s), "subnets"))
            .collect::<Result<Vec<_>, _>>()?;
        let block_len = match r.block_len {
            0 => None,
            n => Some(u8::try_from(n).unwrap_or(u8::MAX)),
        };
        let edit = PoolEdit::Create {
            name: r.name,
            subnets,
            block_len,
            max_blocks_per_host: (r.max_blocks_per_host != 0).then_some(r.max_blocks_per_host),
        };
        answer(self.ipam.edit(edit).await, |p| {
            p.as_ref().map(pool_pb).unwrap_or_default()
        })
    }

    #[instrument(skip_all)]
    async fn add_pool_subnet(
        &self,
        req: Request<pb::AddPoolSubnetRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let r = req.into_inner();
        let edit = PoolEdit::AddSubnet {
            name: r.name,
            subnet: subnet(r.subnet, "subnet")?,
        };
        answer(self.ipam.edit(edit).await, |p| {
            p.as_ref().map(pool_pb).unwrap_or_default()
        })
    }

    #[instrument(skip_all)]
    async fn delete_pool(
        &self,
        req: Request<pb::DeletePoolRequest>,
    ) -> Result<Response<pb::DeletePoolReply>, Status> {
        let edit = PoolEdit::Delete {
            name: req.into_inner().name,
        };
        answer(self.ipam.edit(edit).await, |_| pb::DeletePoolReply {})
    }
}
