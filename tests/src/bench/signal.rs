//! Stopping a bench early: SIGINT (Ctrl-C), SIGTERM and SIGHUP set a flag
//! that the run checks between measurements, so it returns through the labs'
//! teardown instead of dying with namespaces and daemons left behind. A
//! second signal takes the default action at once (the kt<pid>- namespaces
//! are then removed by `kolach-lab sweep`).

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: signal(2) and raise(3) are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only touches an atomic and calls
        // async-signal-safe functions.
        unsafe { libc::signal(sig, handler) };
    }
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// An error once a stop was asked for.
pub fn check() -> Result<()> {
    if requested() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps up to `d`, returning early when a stop is asked for.
pub fn sleep(d: std::time::Duration) {
    let end = std::time::Instant::now() + d;
    while !requested() {
        let now = std::time::Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(std::time::Duration::from_millis(50)));
    }
}
