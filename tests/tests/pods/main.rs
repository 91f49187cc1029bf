//! Pods wired by the `kolach` CNI plugin (DESIGN §10), the plugin executed as
//! a runtime executes it: addresses from the default pool and from named
//! pools on every backend, many pods on one host, restarts, GC, chaining
//! with Debian's reference plugins, spoofed sources; BIRD advertising what
//! the hosts export to a plain router; under faults (controld killed
//! mid-ADD, etcd away, partitions, exhaustion) and garbage in etcd; and
//! Docker's own bridge by the README's recipe (`--bip`, `--mtu` from
//! subnet.env) between hosts.

mod across;
mod bird;
mod chained;
mod docker;
mod faults;
mod garbage;
mod one_host;
mod podman;
