//! Multi-host tests of operating kolach: the systemd units and their
//! syscall filter, `kolach-dataplaned --cleanup`, controld's `--metrics-addr`,
//! the Debian package under a real systemd, the host firewall (ip-masq,
//! forward rules).

mod cleanup;
mod firewall;
mod metrics;
mod packaged;
mod systemd_units;
