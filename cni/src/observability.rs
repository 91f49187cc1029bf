//! Logs: none unless `KOLACH_CNI_LOG` (or `RUST_LOG`) asks, and then to
//! stderr only, since stdout carries the result the runtime parses.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = std::env::var("KOLACH_CNI_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .filter(|s| !s.is_empty());
    let Some(filter) = filter else {
        return;
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
