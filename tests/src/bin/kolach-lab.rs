//! `kolach-lab`: the demo. `up` starts etcd and N hosts (namespaces `kdemo-*`,
//! both daemons each, a pod behind a Docker-like bridge) and leaves them
//! running; `ping-matrix` pings pod to pod; `restart` stops and starts one
//! host's daemon as systemd would; `down` removes it all; `sweep` removes what
//! crashed test runs left behind.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kolach_testkit::process::PidStop;
use kolach_tests::demo;

#[derive(Parser)]
#[command(about = "kolach demo lab: hosts as network namespaces running the real daemons")]
struct Cli {
    /// Where run dirs, logs, pid files and etcd data go.
    #[arg(long, env = "KOLACH_LAB_DIR", default_value = ".demo", global = true)]
    dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start etcd and the hosts, wait for the mesh, leave it running.
    Up {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=20))]
        hosts: u8,
        /// Backend.Type of the network config: udp, vxlan, host-gw, alloc or aws-vpc (no VPC in the demo: hosts keep leases only).
        #[arg(long, default_value = "udp")]
        backend: kolach_testkit::Backend,
        /// Set on every host's kolach-dataplaned, e.g. KOLACH_QUEUES=auto
        /// (repeatable; the lab otherwise clears KOLACH_* variables).
        #[arg(long = "dataplaned-env", value_name = "NAME=VALUE", value_parser = name_value)]
        dataplaned_env: Vec<(String, String)>,
    },
    /// Stop (if it runs) and start again one host's daemon with the command
    /// line `up` gave it, as systemd's Restart= would (e.g. after a kill -9).
    Restart {
        /// Host number, as in host1.
        host: u8,
        #[arg(value_enum)]
        daemon: demo::Daemon,
    },
    /// Stop every demo process and delete the demo namespaces and dir.
    Down,
    /// Ping every pod from every other pod and print a table.
    PingMatrix {
        #[arg(long, default_value_t = 3)]
        count: u32,
    },
    /// Remove namespaces and temp dirs of test labs whose process died.
    Sweep,
}

/// `NAME=VALUE` as a pair; the name must be a KOLACH_ variable.
fn name_value(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    if !name.starts_with("KOLACH_") {
        return Err(format!(
            "{name:?} is not a KOLACH_ variable of kolach-dataplaned"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kolach-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(&cli.dir)?;
    match cli.cmd {
        Cmd::Up {
            hosts,
            backend,
            dataplaned_env,
        } => {
            let state = demo::up(&dir, hosts, backend, &dataplaned_env)?;
            println!(
                "kolach demo is up: etcd at {} in {}",
                state.etcd_endpoint, state.underlay_ns
            );
            for h in &state.hosts {
                println!(
                    "  host{} ns {:<10} underlay {:<12} subnet {:<15} pod {} ({})  run dir {}",
                    h.n,
                    h.ns,
                    h.underlay_ip,
                    h.subnet,
                    h.pod_ip,
                    h.pod_ns,
                    h.run_dir.display()
                );
            }
            println!(
                "try: ip netns exec {} ping {}",
                state.hosts[0].pod_ns,
                state
                    .hosts
                    .last()
                    .map_or(state.hosts[0].pod_ip, |h| h.pod_ip)
            );
        }
        Cmd::Restart { host, daemon } => {
            let state = demo::load(&dir)?;
            let r = demo::restart(&state, host, daemon)?;
            let before = match r.stopped {
                PidStop::NotRunning => "was not running",
                PidStop::Terminated => "stopped (SIGTERM)",
                PidStop::Killed => "did not stop on SIGTERM, killed",
            };
            println!(
                "host{host} {}: {before}; started again, pid {}, listening on {} after {:.0?}",
                daemon.name(),
                r.pid,
                r.socket.display(),
                r.listening_after
            );
        }
        Cmd::Down => {
            let removed = demo::down(&dir)?;
            println!("kolach demo is down ({} namespaces removed)", removed.len());
        }
        Cmd::PingMatrix { count } => {
            let state = demo::load(&dir)?;
            let results = demo::ping_matrix(&state, count);
            print!("{}", demo::format_matrix(&state, &results));
            let failed = results.iter().flatten().flatten().any(|r| !r.lossless());
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Sweep => {
            let removed = demo::sweep()?;
            if !removed.is_empty() {
                println!("removed stale test namespaces: {}", removed.join(" "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
