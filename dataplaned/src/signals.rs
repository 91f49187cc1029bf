//! Process signals: SIGTERM/SIGINT stop gracefully (kernel state stays).

use tokio::signal::unix::{signal, SignalKind};

/// Resolves on SIGTERM or SIGINT. SIGHUP (systemd's reload, the hot-upgrade
/// trigger) is logged and ignored until hot upgrade exists, rather than
/// killing the process by its default action.
pub async fn shutdown() {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!(signal = "SIGTERM", "stopping"); return; }
            _ = int.recv() => { tracing::info!(signal = "SIGINT", "stopping"); return; }
            _ = hup.recv() => tracing::warn!(signal = "SIGHUP", "hot upgrade is not implemented yet; ignoring"),
        }
    }
}
