//! Command-line flags (DESIGN §7); every flag can also come from `KOLACH_<FLAG>`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kolach_proto::manual::{Item, Section};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "kolach-controld",
    version,
    about = "kolach control daemon: leases this host's subnet from etcd, watches the peers and pushes route-table snapshots to kolach-dataplaned",
    long_about = "kolach control daemon: leases this host's subnet from etcd, watches the peers and pushes route-table snapshots to kolach-dataplaned.

kolach-controld reads the network config from etcd (flannel's layout, <etcd-prefix>/config), claims and keeps this host's subnet lease, watches every other host's lease, and pushes full route-table snapshots to kolach-dataplaned over <run-dir>/dataplaned.sock. Once the dataplane applied the first snapshot it writes the subnet file (KOLACH_NETWORK, KOLACH_SUBNET, KOLACH_MTU, KOLACH_IPMASQ) and, under systemd, sends READY=1. After a restart it gets its old subnet back and pushes only after listing every peer.

It also hands out pod addresses to the CNI plugin kolach, from this host's subnet or from address pools, and keeps them under <state-dir>/ipam/.

It needs no privileges. Every option can also be given in the environment, as the KOLACH_ variable named beside it.

It takes a flannel command line as it is: every flag also with one dash and `=` or a space before the value (-etcd-endpoints=http://a:2379, -iface eth0, -ip-masq=false), flannel's names (-subnet-file is flannel's file, see --flannel-subnet-file; -healthz-ip/-healthz-port become --metrics-addr; the seeds' -etcd-endpoint and -port) and FLANNELD_<FLAG> variables, below the command line and the KOLACH_ ones. A flannel flag kolach cannot honour is logged, or refused at start when its meaning cannot be met (-kube-subnet-mgr, IPv6, -iface-regex, more than one -iface).",
    after_long_help = kolach_proto::manual::help_text(MANUAL)
)]
pub struct Flags {
    /// etcd endpoints, comma separated.
    #[arg(
        long,
        env = "KOLACH_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,

