use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use kolach_proto::control::control_client::ControlClient;
use kolach_proto::dataplane::dataplane_admin_client::DataplaneAdminClient;
use kolach_proto::dataplane::dataplane_client::DataplaneClient;
use kolach_proto::ipam::ipam_client::IpamClient;
use kolach_proto::uds::{self, UdsError};
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(
    name = "kolachctl",
    version,
    about = "Query kolach-controld and kolach-dataplaned"
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
    Status,
    /// Every subnet lease and reservation in etcd, as controld sees it.
    Leases,
    /// The route table the dataplane forwards with, and what it exports (ExportTable).
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
        #[arg(long, default_value_t = crate::check::IN_FLIGHT.as_secs())]
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

pub fn completions(shell: Shell) {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "kolachctl",
        &mut std::io::stdout(),
    );
}

impl Cli {
    fn socket(&self, name: &str) -> PathBuf {
        self.run_dir.join(name)
    }

    pub async fn controld(&self) -> Result<ControlClient<Channel>, UdsError> {
        let path = self.socket(kolach_proto::CONTROLD_SOCKET);
        Ok(ControlClient::new(
            uds::connect(&path, "kolach-controld").await?,
        ))
    }

    pub async fn ipam(&self) -> Result<IpamClient<Channel>, UdsError> {
        let path = self.socket(kolach_proto::CONTROLD_SOCKET);
        Ok(IpamClient::new(
            uds::connect(&path, "kolach-controld").await?,
        ))
    }

    pub async fn dataplaned(&self) -> Result<DataplaneClient<Channel>, UdsError> {
        let path = self.socket(kolach_proto::DATAPLANED_SOCKET);
        Ok(DataplaneClient::new(
            uds::connect(&path, "kolach-dataplaned").await?,
        ))
    }
}

impl Cli {
    pub async fn dataplaned_admin(&self) -> Result<DataplaneAdminClient<Channel>, UdsError> {
        let path = self.socket(kolach_proto::DATAPLANED_SOCKET);
        Ok(DataplaneAdminClient::new(
            uds::connect(&path, "kolach-dataplaned").await?,
        ))
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("views serialize")
    );
}
