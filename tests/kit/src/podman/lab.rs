//! An underlay and n podman hosts, for the harness's own test.

use super::*;

/// Hosts on an underlay, each running podman: `<stem>-u` (bridge `br0`,
/// 198.18.0.254) and `<stem>-h<n>` (`eth0` 198.18.0.n, forwarding on), as in
/// [`crate::lab::topology`]. Dropping it shuts every [`PodmanHost`] down, then
/// removes the namespaces (every process left in them killed) and the dir;
/// also when the test panics.
pub struct PodmanLab {
    pub names: Names,
    /// `hosts[0]` is host 1.
    pub hosts: Vec<PodmanHost>,
    namespaces: Vec<String>,
    /// Last field: removed after the hosts' dirs inside it.
    dir: TempDir,
}

impl PodmanLab {
    /// `n` hosts named from `short` (`kt<pid>-<k><short>`), the busybox image
    /// (cached in [`default_cache_dir`]) imported on each.
    pub fn new(short: &str, n: u8) -> Result<PodmanLab> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the podman harness needs root: it creates network namespaces");
        }
        require_tools()?;
        let names = Names::new(crate::names::test_stem(short));
        let mut lab = PodmanLab {
            dir: TempDir::new(&format!("podman-{short}")),
            names,
            hosts: Vec::new(),
            namespaces: Vec::new(),
        };
        let u = lab.names.underlay();
        lab.namespaces.push(u.clone());
        topology::create_underlay(&u)?;
        let tar = busybox_image_tar(&default_cache_dir())?;
        for k in 1..=n {
            let ns = lab.names.host(k);
            lab.namespaces.push(ns.clone());
            topology::create_host(&u, &ns, k)?;
            let host = PodmanHost::start(&ns, &lab.dir.path().join(format!("h{k}")))?;
            lab.hosts.push(host);
            lab.hosts[usize::from(k) - 1].import_image(&tar, IMAGE)?;
        }
        Ok(lab)
    }

    /// Host `k` (1-based).
    pub fn host(&self, k: u8) -> &PodmanHost {
        &self.hosts[usize::from(k) - 1]
    }

    /// Host `k` (1-based), mutable.
    pub fn host_mut(&mut self, k: u8) -> &mut PodmanHost {
        &mut self.hosts[usize::from(k) - 1]
    }

    /// Underlay address of host `k`.
    pub fn host_ip(k: u8) -> Ipv4Addr {
        topology::host_ip(k)
    }

    /// The lab's dir (each host's under `h<k>`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PodmanLab {
    fn drop(&mut self) {
        for mut h in self.hosts.drain(..) {
            if let Err(e) = h.shutdown() {
                eprintln!("kolach-testkit: {e:#}");
            }
        }
        if let Err(e) = crate::lab::destroy_namespaces(&self.namespaces) {
            eprintln!("kolach-testkit: {e:#}");
        }
    }
}
