//! Watching a host's kernel for any change to kolach's objects while a test
//! does something that must change nothing (daemon restarts):
//! `ip -o monitor link route neigh` and `bridge monitor fdb` run in the
//! background, and every event line naming a kolach device or protocol 107
//! counts, deletions and re-adds of the same object included. What the kernel
//! does by itself on a kolach device (IPv6 link-local addresses and their
//! `proto kernel` routes once DAD ends) does not.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::traffic::background::Background;

/// How long the monitors get to subscribe before anything is done.
const SUBSCRIBE: Duration = Duration::from_millis(300);

pub struct KernelMonitor {
    ip: Background,
    bridge: Background,
}

/// The event lines that concern kolach's objects.
pub fn kolach_events(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.contains("kolach") || l.contains("proto 107"))
        .filter(|l| !(l.contains("proto kernel") || l.contains("inet6") || l.contains("fe80:")))
        .map(str::to_string)
        .collect()
}

impl KernelMonitor {
    /// Starts both monitors in `ns`, output under `dir` named after `tag`.
    pub fn start(ns: &str, dir: &Path, tag: &str) -> Result<KernelMonitor> {
        let ip = Background::spawn(
            ns,
            "ip",
            &["-o", "monitor", "link", "address", "route", "neigh"],
            &dir.join(format!("monitor-{tag}-ip.txt")),
        )?;
        let bridge = Background::spawn(
            ns,
            "bridge",
            &["monitor", "fdb"],
            &dir.join(format!("monitor-{tag}-bridge.txt")),
        )?;
        std::thread::sleep(SUBSCRIBE);
        Ok(KernelMonitor { ip, bridge })
    }

    /// Stops both; returns the kolach events they saw.
    pub fn stop(self) -> Result<Vec<String>> {
        let mut events = kolach_events(&self.ip.stop()?);
        events.extend(kolach_events(&self.bridge.stop()?));
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_kolach_events() {
        let text = "3: eth0    inet 198.18.0.1/24 scope global eth0\n\
            Deleted 10.50.3.0/24 via 10.50.3.0 dev kolach.1 proto 107 onlink \n\
            10.50.4.0/24 via 198.18.0.4 dev eth0 proto 107 \n\
            198.18.0.254 dev eth0 lladdr 02:00:00:00:00:01 REACHABLE\n\
            0e:6b:c6:12:00:03 dev kolach.1 dst 198.18.0.3 self permanent\n\
            local fe80::c6b:c6ff:fe12:1 dev kolach.1 table local proto kernel metric 0 pref medium\n\
            5: kolach.1    inet6 fe80::c6b:c6ff:fe12:1/64 scope link \\       valid_lft forever\n";
        let e = kolach_events(text);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("Deleted 10.50.3.0/24"));
    }
}
