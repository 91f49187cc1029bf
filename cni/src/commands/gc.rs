//! GC: controld frees every attachment of this network that the runtime no
//! longer lists; their host ends go too (a pod end went with its namespace,
//! or goes with the host end).

use kolach_proto::pod;
use tracing::info;

use crate::config::NetConf;
use crate::error::{self, CniError};
use crate::wire;

pub async fn run(conf: &NetConf) -> Result<(), CniError> {
    let mut ipam = super::ipam(conf).await?;
    let freed = ipam
        .gc(&conf.name, &conf.valid_attachments)
        .await
        .map_err(|e| super::cni(&e))?;
    let mut errors = Vec::new();
    for a in &freed {
        let host_end = pod::host_end(&a.container_id, &a.ifname);
        match wire::delete_host_end(&host_end).await {
            Ok(deleted) => {
                info!(container = %a.container_id, ifname = %a.ifname, %host_end, deleted, "collected")
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(error::KERNEL, errors.join("; ")))
    }
}
