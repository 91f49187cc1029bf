//! Process signals: SIGTERM/SIGINT stop gracefully (kernel state stays);
//! SIGHUP (systemd's reload) asks for a hot upgrade.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use crate::handover::upgrade::Upgrader;

/// Ignores SIGHUP until [`hangups`] handles it. Called first thing in main:
/// a new image starts with the default action (terminate), and a reload
/// arriving while it starts must not kill it.
pub fn ignore_hangup_for_now() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

/// Installs the SIGTERM and SIGINT handlers now (inside the runtime) and
/// resolves on either. Installing them when the future is first polled
/// instead would leave a window after "serving" in which a SIGTERM (systemd
/// stopping a freshly upgraded image) still has its default action.
pub fn shutdown() -> impl std::future::Future<Output = ()> {
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

/// Each SIGHUP requests a hot upgrade (refusals are logged by the upgrader).
pub async fn hangups(upgrader: Arc<Upgrader>) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot handle SIGHUP; hot upgrades only through kolachctl");
        return;
    };
    while hup.recv().await.is_some() {
        let _ = upgrader.request("SIGHUP").await;
    }
}
