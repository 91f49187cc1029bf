//! Names of everything a lab creates, derived from one stem.
//!
//! Test labs use `kt<pid>-<n><short>`: the pid keeps concurrently running test
//! processes apart, the counter keeps tests of one process apart, and the `kt`
//! prefix plus the pid lets a later run sweep namespaces whose owner died
//! ([`stale_owner`]). Interface names never include the stem: every veth is
//! created inside a namespace of the lab, so `eth0`, `h1`, `kbr0` cannot collide.

use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every test lab's names.
pub const TEST_PREFIX: &str = "kt";

/// Linux's limit on interface names (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh stem for a test lab: `kt<pid>-<n><short>`, `short` cut to 8 chars.
pub fn test_stem(short: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let short: String = short
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    format!("{TEST_PREFIX}{}-{n}{short}", std::process::id())
}

/// The namespace names of a lab with stem `stem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub stem: String,
}

impl Names {
    pub fn new(stem: impl Into<String>) -> Self {
        Names { stem: stem.into() }
    }
    /// The underlay: the bridge, etcd.
    pub fn underlay(&self) -> String {
        format!("{}-u", self.stem)
    }
    /// Host `n` (1-based).
    pub fn host(&self, n: u8) -> String {
        format!("{}-h{n}", self.stem)
    }
    /// The pod of host `n`.
    pub fn pod(&self, n: u8) -> String {
        format!("{}-p{n}", self.stem)
    }
    /// An extra namespace on the underlay that is no member of the mesh.
    pub fn outsider(&self, tag: &str) -> String {
        format!("{}-x{tag}", self.stem)
    }
    /// Whether a namespace name belongs to this lab.
    pub fn owns(&self, ns: &str) -> bool {
        ns.strip_prefix(&self.stem)
            .is_some_and(|rest| rest.starts_with('-'))
    }
}

/// The underlay-side veth of host `n` (inside the underlay namespace).
pub fn uplink_ifname(n: u8) -> String {
    let name = format!("h{n}");
    debug_assert!(name.len() <= IFNAME_MAX);
    name
}

/// Prefix of the namespaces and temp dirs of kolach-dataplaned's own kernel
/// tests, and of every single-namespace test ([`crate::netns::Netns`]):
/// `kdp-<tag>-<pid>`.
pub const DATAPLANED_TEST_PREFIX: &str = "kdp-";

/// The name of a single test namespace: `kdp-<tag>-<pid>`.
pub fn single_ns(tag: &str) -> String {
    format!("{DATAPLANED_TEST_PREFIX}{tag}-{}", std::process::id())
}

/// For a test lab namespace `kt<pid>-...` (or a dataplaned test's
/// `kdp-<tag>-<pid>`), the pid of the process that made it.
pub fn owner_pid(ns: &str) -> Option<u32> {
    if let Some(rest) = ns.strip_prefix(DATAPLANED_TEST_PREFIX) {
        let (_, pid) = rest.rsplit_once('-')?;
        return pid.parse().ok();
    }
    let rest = ns.strip_prefix(TEST_PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// Whether `ns` is a test lab namespace whose creating process is gone.
pub fn stale_owner(ns: &str, alive: impl Fn(u32) -> bool) -> bool {
    owner_pid(ns).is_some_and(|pid| !alive(pid))
}

/// Whether a process exists and has not exited (a zombie counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_are_unique_and_parse_back() {
        let a = test_stem("mesh-3!");
        let b = test_stem("mesh-3!");
        assert_ne!(a, b);
        assert!(a.starts_with("kt") && a.ends_with("mesh3"), "{a}");
        assert_eq!(owner_pid(&Names::new(&a).host(1)), Some(std::process::id()));
    }

    #[test]
    fn names_and_ownership() {
        let n = Names::new("kt42-0ab");
        assert_eq!(n.underlay(), "kt42-0ab-u");
        assert_eq!(n.host(3), "kt42-0ab-h3");
        assert_eq!(n.pod(2), "kt42-0ab-p2");
        assert!(n.owns("kt42-0ab-x1"));
        assert!(!n.owns("kt42-0abc-h1"));
        assert!(!n.owns("kt42-0ab"));
    }

    #[test]
    fn stale_detection() {
        assert!(stale_owner("kt42-0ab-u", |_| false));
        assert!(!stale_owner("kt42-0ab-u", |p| p == 42));
        assert!(!stale_owner("kdemo-u", |_| false));
        assert!(!stale_owner("ktx-1", |_| false));
        // kolach-dataplaned's kernel tests: kdp-<tag>-<pid>.
        assert_eq!(owner_pid("kdp-tunoff-8573"), Some(8573));
        assert!(stale_owner("kdp-tun-reopen-99", |p| p != 99));
        assert!(!stale_owner("kdp-tunoff-8573", |p| p == 8573));
        assert!(!stale_owner("kdp-tunoff", |_| false));
        assert_eq!(owner_pid(&single_ns("tun-a")), Some(std::process::id()));
        assert!(pid_alive(std::process::id()));
    }
}
