//! `kolach-bench` (`make bench`, DESIGN §9): kolach udp (a queue per CPU),
//! udp with busy polling, udp with one queue, vxlan, host-gw and the bare underlay
//! (or a `BENCH_MODES` subset) measured interleaved in one run on labs of
//! network namespaces; prints a table and writes JSON. See
//! `kolach_tests::bench`.

use std::process::ExitCode;

use clap::Parser;
use kolach_tests::bench::{floor, runner, signal, BenchConfig};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(floor::HOP_ARG) {
        // A relay hop of the floor measurement, spawned by the bench itself.
        return match floor::hop_main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kolach-bench {}: {e:#}", floor::HOP_ARG);
                ExitCode::FAILURE
            }
        };
    }
    let cfg = BenchConfig::parse();
    match runner::run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kolach-bench: {e:#}");
            if signal::requested() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
