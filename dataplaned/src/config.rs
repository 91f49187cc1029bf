//! Command-line flags (each also from a `KOLACH_*` environment variable).

use std::path::PathBuf;

use kolach_proto::manual::{Item, Section};

use crate::datapath::offload::Offload;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "kolach-dataplaned",
    version,
    about = "kolach dataplane: applies route-table snapshots from kolach-controld; udp backend = TUN + UDP packet loop, vxlan and host-gw = kernel routes programmed over rtnetlink",
    long_about = "kolach dataplane: applies route-table snapshots from kolach-controld; udp backend = TUN + UDP packet loop, vxlan and host-gw = kernel routes programmed over rtnetlink.

kolach-dataplaned applies the full route-table snapshots that kolach-controld pushes over <run-dir>/dataplaned.sock and keeps the last one in <run-dir>/snapshot.pb, so that it forwards after a restart before controld is back. With the udp backend it owns the persistent TUN device and a UDP socket and forwards between them; with vxlan and host-gw it programs the kernel over rtnetlink (routes of protocol 107, neighbours, FDB entries) and the kernel forwards. With every backend it keeps this host's subnet and pool blocks as routes of protocol 107 on lo in the export table (network config ExportTable, default 119) for a routing daemon such as BIRD. Stopping it never removes kernel state.

It needs CAP_NET_ADMIN, and CAP_BPF to steer its TUN queues by CPU (without it the queues are picked by flow). Every option but -v can also be given in the environment, as the KOLACH_ variable named beside it. Flags are also taken Go style, as flannel's units write them: one dash, `=` or a space before the value (-run-dir=/run/kolach), glog's -v=N (0 none, 1 to 4 -v, 5 and above -vv).",
    after_long_help = kolach_proto::manual::help_text(MANUAL)
)]
pub struct Config {
    /// Directory for dataplaned.sock and the saved snapshot.
    #[arg(long, env = "KOLACH_RUN_DIR", default_value = "/run/kolach")]
    pub run_dir: PathBuf,

    /// Name of the udp backend's persistent TUN device.
    #[arg(long, env = "KOLACH_TUN", default_value = "kolach0", value_parser = parse_tun_name)]
    pub tun: String,

    /// Remove everything kolach made (the TUN device, every kolach.* vxlan
    /// device, every proto-107 route in any table, the export table's
    /// included, nftables table `ip kolach`, the FORWARD rules tagged
    /// `kolach:`, the saved snapshot) and exit.
    #[arg(long, env = "KOLACH_CLEANUP")]
    pub cleanup: bool,

    /// udp backend: use the kernel's offloads where it has them (TUN TSO and
    /// USO, UDP GSO and GRO; "auto"), or none ("off": one packet per TUN read
    /// and write, sendmmsg/recvmmsg batches). `kolachctl status` shows what
    /// runs.
    ///
    /// With "auto" the TUN device is opened with IFF_VNET_HDR and TSO, so one
    /// read returns a TCP super-packet that the dataplane cuts into segments
    /// itself, sends go out with UDP_SEGMENT (GSO) and receives come in with
    /// UDP_GRO, and received TCP segments (and, on Linux 6.2 and later, UDP
    /// datagrams) of one flow are written to the TUN as one super-packet;
    /// each offload the kernel lacks is left out. Either way every UDP
    /// datagram carries exactly one inner IPv4 packet (flannel's wire
    /// format).
    #[arg(long, env = "KOLACH_OFFLOAD", value_enum, default_value_t = Offload::Auto)]
    pub offload: Offload,

    /// udp backend: each queue's thread keeps polling its TUN queue and
    /// socket, without sleeping, until this long passed without a packet
    /// ("0" = off: sleep whenever both are empty). Lower round-trip times
    /// for a CPU per queue kept busy while traffic flows; e.g. 50us, 20ms, 1s
    /// (at most 10s).
    ///
    /// Off, every packet after a quiet moment first wakes a thread. On, the
    /// polling CPU is yielded to anything else that wants it, and batches
    /// are smaller under load. With a queue per CPU (the default) every
    /// queue's CPU is kept busy; `--queues 1` polls in one thread. The mode
    /// `kolachctl status` shows then ends in ", busy-poll 20ms".
    #[arg(long, env = "KOLACH_BUSY_POLL", default_value = "0", value_parser = crate::datapath::busy_poll::parse)]
    pub busy_poll: std::time::Duration,

    /// udp backend: queues of the TUN device, each with its own UDP socket
    /// and packet-loop thread pinned to its CPUs, so a packet is moved on
    /// the CPU it arrives on (an active flow stays in its queue, in order).
    /// "auto" (default): one per CPU this process may use (at most 8); 1:
    /// one unpinned thread; or up to 64. Taken when the device's queues are
    /// opened; a restart or hot upgrade keeps the queues it is handed.
    ///
    /// The sockets form one SO_REUSEPORT group and the threads are named
    /// kolach-udp-q0, kolach-udp-q1, ... An eBPF program (needs CAP_BPF) puts
    /// a packet the host sends in the queue of its CPU, unless the packet's
    /// flow sent one less than 5 ms ago (then it follows it, so a sender
    /// moving between CPUs is not reordered), and a classic BPF program hands
    /// a received datagram to the socket of its CPU. The mode `kolachctl
    /// status` shows then ends in ", 2 queues by cpu" ("by flow" without
    /// CAP_BPF). A device made single-queue by an earlier image keeps one
    /// queue until it is deleted. Per-CPU queues about halve the round-trip
    /// time on a host with idle CPUs.
    #[arg(long, env = "KOLACH_QUEUES", default_value = "auto", value_parser = crate::datapath::steer::parse)]
    pub queues: crate::datapath::steer::Queues,

