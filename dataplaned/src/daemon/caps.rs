//! Start-up checks that turn a missing privilege into a sentence.

use std::path::Path;

const CAP_NET_ADMIN: u32 = 12;

/// Whether a `/proc/<pid>/status` text shows CAP_NET_ADMIN in the effective set.
/// None when the line is missing or unreadable.
pub fn has_net_admin(proc_status: &str) -> Option<bool> {
    let hex = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let bits = u64::from_str_radix(hex, 16).ok()?;
    Some(bits & (1 << CAP_NET_ADMIN) != 0)
}

#[derive(Debug, thiserror::Error)]
#[error("kolach-dataplaned needs CAP_NET_ADMIN: run it as root or with AmbientCapabilities=CAP_NET_ADMIN")]
pub struct MissingNetAdmin;

/// Fails without CAP_NET_ADMIN; warns when the TUN device node is missing
/// (only the udp backend needs it, and snapshots will say so).
pub fn preflight() -> Result<(), MissingNetAdmin> {
    if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
        if has_net_admin(&s) == Some(false) {
            return Err(MissingNetAdmin);
        }
    }
    if !Path::new(crate::datapath::tun::TUN_PATH).exists() {
        tracing::warn!(
            path = crate::datapath::tun::TUN_PATH,
            "no TUN device node: the udp backend cannot work (modprobe tun, or give the container /dev/net/tun)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff() {
        let root = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(has_net_admin(root), Some(true));
        let user = "CapEff:\t0000000000000000\n";
        assert_eq!(has_net_admin(user), Some(false));
        let only_net_admin = "CapEff:\t0000000000001000\n";
        assert_eq!(has_net_admin(only_net_admin), Some(true));
        assert_eq!(has_net_admin("nothing"), None);
    }
}
