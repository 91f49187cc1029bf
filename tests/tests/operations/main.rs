//! Multi-host tests of operating kolach: the systemd units and their
//! syscall filter, `kolach-dataplaned --cleanup`.

mod cleanup;
mod systemd_units;
