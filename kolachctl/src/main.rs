//! kolachctl: ask kolach-controld and kolach-dataplaned what they know.
//!
//! - `cli` (in the library, for kolach-docgen): flags and subcommands;
//!   `clients`: the daemons' gRPC clients and `--json` output.
//! - `view`: the proto replies turned into plain records, for tables and `--json`.
//! - `status`, `leases`, `routes`, `upgrade` (`dataplane upgrade`), `pools`
//!   (`pools`, `pool ...`), `blocks`, `addresses`, `check` (`ipam check`): one
//!   file per subcommand.
//! - `ipam_view`: the pool, block and address records.
//! - `aws_view`: the aws-vpc backend's part of the status.
//! - `table`: aligned text columns.

#![forbid(unsafe_code)]

mod addresses;
mod aws_view;
mod blocks;
mod check;
mod clients;
mod ipam_view;
mod leases;
mod pools;
mod routes;
mod status;
mod table;
mod upgrade;
mod view;

use std::process::ExitCode;

use clap::Parser;
use kolachctl::cli;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Go-style flags too (-run-dir=/run/kolach, -json), read off the clap
    // Command by kolach_proto::goflags.
    let args = match kolach_proto::goflags::translate(
        &cli::command(),
        &kolach_proto::goflags::Spec::default(),
        std::env::args_os(),
        &|k| std::env::var(k).ok(),
    ) {
        Ok(t) => t.args,
        Err(e) => {
            eprintln!("kolachctl: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = cli::Cli::parse_from(args);
    let result = match &cli.command {
        cli::Command::Status => status::run(&cli).await,
        cli::Command::Leases => leases::run(&cli).await,
        cli::Command::Routes => routes::run(&cli).await,
        cli::Command::Pools => pools::list(&cli).await,
        cli::Command::Pool { command } => pools::edit(&cli, command).await,
        cli::Command::Blocks => blocks::run(&cli).await,
        cli::Command::Addresses => addresses::run(&cli).await,
        cli::Command::Ipam {
            command: cli::IpamCommand::Check { release, min_age },
        } => check::run(&cli, *release, std::time::Duration::from_secs(*min_age)).await,
        cli::Command::Dataplane {
            command: cli::DataplaneCommand::Upgrade { wait },
        } => upgrade::run(&cli, std::time::Duration::from_secs(*wait)).await,
        cli::Command::Completions { shell } => {
            cli::completions(*shell, &mut std::io::stdout());
            Ok(true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kolachctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
