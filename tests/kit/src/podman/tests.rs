use super::image::fnv1a;
use super::*;
use crate::containers::holder::sh_quote;

const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd,release_agent=/x
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
45 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
";

#[test]
fn cgroup_mounts_of_a_hybrid_machine() {
    let m = parse_cgroup_mounts(MOUNTINFO);
    let got: Vec<(&str, &str, &str)> = m
        .iter()
        .map(|m| {
            (
                m.mount_point.as_str(),
                m.fstype.as_str(),
                m.options.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("/sys/fs/cgroup", "tmpfs", "mode=755"),
            ("/sys/fs/cgroup/cpu", "cgroup", "cpu"),
            (
                "/sys/fs/cgroup/systemd",
                "cgroup",
                "none,xattr,name=systemd"
            ),
            ("/sys/fs/cgroup/unified", "cgroup2", ""),
        ]
    );
    let script = holder_script(&m, Path::new("/d/cni-cache"));
    assert!(script.contains("mount -t cgroup -o 'cpu' kolach-cgroup '/sys/fs/cgroup/cpu'"));
    assert!(script.contains("mount -t cgroup2 kolach-cgroup2 '/sys/fs/cgroup/unified'"));
    assert!(script.contains("mount --bind '/d/cni-cache' /var/lib/cni"));
    // Orphans are reaped by the kernel only once the mounts' exit codes are read.
    assert!(script.find("trap '' CHLD") > script.find("echo ready"));
}

#[test]
fn cgroup2_only_machine() {
    let m = parse_cgroup_mounts(
        "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
    );
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].options, "nsdelegate,memory_recursiveprot");
}

#[test]
fn configs_name_the_host_dirs() {
    let d = Path::new("/x/h1");
    let c = containers_conf(d, &[d.join("plugins"), PathBuf::from(SYSTEM_CNI_DIR)]);
    assert!(c.contains(r#"network_backend = "cni""#));
    assert!(c.contains(r#"cni_plugin_dirs = ["/x/h1/plugins", "/usr/lib/cni"]"#));
    assert!(c.contains(r#"network_config_dir = "/x/h1/cni""#));
    assert!(c.contains(r#"runtime = "runc""#));
    let s = storage_conf(d);
    assert!(s.contains(r#"graphroot = "/x/h1/graphroot""#));
    assert!(s.contains(r#"driver = "vfs""#));
}

#[test]
fn quoting() {
    assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
}