    /// etcd key prefix holding `config` and `subnets/`.
    #[arg(
        long,
        env = "KOLACH_ETCD_PREFIX",
        default_value = "/coreos.com/network"
    )]
    pub etcd_prefix: String,

    /// CA certificate (PEM) to verify etcd's server certificate.
    #[arg(long, env = "KOLACH_ETCD_CAFILE")]
    pub etcd_cafile: Option<PathBuf>,

    /// Client certificate (PEM) for etcd.
    #[arg(long, env = "KOLACH_ETCD_CERTFILE", requires = "etcd_keyfile")]
    pub etcd_certfile: Option<PathBuf>,

    /// Client key (PEM) for etcd.
    #[arg(long, env = "KOLACH_ETCD_KEYFILE", requires = "etcd_certfile")]
    pub etcd_keyfile: Option<PathBuf>,

    /// etcd user name.
    #[arg(long, env = "KOLACH_ETCD_USERNAME", requires = "etcd_password")]
    pub etcd_username: Option<String>,

    /// etcd password.
    #[arg(
        long,
        env = "KOLACH_ETCD_PASSWORD",
        requires = "etcd_username",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,

    /// Underlay interface, by name or by one of its IPv4 addresses
    /// (default: the interface of the default route).
    #[arg(long, env = "KOLACH_IFACE")]
    pub iface: Option<String>,

    /// Address other hosts reach this one at, written into the lease
    /// (default: the underlay interface's address).
    #[arg(long, env = "KOLACH_PUBLIC_IP")]
    pub public_ip: Option<Ipv4Addr>,

    /// Where to write subnet.env (KOLACH_ variables). Written with two
    /// dashes this is kolach's file; flannel's `-subnet-file` (one dash, or
    /// FLANNELD_SUBNET_FILE) means --flannel-subnet-file.
    #[arg(
        long,
        env = "KOLACH_SUBNET_FILE",
        default_value = "/run/kolach/subnet.env"
    )]
    pub subnet_file: PathBuf,

    /// Also write flannel's subnet file here, byte for byte as flanneld
    /// would (FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ),
    /// at the same moment as --subnet-file, for what reads
    /// /run/flannel/subnet.env (its conventional place). flannel's
    /// `-subnet-file` (one dash) and FLANNELD_SUBNET_FILE set this. Off by
    /// default.
    #[arg(long, env = "KOLACH_FLANNEL_SUBNET_FILE", value_name = "PATH")]
    pub flannel_subnet_file: Option<PathBuf>,

    /// The udp port a flannel or seed command line named (`-port`): the
    /// port itself is the network config's Backend.Port; a difference is
    /// logged when the config is applied.
    #[arg(long, hide = true, value_name = "PORT")]
    pub expect_udp_port: Option<u16>,

    /// Directory holding controld.sock and dataplaned.sock.
    #[arg(long, env = "KOLACH_RUN_DIR", default_value = "/run/kolach")]
    pub run_dir: PathBuf,

    /// Where this host's pod address allocations are kept (`<dir>/ipam/`);
    /// they survive restarts of either daemon and of the host.
    #[arg(long, env = "KOLACH_STATE_DIR", default_value = "/var/lib/kolach")]
    pub state_dir: PathBuf,

    /// How long a pool block stays empty before this host gives it back:
    /// seconds or with a unit (`600`, `90s`, `10m`).
    #[arg(long, env = "KOLACH_BLOCK_GRACE", default_value = "10m", value_parser = parse_grace)]
    pub block_grace: Duration,

    /// TTL of this host's etcd lease: seconds (`86400`) or with a unit (`90s`, `10m`, `24h`).
    #[arg(long, env = "KOLACH_SUBNET_LEASE_TTL", default_value = "24h", value_parser = parse_ttl)]
    pub subnet_lease_ttl: Duration,

    /// Serve `/metrics` (Prometheus text format: this daemon's figures and
    /// the dataplane's, read over dataplaned.sock) and `/healthz` (200 while
    /// the lease is held and the dataplane applied a snapshot, else 503 and
    /// why) over plain HTTP at ADDR:PORT. Off by default.
    #[arg(long, env = "KOLACH_METRICS_ADDR", value_name = "ADDR:PORT")]
    pub metrics_addr: Option<SocketAddr>,

    /// Masquerade traffic from the Network to destinations outside it (not
    /// within the Network, not to multicast), as flannel's -ip-masq does:
    /// rules in an nftables table of kolach's own, kept by kolach-dataplaned.
    /// subnet.env then says KOLACH_IPMASQ=true (FLANNEL_IPMASQ=true), so
    /// Docker and CNI plugins leave masquerading to kolach.
    #[arg(long, env = "KOLACH_IP_MASQ")]
    pub ip_masq: bool,

    /// Accept forwarding to and from the Network in the host's FORWARD
    /// chain (flannel's -iptables-forward-rules), where a firewall such as
    /// Docker's (policy DROP) would drop traffic between hosts' pods. On by
    /// default; false leaves the FORWARD chain alone.
    #[arg(
        long,
        env = "KOLACH_IPTABLES_FORWARD_RULES",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub iptables_forward_rules: bool,

    /// More logging: -v debug, -vv trace (RUST_LOG overrides). glog's
    /// `-v=N` (flannel's) is taken too: 0 none, 1 to 4 -v, 5 and above -vv.
    #[arg(short, long, action = clap::ArgAction::Count, env = "KOLACH_VERBOSE")]
    pub verbose: u8,
}

