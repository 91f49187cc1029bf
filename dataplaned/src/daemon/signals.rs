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

/// SIGTERM and SIGINT: kolach-proto's, the same for both daemons.
pub use kolach_proto::signals::shutdown;

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
