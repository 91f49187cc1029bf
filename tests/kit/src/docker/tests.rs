use super::*;

const SUBNET_ENV: &str = "\
KOLACH_NETWORK=10.50.0.0/16
KOLACH_SUBNET=10.50.7.1/24
KOLACH_MTU=1472
KOLACH_IPMASQ=false
";

#[test]
fn the_readme_recipe_from_subnet_env() {
    let opts = DockerOpts::from_subnet_env(SUBNET_ENV).unwrap();
    assert_eq!(opts.bip, "10.50.7.1/24");
    assert_eq!(opts.mtu, 1472);
    assert!(opts.ip_masq && opts.fresh_forwarding);
    assert!(!opts.clone().without_ip_masq().ip_masq);
    assert!(DockerOpts::from_subnet_env("KOLACH_SUBNET=10.50.7.1/24\n").is_err());
}

#[test]
fn dockerd_flags_keep_everything_under_the_hosts_dir() {
    let opts = DockerOpts::from_subnet_env(SUBNET_ENV).unwrap();
    let args = dockerd_args(Path::new("/d/docker1"), "kt1-0x-h1", &opts);
    for want in [
        "--config-file=/d/docker1/daemon.json",
        "--data-root=/d/docker1/data",
        "--exec-root=/d/docker1/exec",
        "--pidfile=/d/docker1/docker.pid",
        "--host=unix:///d/docker1/docker.sock",
        "--exec-opt=native.cgroupdriver=cgroupfs",
        "--cgroup-parent=/kolach-docker/kt1-0x-h1",
        "--bip=10.50.7.1/24",
        "--mtu=1472",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--ip-masq")));
    let args = dockerd_args(Path::new("/d"), "h", &opts.without_ip_masq());
    assert!(args.iter().any(|a| a == "--ip-masq=false"));
}

#[test]
fn holder_script_masks_the_fixed_run_dirs_before_dockerd() {
    let cg = vec![CgroupMount {
        mount_point: "/sys/fs/cgroup/cpu".into(),
        fstype: "cgroup".into(),
        options: "cpu".into(),
    }];
    let s = holder_script(
        &cg,
        &["--bip=10.50.7.1/24".into()],
        Path::new("/d/dockerd.log"),
    );
    let pos = |needle: &str| {
        s.find(needle)
            .unwrap_or_else(|| panic!("{needle} not in {s}"))
    };
    assert!(pos("mount -t cgroup -o 'cpu'") < pos("echo ready"));
    assert!(pos("kolach-containerd /run/containerd") < pos("echo ready"));
    assert!(pos("kolach-docker /run/docker") < pos("echo ready"));
    assert!(
        pos("echo ready")
            < pos("'/usr/sbin/dockerd' '--bip=10.50.7.1/24' >>'/d/dockerd.log' 2>&1 &")
    );
    assert!(s.contains("trap 'kill -TERM $pid' TERM"));
}
