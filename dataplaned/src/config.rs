//! Command-line flags (each also from a `KOLACH_*` environment variable).

use std::path::PathBuf;

use crate::datapath::offload::Offload;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "kolach-dataplaned",
    version,
    about = "kolach dataplane: applies route-table snapshots from kolach-controld; udp backend = TUN + UDP packet loop, vxlan and host-gw = kernel routes programmed over rtnetlink"
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
    /// included, the saved snapshot) and exit.
    #[arg(long, env = "KOLACH_CLEANUP")]
    pub cleanup: bool,

    /// udp backend: use the kernel's offloads where it has them (TUN TSO and
    /// USO, UDP GSO and GRO; "auto"), or none ("off": one packet per TUN read
    /// and write, sendmmsg/recvmmsg batches). `kolachctl status` shows what
    /// runs.
    #[arg(long, env = "KOLACH_OFFLOAD", value_enum, default_value_t = Offload::Auto)]
    pub offload: Offload,

    /// udp backend: each queue's thread keeps polling its TUN queue and
    /// socket, without sleeping, until this long passed without a packet
    /// ("0" = off: sleep whenever both are empty). Lower round-trip times
    /// for a CPU per queue kept busy while traffic flows; e.g. 50us, 20ms, 1s
    /// (at most 10s).
    #[arg(long, env = "KOLACH_BUSY_POLL", default_value = "0", value_parser = crate::datapath::busy_poll::parse)]
    pub busy_poll: std::time::Duration,

    /// udp backend: queues of the TUN device, each with its own UDP socket
    /// and packet-loop thread pinned to its CPUs, so a packet is moved on
    /// the CPU it arrives on (an active flow stays in its queue, in order).
    /// "auto" (default): one per CPU this process may use (at most 8); 1:
    /// one unpinned thread; or up to 64. Taken when the device's queues are
    /// opened; a restart or hot upgrade keeps the queues it is handed.
    #[arg(long, env = "KOLACH_QUEUES", default_value = "auto", value_parser = crate::datapath::steer::parse)]
    pub queues: crate::datapath::steer::Queues,

    /// User besides root allowed to push snapshots (ignored if no such user).
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
