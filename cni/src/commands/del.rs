//! DEL: release at controld, remove the veth. Unknown or half-made things are
//! fine. The links go even when controld is away; the answer is then "try
//! again later" (code 11), so the runtime comes back and the address is freed.

use kolach_proto::pod;
use tracing::{debug, warn};

use crate::config::{Env, NetConf};
use crate::error::{self, CniError};
use crate::wire::{self, Netns, WireError};

pub async fn run(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    let attachment = env.attachment();
    let released = match super::ipam(conf).await {
        Ok(mut ipam) => ipam.release(&attachment).await.map_err(|e| super::cni(&e)),
        Err(e) => Err(e),
    };
    match &released {
        Ok(r) => {
            debug!(container = %env.container_id, ifname = %env.ifname, released = r, "release")
        }
        Err(e) => warn!(error = %e, "release failed; removing the links anyway"),
    }

    let mut wire_errors = Vec::new();
    let ns = if env.netns.is_empty() {
        None
    } else {
        match Netns::open(&env.netns) {
            Ok(ns) => Some(ns),
            Err(WireError::NoNetns { .. }) => None,
            Err(e) => {
                wire_errors.push(e);
                None
            }
        }
    };
    let host_end = pod::host_end(&env.container_id, &env.ifname);
    wire_errors.extend(wire::del(&host_end, &env.ifname, ns.as_ref()).await);
    let wire_msg = wire_errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");

    match released {
        Err(mut e) => {
            if !wire_msg.is_empty() {
                e.details = format!("removing the links failed too: {wire_msg}");
            }
            Err(e)
        }
        Ok(_) if !wire_errors.is_empty() => Err(CniError::new(error::KERNEL, wire_msg)),
        Ok(_) => Ok(()),
    }
}
