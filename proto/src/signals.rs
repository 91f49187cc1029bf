//! The stop signals both daemons obey: SIGTERM (systemd's stop) and SIGINT
//! (a terminal's ^C) end the process gracefully; kernel state stays.

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};

/// Installs the SIGTERM and SIGINT handlers now (call it inside the runtime,
/// before anything else runs) and resolves on either. Installing them when
/// the future is first polled instead would leave a window in which a
/// SIGTERM (systemd stopping a freshly started or upgraded process) still
/// has its default action and skips the graceful stop.
pub fn shutdown() -> impl Future<Output = ()> {
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "stopping"),
        }
    }
}
