//! ADD: an address from controld, then the veth and routes. A failure after
//! Allocate undoes what this call made: the veth (wire::add does) and, when
//! the address is new, the allocation. A repeated ADD whose wiring fails
//! keeps the earlier address; the runtime's DEL after the failure frees it.

use kolach_proto::pod;
use tracing::{info, warn};

use crate::client::AllocateArgs;
use crate::config::{Env, NetConf};
use crate::error::CniError;
use crate::result::{AddResult, Interface};
use crate::wire::{self, Netns, Wiring};

pub async fn run(conf: &NetConf, env: &Env) -> Result<String, CniError> {
    // Before Allocate: a namespace that is not there must not cost an address.
    let ns = Netns::open(&env.netns).map_err(|e| CniError::from(&e))?;
    let mut ipam = super::ipam(conf).await?;
    let attachment = env.attachment();
    let alloc = ipam
        .allocate(
            &attachment,
            AllocateArgs {
                network: conf.name.clone(),
                pod_namespace: env.pod.namespace.clone(),
                pod_name: env.pod.name.clone(),
                pool: conf.pool.clone(),
                netns: env.netns.clone(),
            },
        )
        .await
        .map_err(|e| super::cni(&e))?;
    info!(
        container = %env.container_id,
        ifname = %env.ifname,
        address = %alloc.address,
        existing = alloc.existing,
        "allocated"
    );
    let mtu = conf.mtu.or((alloc.mtu != 0).then_some(alloc.mtu));
    let host_end = pod::host_end(&env.container_id, &env.ifname);
    let wiring = Wiring {
        host_end: &host_end,
        ifname: &env.ifname,
        address: alloc.address,
        mtu,
    };
    let wired = match wire::add(&wiring, &ns).await {
        Ok(w) => w,
        Err(e) => {
            let mut err = CniError::from(&e);
            if !alloc.existing {
                if let Err(re) = ipam.release(&attachment).await {
                    warn!(error = %re, "cannot release the address after a failed ADD");
                    err.details = format!("releasing {} failed too: {re}", alloc.address);
                }
            }
            return Err(err);
        }
    };
    let mac = |l: &wire::view::Link| l.mac.unwrap_or(kolach_proto::Mac([0; 6]));
    let result = AddResult {
        host: Interface {
            name: wired.host.name.clone(),
            mac: mac(&wired.host),
            mtu: wired.host.mtu,
            sandbox: None,
        },
        pod: Interface {
            name: env.ifname.clone(),
            mac: mac(&wired.pod),
            mtu: wired.pod.mtu,
            sandbox: Some(env.netns.clone()),
        },
        address: alloc.address,
    };
    Ok(result.to_json(conf.version))
}
