//! STATUS: whether pods can get addresses now. Anything else than controld
//! answering ready is code 50 with the reason.

use crate::config::NetConf;
use crate::error::{CniError, NOT_AVAILABLE};

pub async fn run(conf: &NetConf) -> Result<(), CniError> {
    let unavailable = |e: CniError| CniError::new(NOT_AVAILABLE, e.msg).with_details(e.details);
    let mut ipam = super::ipam(conf).await.map_err(unavailable)?;
    let status = ipam
        .status()
        .await
        .map_err(|e| unavailable(super::cni(&e)))?;
    if status.ready {
        return Ok(());
    }
    let reason = if status.reason.is_empty() {
        "kolach-controld is not ready to hand out addresses".to_string()
    } else {
        status.reason
    };
    Err(CniError::new(NOT_AVAILABLE, reason))
}
