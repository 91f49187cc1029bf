//! kolachctl's flags and subcommands: what the binary parses, and what
//! kolach-docgen renders into man pages and shell completions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use kolach_proto::manual::{Item, Section};

/// How long an ADD may take between allocating and creating the host end
/// (`ipam check`'s default `--min-age`).
pub const IN_FLIGHT: Duration = Duration::from_secs(60);

#[derive(Parser, Debug)]
#[command(
    name = "kolachctl",
    version,
    about = "Query kolach-controld and kolach-dataplaned",
    long_about = "Query kolach-controld and kolach-dataplaned: ask the daemons what they know (over the sockets in the run dir), edit address pools, check pod addresses and hot-upgrade the dataplane.",
    after_long_help = kolach_proto::manual::help_text(MANUAL)
)]
pub struct Cli {
    /// Directory holding controld.sock and dataplaned.sock.
    #[arg(
        long,
        env = "KOLACH_RUN_DIR",
        default_value = "/run/kolach",
        global = true
    )]
    pub run_dir: PathBuf,

    /// Print JSON instead of a table.
    #[arg(long, env = "KOLACH_JSON", global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Both daemons: this host's lease, etcd, the applied snapshot, packet counters, the aws-vpc route tables.
    ///
    /// The snapshot: its generation, routes and export table. The dataplane:
    /// its PID, version, start time, hot upgrades, running binary (flagged
    /// when the file on disk was replaced). With the aws-vpc backend: whether
    /// every kept VPC route table routes this host's subnet to its instance,
    /// or the last error. Exits 1 when either daemon does not answer.
    Status,
    /// Every subnet lease and reservation in etcd, as controld sees it.
    Leases,
    /// The route table the dataplane forwards with, and what it exports (ExportTable).
    ///
    /// The export table holds this host's own subnet and pool blocks, for a
    /// routing daemon such as BIRD.
    Routes,
    /// Address pools: the default one (this host's subnet) and those in etcd.
    Pools,
    /// Create, extend or delete an address pool (written to etcd by controld).
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Every host's pool blocks, as etcd holds them.
    Blocks,
    /// The pod addresses this host has given out.
    Addresses,
    /// This host's pod addresses, checked against the host.
    Ipam {
        #[command(subcommand)]
        command: IpamCommand,
    },
    /// Operate kolach-dataplaned.
    Dataplane {
        #[command(subcommand)]
        command: DataplaneCommand,
    },
    /// Print a shell completion script.
    Completions { shell: Shell },
}

#[derive(Subcommand, Debug)]
pub enum DataplaneCommand {
    /// Hot upgrade: kolach-dataplaned re-executes the binary now on disk,
    /// keeping its PID, TUN device, UDP socket and route table (no packet
    /// lost). Refused, with the reason, if that binary fails its check.
    ///
    /// Exits 1, with the reason, when the upgrade did not happen; this is the
    /// ExecReload of kolach-dataplaned.service.
    Upgrade {
        /// Seconds to wait for the new binary to report in.
        #[arg(long, env = "KOLACH_UPGRADE_WAIT", default_value_t = 30)]
        wait: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum IpamCommand {
    /// Allocations whose pod is gone: no host end `kol…` in this network
    /// namespace, or the netns path the runtime gave is gone. Run it in the
    /// host's network namespace. Exits 1 when stale allocations remain.
    Check {
        /// Release each stale allocation (the address goes back to its pool).
        #[arg(long, env = "KOLACH_IPAM_CHECK_RELEASE")]
        release: bool,
        /// Seconds an allocation must be old to be judged: a younger one
        /// may belong to an ADD that has not made its veth yet.
        #[arg(long, default_value_t = IN_FLIGHT.as_secs())]
        min_age: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// A new pool: pods of the Kubernetes namespace NAME get addresses from it.
    Create {
        name: String,
        /// One or more IPv4 subnets outside the overlay Network.
        #[arg(required = true)]
        subnets: Vec<ipnet::Ipv4Net>,
        /// Prefix length of the blocks hosts claim (default 28).
        #[arg(long)]
        block_len: Option<u8>,
        /// Blocks one host may hold (default 20).
        #[arg(long)]
        max_blocks_per_host: Option<u32>,
    },
    /// Adds a subnet to a pool.
    AddSubnet {
        name: String,
        subnet: ipnet::Ipv4Net,
    },
    /// Deletes a pool; refused while any host holds a block of it.
    Delete { name: String },
}

/// What `--help` and the man page say beyond the flags (kolach_proto::manual).
pub const MANUAL: &[Section] = &[
    Section {
        title: "EXIT STATUS",
        items: &[
            Item::Entry("0", "Success."),
            Item::Entry(
                "1",
                "An error (printed on stderr); status: a daemon did not answer; ipam check: stale allocations remain; dataplane upgrade: the upgrade did not happen.",
            ),
        ],
    },
    Section {
        title: "FILES",
        items: &[
            Item::Entry("/run/kolach/controld.sock", "kolach-controld's API."),
            Item::Entry("/run/kolach/dataplaned.sock", "kolach-dataplaned's API."),
        ],
    },
    Section {
        title: "SEE ALSO",
        items: &[Item::Para("kolach-controld(8), kolach-dataplaned(8), kolach(8)")],
    },
];

/// The command line as clap sees it: for parsing, man pages and completions.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Writes the completion script for `shell` (`kolachctl completions SHELL`).
pub fn completions(shell: Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut command(), "kolachctl", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definitions_are_consistent() {
        command().debug_assert();
    }

    #[test]
    fn completions_parse_and_name_every_subcommand() {
        let cli = Cli::try_parse_from(["kolachctl", "completions", "bash"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Completions { shell: Shell::Bash }
        ));
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            for sub in ["status", "leases", "routes", "pool", "ipam", "dataplane"] {
                assert!(text.contains(sub), "{shell}: no {sub}");
            }
        }
    }

    #[test]
    fn the_long_help_carries_the_manual() {
        let help = command().render_long_help().to_string();
        for s in MANUAL {
            assert!(help.contains(&format!("{}:", s.title)), "{}", s.title);
        }
        let short = command().render_help().to_string();
        assert!(!short.contains("EXIT STATUS"), "{short}");
    }
}
