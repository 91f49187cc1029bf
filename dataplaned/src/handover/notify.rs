//! What the dataplane tells systemd (through kolach-proto's sd_notify):
//! READY / RELOADING / STATUS, and the fd store (`FDSTORE=1` with the fds
//! attached as SCM_RIGHTS, `FDSTOREREMOVE=1`), which keeps the TUN and UDP
//! fds open across a crash or restart of the service.
//!
//! The socket is read from the environment once, at start ([`init_from_env`]);
//! without it (not run by systemd) every call is a no-op.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::OnceLock;

use kolach_proto::systemd::Notifier;

static NOTIFIER: OnceLock<Notifier> = OnceLock::new();

/// Reads `$NOTIFY_SOCKET` for the rest of the process's life. It stays in the
/// environment: a hot upgrade's new image needs it too.
pub fn init_from_env() {
    let n = Notifier::from_env().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ignoring an unusable NOTIFY_SOCKET");
        Notifier::none()
    });
    let _ = NOTIFIER.set(n);
}

fn global() -> Option<&'static Notifier> {
    NOTIFIER.get().filter(|n| n.enabled())
}

/// Whether systemd is listening (the service runs under it).
pub fn enabled() -> bool {
    global().is_some()
}

fn send(state: &str, fds: &[RawFd]) {
    if let Some(n) = global() {
        match n.send(state, fds) {
            Ok(_) => {
                tracing::debug!(state = %state.replace('\n', " "), fds = fds.len(), "sd_notify")
            }
            Err(e) => {
                tracing::warn!(state = %state.replace('\n', " "), error = %e, "sd_notify failed")
            }
        }
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(
        &format!("READY=1\nSTATUS={status}\nMAINPID={}", std::process::id()),
        &[],
    );
}

/// `RELOADING=1`: a hot upgrade has begun; [`ready`] ends it (new or old image).
pub fn reloading(status: &str) {
    let now = super::monotonic_us();
    send(
        &format!("RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS={status}"),
        &[],
    );
}

pub fn status(status: &str) {
    send(&format!("STATUS={status}"), &[]);
}

/// Stores `fds` under `name`, in order (the order comes back in
/// `LISTEN_FDS`). New fds (`replace`) first remove what was stored under the
/// name; ones handed down are stored as they are (systemd ignores an fd it
/// already holds), so the store is never without them meanwhile.
pub fn store_fds(name: &str, fds: &[impl AsFd], replace: bool) {
    if global().is_some() {
        if replace {
            remove_fds(name);
        }
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_fd().as_raw_fd()).collect();
        send(&format!("FDSTORE=1\nFDNAME={name}"), &raw);
    }
}

/// Drops the fds stored under `name` (the device or socket is gone for good).
pub fn remove_fds(name: &str) {
    send(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[]);
}
