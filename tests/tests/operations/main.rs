//! Multi-host tests of operating kolach: the systemd units and their
//! syscall filter, `kolach-dataplaned --cleanup`, controld's `--metrics-addr`.

mod cleanup;
mod metrics;
mod systemd_units;
