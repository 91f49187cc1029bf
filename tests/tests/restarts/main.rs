//! Multi-host tests of daemons stopping, crashing, restarting and being
//! hot-upgraded while traffic flows (DESIGN §6).

mod controld_restart;
mod daemon_restart;
mod dataplane_crash;
mod demo_restart;
mod hot_upgrade;
mod kernel_restart;
mod restart;
mod stale_snapshot;
mod stop_with_client;
