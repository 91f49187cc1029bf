use std::process::ExitCode;

use kolach_dataplaned::daemon::{observability, signals};
use kolach_dataplaned::handover::inherit::{self, Start};
use kolach_dataplaned::handover::{handoff, notify};
use kolach_dataplaned::{cleanup, hint, run, Config};

fn main() -> ExitCode {
    signals::ignore_hangup_for_now();
    // Go-style flags too (-run-dir=/run/kolach, -v=2), as flannel's units
    // write them; kolach_proto::goflags reads them off the clap Command.
    let args = match kolach_proto::goflags::translate(
        &<Config as clap::CommandFactory>::command(),
        &kolach_proto::goflags::Spec::default(),
        std::env::args_os(),
        &|k| std::env::var(k).ok(),
    ) {
        Ok(t) => t.args,
        Err(e) => {
            eprintln!("kolach-dataplaned: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = <Config as clap::Parser>::parse_from(args);
    if cfg.upgrade_check {
        println!("{}", handoff::check_line(env!("CARGO_PKG_VERSION")));
        return ExitCode::SUCCESS;
    }
    observability::init(cfg.verbose);
    notify::init_from_env();
    // Before the runtime's threads exist: this edits the environment.
    let start = if cfg.cleanup {
        Start::default()
    } else {
        match inherit::collect(&cfg.tun, &cfg.socket()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("kolach-dataplaned: cannot take over what was handed down: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kolach-dataplaned: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        if cfg.cleanup {
            cleanup(&cfg).await
        } else {
            run(cfg, start, signals::shutdown()).await
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kolach-dataplaned: {e:#}");
            if let Some(h) = hint(&e) {
                eprintln!("hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}