/// What `--help` and the man page say beyond the flags (kolach_proto::manual).
pub const MANUAL: &[Section] = &[
    Section {
        title: "ENVIRONMENT",
        items: &[
            Item::Para("The aws-vpc backend (Backend.Type \"aws-vpc\") reads its settings as the AWS SDKs do:"),
            Item::Entry(
                "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN",
                "Static credentials (AWS_SECURITY_TOKEN is accepted for the token); absent: the instance role's, from instance metadata.",
            ),
            Item::Entry("AWS_REGION", "Absent: the instance's region, from instance metadata."),
            Item::Entry(
                "AWS_ENDPOINT_URL_EC2, AWS_ENDPOINT_URL",
                "The EC2 endpoint; absent: the region's.",
            ),
            Item::Entry(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                "Instance metadata (default http://169.254.169.254; IMDSv2 first, IMDSv1 as fallback).",
            ),
            Item::Para("The credentials need ec2:DescribeInstances, ec2:DescribeRouteTables, ec2:CreateRoute, ec2:ReplaceRoute, ec2:DeleteRoute and ec2:ModifyNetworkInterfaceAttribute."),
            Item::Entry("RUST_LOG", "Log filter; overrides -v."),
            Item::Entry(
                "FLANNELD_<FLAG>",
                "flannel's variables, named after flannel's flags (FLANNELD_ETCD_ENDPOINTS, FLANNELD_IFACE, FLANNELD_IP_MASQ, FLANNELD_SUBNET_FILE for --flannel-subnet-file, FLANNELD_HEALTHZ_PORT, ...): below the command line and below the flag's own KOLACH_ variable; the log says which were used and which passed over.",
            ),
        ],
    },
    Section {
        title: "SIGNALS",
        items: &[Item::Para("SIGTERM and SIGINT stop the daemon. Its lease stays in etcd and kolach-dataplaned keeps its routes.")],
    },
    Section {
        title: "FILES",
        items: &[
            Item::Entry("/run/kolach/controld.sock", "The gRPC API (kolach.control.v1, kolach.ipam.v1), for kolachctl and the CNI plugin."),
            Item::Entry("/run/kolach/subnet.env", "This host's subnet, for Docker's --bip and --mtu."),
            Item::Entry("/run/flannel/subnet.env", "The same in flannel's format (FLANNEL_*), when --flannel-subnet-file names it."),
            Item::Entry("/var/lib/kolach/ipam/", "The pod addresses this host gave out."),
        ],
    },
    Section {
        title: "SEE ALSO",
        items: &[Item::Para("kolach-dataplaned(8), kolachctl(8), kolach(8)")],
    },
];

/// `86400`, `90s`, `10m`, `24h` (also `d`); at least 5 s, which keeps the
/// keepalive interval (TTL/3) above a second.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 86400, 90s, 10m or 24h"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    let secs = n
        .checked_mul(mult)
        .filter(|&v| v <= i64::MAX as u64)
        .ok_or_else(|| format!("{s:?} is too long"))?;
    if secs < 5 {
        return Err(format!(
            "{s:?} is too short: the lease TTL must be at least 5s"
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// Like [`parse_ttl`] but from 1 s (tests give blocks back quickly).
pub fn parse_grace(s: &str) -> Result<Duration, String> {
    match parse_ttl(s) {
        Ok(d) => Ok(d),
        Err(e) if e.ends_with("at least 5s") => {
            let n: u64 = s
                .trim()
                .trim_end_matches('s')
                .parse()
                .map_err(|_| e.clone())?;
            if n == 0 {
                Err(format!(
                    "{s:?} is too short: the block grace must be at least 1s"
                ))
            } else {
                Ok(Duration::from_secs(n))
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("86400").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86400));
        assert!(parse_ttl("1").is_err());
        assert!(parse_ttl("10x").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("").is_err());
    }

    #[test]
    fn defaults_and_lists() {
        let f = Flags::try_parse_from(["kolach-controld"]).unwrap();
        assert_eq!(f.etcd_endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(f.etcd_prefix, "/coreos.com/network");
        assert_eq!(f.subnet_file, PathBuf::from("/run/kolach/subnet.env"));
        assert_eq!(f.run_dir, PathBuf::from("/run/kolach"));
        assert_eq!(f.subnet_lease_ttl, Duration::from_secs(86400));
        assert_eq!(f.state_dir, PathBuf::from("/var/lib/kolach"));
        assert_eq!(f.block_grace, Duration::from_secs(600));
        assert_eq!(parse_grace("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(f.metrics_addr, None);
        assert!(parse_grace("0").is_err());
        let f = Flags::try_parse_from([
            "kolach-controld",
            "--etcd-endpoints",
            "http://a:2379,http://b:2379",
            "-vv",
            "--public-ip",
            "198.18.0.1",
            "--metrics-addr",
            "127.0.0.1:9465",
        ])
        .unwrap();
        assert_eq!(f.metrics_addr, Some("127.0.0.1:9465".parse().unwrap()));
        assert_eq!(f.etcd_endpoints.len(), 2);
        assert_eq!(f.verbose, 2);
        assert!(Flags::try_parse_from(["kolach-controld", "--etcd-certfile", "c.pem"]).is_err());
    }
}
