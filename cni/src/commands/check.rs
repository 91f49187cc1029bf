//! CHECK: controld must know the attachment, and the kernel must show the
//! wiring ADD made; the first difference is the error (code 111).

use kolach_proto::pod;

use crate::config::{Env, NetConf};
use crate::error::{self, CniError};
use crate::wire::{self, view, Netns};

pub async fn run(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    let mut ipam = super::ipam(conf).await?;
    let address = ipam
        .check(&env.attachment())
        .await
        .map_err(|e| super::cni(&e))?;
    let ns = Netns::open(&env.netns).map_err(|e| CniError::from(&e))?;
    let host_end = pod::host_end(&env.container_id, &env.ifname);
    let (host, pod) = wire::observe(&host_end, &env.ifname, &ns)
        .await
        .map_err(|e| CniError::from(&e))?;
    let expected = view::Expected {
        host_end: &host_end,
        ifname: &env.ifname,
        netns: &env.netns,
        address,
    };
    view::check(&expected, &host, &pod).map_err(|m| CniError::new(error::CHECK_MISMATCH, m))
}
