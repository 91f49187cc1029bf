use std::process::ExitCode;

use clap::Parser;
use kolach_dataplaned::{cleanup, hint, observability, run, signals, Config};

fn main() -> ExitCode {
    let cfg = Config::parse();
    observability::init(cfg.verbose);
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
            run(cfg, signals::shutdown()).await
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
