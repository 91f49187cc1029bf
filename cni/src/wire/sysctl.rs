//! The host-side sysctls of a pod's wiring: the host end answers ARP for
//! 169.254.1.1 at once (proxy_arp, no proxy delay), and the host forwards.
//! Written through /proc/sys, which shows the namespace of the writing thread.

use super::WireError;

pub fn proxy_arp(dev: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{dev}/proxy_arp")
}

pub fn proxy_delay(dev: &str) -> String {
    format!("/proc/sys/net/ipv4/neigh/{dev}/proxy_delay")
}

pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Writes `value` unless the file already holds it.
pub fn ensure(path: &str, value: &str) -> Result<(), WireError> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|source| WireError::Sysctl {
        path: path.to_string(),
        source,
    })
}

/// proxy_arp=1 and proxy_delay=0 on the host end.
pub fn host_end(dev: &str) -> Result<(), WireError> {
    ensure(&proxy_arp(dev), "1")?;
    ensure(&proxy_delay(dev), "0")
}

/// IPv4 forwarding on, as the reference bridge and ptp plugins do.
pub fn ip_forward() -> Result<(), WireError> {
    ensure(IP_FORWARD, "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            proxy_arp("kolabc"),
            "/proc/sys/net/ipv4/conf/kolabc/proxy_arp"
        );
        assert_eq!(
            proxy_delay("kolabc"),
            "/proc/sys/net/ipv4/neigh/kolabc/proxy_delay"
        );
    }

    #[test]
    fn ensure_writes_only_when_different() {
        let dir = std::env::temp_dir().join(format!("kolach-cni-sysctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("v");
        let p = f.to_str().unwrap();
        std::fs::write(&f, "0\n").unwrap();
        ensure(p, "1").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "1");
        std::fs::write(&f, "1\n").unwrap();
        ensure(p, "1").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "1\n", "left alone");
        let e = ensure(dir.join("no/such").to_str().unwrap(), "1").unwrap_err();
        assert!(e.to_string().contains("no/such"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
