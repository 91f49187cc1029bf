//! Multi-host tests of operating kolach: the systemd units and their
//! syscall filter, `kolach-dataplaned --cleanup`, controld's `--metrics-addr`,
//! the Debian package under a real systemd.

mod cleanup;
mod metrics;
mod packaged;
mod systemd_units;
