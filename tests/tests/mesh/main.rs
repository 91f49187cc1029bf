//! Multi-host tests of a running mesh: the harness itself, pings across
//! every backend, kernel objects, leases coming and going, the wire format,
//! kolachctl, configs that must change nothing, the aws-vpc backend
//! against the EC2 emulator.

mod aws_vpc;
mod backend_switch;
mod flannel_cli;
mod foreign_lease;
mod harness;
mod invalid_config;
mod kernel_mesh;
mod kernel_reader;
mod kolachctl;
mod late_join;
mod lease_delete;
mod mesh;
mod vxlan_lease_removed;
mod wire;
