//! What a host's podman is set up with: the holder script, containers.conf
//! and storage.conf.

use super::*;
use crate::containers::cgroups::mount_script;
use crate::containers::holder::sh_quote;

/// The holder's bash script: mounts, then `ready` on stdout, then sleep as pid 1.
pub fn holder_script(cgroups: &[CgroupMount], cni_cache: &Path) -> String {
    let mut s = mount_script(cgroups);
    let cache = sh_quote(&cni_cache.display().to_string());
    s.push_str(&format!(
        "mount -t tmpfs -o mode=755 kolach-netns /run/netns\n\
         mount -t tmpfs -o mode=1777 kolach-shm /dev/shm\n\
         mkdir -p /var/lib/cni {cache}\n\
         mount --bind {cache} /var/lib/cni\n\
         echo ready\n\
         trap '' CHLD\n\
         exec sleep infinity\n"
    ));
    s
}

/// The contents of a host's containers.conf.
pub fn containers_conf(dir: &Path, cni_plugin_dirs: &[PathBuf]) -> String {
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let plugin_dirs: Vec<String> = cni_plugin_dirs.iter().map(|d| q(d)).collect();
    format!(
        r#"# written by kolach-testkit's podman harness
[containers]
# No CAP_SYS_RESOURCE here: podman's default (1048576) is above the hard limits.
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
network_config_dir = {cni}
cni_plugin_dirs = [{plugin_dirs}]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = {events}
runtime = "runc"
tmp_dir = {tmp}
volume_path = {volumes}
"#,
        cni = q(&dir.join("cni")),
        plugin_dirs = plugin_dirs.join(", "),
        events = q(&dir.join("events.log")),
        tmp = q(&dir.join("tmp")),
        volumes = q(&dir.join("volumes")),
    )
}

/// The contents of a host's storage.conf.
pub fn storage_conf(dir: &Path) -> String {
    format!(
        "# written by kolach-testkit's podman harness\n\
         [storage]\n\
         driver = \"vfs\"\n\
         runroot = {:?}\n\
         graphroot = {:?}\n",
        dir.join("runroot").display().to_string(),
        dir.join("graphroot").display().to_string(),
    )
}
