//! Restarts and hot upgrades (DESIGN §6): what one image hands the next, and
//! what a starting image takes over.
//!
//! - [`upgrade`]: checking the binary on disk and re-executing it with the fds.
//! - [`handoff`] (pure): the check line and the state carried across `execve`.
//! - [`inherit`]: what a starting image takes over (handover, systemd's fd store).
//! - [`listen_fds`]: `LISTEN_FDS` parsing; [`notify`]: sd_notify and the fd store.
//! - [`binary`]: which executable runs, and whether its file was replaced.
//!
//! Here: what [`inherit`] and [`notify`] both need (the fd store's names and
//! the clock that times a handover), so neither imports the other.

pub mod binary;
pub mod handoff;
pub mod inherit;
pub mod listen_fds;
pub mod notify;
pub mod upgrade;

/// The names under which the udp backend's fds are stored (`FDNAME=`), and
/// come back in `LISTEN_FDNAMES`.
pub const FD_TUN: &str = "tun";
pub const FD_UDP: &str = "udp";

/// CLOCK_MONOTONIC in µs: comparable across exec (same boot).
pub fn monotonic_us() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1000
}
