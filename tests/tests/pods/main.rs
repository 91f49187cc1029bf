//! Pods wired by the `kolach` CNI plugin (DESIGN §10), the plugin executed as
//! a runtime executes it: addresses from the default pool and from named
//! pools on every backend, many pods on one host, restarts, GC, chaining
//! with Debian's reference plugins, spoofed sources; and under faults
//! (controld killed mid-ADD, etcd away, partitions, exhaustion).

mod across;
mod chained;
mod faults;
mod one_host;
mod podman;
