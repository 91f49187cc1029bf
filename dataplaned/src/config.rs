//! Command-line flags (each also from a `KOLACH_*` environment variable).

use std::path::PathBuf;

use crate::offload::Offload;

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
    /// device, every proto-107 route, the saved snapshot) and exit.
    #[arg(long, env = "KOLACH_CLEANUP")]
    pub cleanup: bool,

    /// udp backend: use the kernel's offloads where it has them (TUN TSO and
    /// USO, UDP GSO and GRO; "auto"), or none ("off": one packet per TUN read
    /// and write, sendmmsg/recvmmsg batches). `kolachctl status` shows what
    /// runs.
    #[arg(long, env = "KOLACH_OFFLOAD", value_enum, default_value_t = Offload::Auto)]
    pub offload: Offload,

    /// udp backend: keep polling the TUN and the socket, without sleeping,
    /// until this long passed without a packet ("0" = off: sleep whenever
    /// both are empty). Lower round-trip times for a CPU kept busy while
    /// traffic flows; e.g. 50us, 20ms, 1s (at most 10s).
    #[arg(long, env = "KOLACH_BUSY_POLL", default_value = "0", value_parser = crate::busy_poll::parse)]
    pub busy_poll: std::time::Duration,

    /// udp backend: threads of the packet loop. 1 (default): one thread
    /// moves both directions, which costs the least CPU per byte; 2: one
    /// thread per direction, for hosts with spare cores whose pods send and
    /// receive heavily at once. `--busy-poll` runs one thread.
    #[arg(long, env = "KOLACH_LOOP_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub loop_threads: u8,

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
    /// Parses the command line and environment; exits with clap's usage
    /// error (code 2) on flags that cannot go together.
    pub fn parse_checked() -> Config {
        use clap::{CommandFactory, Parser};
        let cfg = Config::parse();
        if let Err(msg) = cfg.check() {
            Config::command()
                .error(clap::error::ErrorKind::ArgumentConflict, msg)
                .exit();
        }
        cfg
    }

    /// What clap cannot check by itself.
    pub fn check(&self) -> Result<(), String> {
        if self.loop_threads > 1 && !self.busy_poll.is_zero() {
            return Err(format!(
                "--busy-poll {} runs the packet loop in one thread: it cannot be combined with --loop-threads {}",
                crate::busy_poll::Window(self.busy_poll),
                self.loop_threads
            ));
        }
        Ok(())
    }

    /// The udp backend's flags.
    pub fn udp_options(&self) -> crate::udp::Options {
        crate::udp::Options {
            offload: self.offload,
            busy_poll: self.busy_poll,
            threads: self.loop_threads,
        }
    }

    /// `<run-dir>/dataplaned.sock`.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join(kolach_proto::DATAPLANED_SOCKET)
    }
}

fn parse_tun_name(s: &str) -> Result<String, String> {
    crate::tun::check_name(s)
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
        assert_eq!(c.loop_threads, 1);
        assert_eq!(c.check(), Ok(()));
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
        let two = Config::try_parse_from(["kolach-dataplaned", "--loop-threads", "2"]).unwrap();
        assert_eq!((two.loop_threads, two.check()), (2, Ok(())));
        assert!(Config::try_parse_from(["kolach-dataplaned", "--loop-threads", "3"]).is_err());
        let both = Config::try_parse_from([
            "kolach-dataplaned",
            "--loop-threads",
            "2",
            "--busy-poll",
            "1ms",
        ])
        .unwrap();
        assert_eq!(
            both.check(),
            Err("--busy-poll 1ms runs the packet loop in one thread: it cannot be combined with --loop-threads 2".into())
        );
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