    /// User besides root allowed to push snapshots and ask for a hot upgrade
    /// (ignored if no such user).
    #[arg(long, env = "KOLACH_CONTROLD_USER", default_value = "kolach")]
    pub controld_user: String,

    /// More log output: -v debug, -vv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Internal: print the version and the handover formats this binary can
    /// take over, then exit. A running daemon asks the binary on disk this
    /// before a hot upgrade. Deliberately not read from the environment: a
    /// stray variable must never turn the daemon into a no-op.
    #[arg(long, hide = true)]
    pub upgrade_check: bool,
}

/// What `--help` and the man page say beyond the flags (kolach_proto::manual).
pub const MANUAL: &[Section] = &[
    Section {
        title: "HOT UPGRADE",
        items: &[
            Item::Para("On SIGHUP, `systemctl reload kolach-dataplaned` or `kolachctl dataplane upgrade`, the daemon runs the binary now at the path it was started from with --upgrade-check and, if that answers, re-executes it with the TUN fd, the UDP socket and the listening socket kept open: same PID, the packet loop paused for milliseconds, no packet lost. A binary that fails the check is refused and the running one keeps running; the reason is logged and shown by `kolachctl status`."),
        ],
    },
    Section {
        title: "SIGNALS",
        items: &[
            Item::Entry("SIGTERM, SIGINT", "Stop; the kernel state (TUN device, routes, neighbours) stays."),
            Item::Entry("SIGHUP", "Hot upgrade (see HOT UPGRADE)."),
        ],
    },
    Section {
        title: "SYSTEMD",
        items: &[
            Item::Para("Type=notify: READY=1 once serving; RELOADING=1 and READY=1 around a hot upgrade. The TUN fd and the UDP socket are put in the service's fd store (FDSTORE=1, FDNAME=tun and udp) and taken back from LISTEN_FDS after a restart."),
        ],
    },
    Section {
        title: "ENVIRONMENT",
        items: &[Item::Entry("RUST_LOG", "Log filter; overrides -v.")],
    },
    Section {
        title: "FILES",
        items: &[
            Item::Entry("/run/kolach/dataplaned.sock", "The gRPC API (kolach.dataplane.v1)."),
            Item::Entry("/run/kolach/snapshot.pb", "The last applied snapshot."),
        ],
    },
    Section {
        title: "SEE ALSO",
        items: &[Item::Para("kolach-controld(8), kolachctl(8)")],
    },
];

impl Config {
    /// The udp backend's flags.
    pub fn udp_options(&self) -> crate::backend::udp::Options {
        crate::backend::udp::Options {
            offload: self.offload,
            busy_poll: self.busy_poll,
            queues: self.queues,
        }
    }

    /// `<run-dir>/dataplaned.sock`.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join(kolach_proto::DATAPLANED_SOCKET)
    }
}

fn parse_tun_name(s: &str) -> Result<String, String> {
    crate::datapath::tun::check_name(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults() {
        let c = Config::try_parse_from(["kolach-dataplaned"]).unwrap();
        assert_eq!(c.run_dir, PathBuf::from("/run/kolach"));
        assert_eq!(c.tun, "kolach0");
        assert!(!c.cleanup);
        assert_eq!(c.controld_user, "kolach");
        assert_eq!(c.offload, Offload::Auto);
        assert_eq!(c.busy_poll, std::time::Duration::ZERO);
        assert_eq!(c.queues, crate::datapath::steer::Queues::Auto);
        assert_eq!(c.verbose, 0);
        assert!(!c.upgrade_check);
        assert_eq!(c.socket(), PathBuf::from("/run/kolach/dataplaned.sock"));
    }

    #[test]
    fn upgrade_check_takes_the_same_flags() {
        let c = Config::try_parse_from([
            "kolach-dataplaned",
            "--run-dir",
            "/x",
            "-v",
            "--upgrade-check",
        ])
        .unwrap();
        assert!(c.upgrade_check);
        assert_eq!(c.run_dir, PathBuf::from("/x"));
    }

    #[test]
    fn flags() {
        let c = Config::try_parse_from([
            "kolach-dataplaned",
            "--run-dir",
            "/tmp/x",
            "--tun",
            "kl1",
            "--cleanup",
            "-vv",
            "--offload",
            "off",
            "--busy-poll",
            "20ms",
        ])
        .unwrap();
        assert_eq!(c.offload, Offload::Off);
        assert_eq!(c.busy_poll, std::time::Duration::from_millis(20));
        let one = Config::try_parse_from(["kolach-dataplaned", "--queues", "1"]).unwrap();
        assert_eq!(one.queues, crate::datapath::steer::Queues::Count(1));
        assert_eq!(
            one.udp_options().queues,
            crate::datapath::steer::Queues::Count(1)
        );
        let e = Config::try_parse_from(["kolach-dataplaned", "--queues", "0"]).unwrap_err();
        assert!(e.to_string().contains("is not a queue count"), "{e}");
        let e = Config::try_parse_from(["kolach-dataplaned", "--busy-poll", "20"]).unwrap_err();
        assert!(
            e.to_string().contains(r#""20" needs a unit: us, ms or s"#),
            "{e}"
        );
        assert_eq!((c.tun.as_str(), c.cleanup, c.verbose), ("kl1", true, 2));
        assert!(
            Config::try_parse_from(["kolach-dataplaned", "--tun", "much-too-long-name"]).is_err()
        );
    }

    #[test]
    fn clap_config_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }
}
