//! `make bench` (DESIGN §9): kolach's three data paths (udp, vxlan, host-gw;
//! udp with its default queue per CPU), udp again with busy polling
//! (udp-busy) and with one queue (udp-1queue, the previous default, for
//! comparison), and the bare underlay measured side by side in one run (all
//! of them or a `BENCH_MODES` subset), each on its own lab of two hosts built
//! with this crate's harness, rounds interleaved so that drift of a shared
//! machine hits every mode alike.
//!
//! - [`config`]: the modes (and what udp-busy and udp-1queue ask of
//!   kolach-dataplaned), the knobs (`BENCH_*` variables), the round order.
//! - [`signal`]: Ctrl-C and SIGTERM stop the run between two measurements,
//!   and the labs are still torn down.
//! - [`target`]: one lab per mode, kept up for the whole run, with the
//!   client and server namespaces and the dataplaned pids to watch.
//! - [`parse`]: iperf3 `-J` reports and ping's per-packet lines.
//! - [`procfs`]: CPU ticks and peak RSS from `/proc`.
//! - [`measure`]: one ping, TCP or UDP run against a target, with the CPU
//!   it cost.
//! - [`floor`]: the round-trip floor of any userspace relay here: three
//!   processes passing a datagram with the udp path's four wakes and no
//!   packet work, measured every round beside the modes.
//! - [`routes`]: 5,000 phantom udp leases in etcd, how long the dataplane
//!   took to hold them, and its peak RSS then.
//! - [`pods`]: pods through the CNI plugin: ADD and DEL latency and rate,
//!   and controld's memory with many allocations.
//! - [`stats`]: medians and percentiles.
//! - [`report`]: per-mode medians, ratios to kernel vxlan, the table, the JSON.
//! - [`runner`]: the whole run, from building the labs to tearing them down.

pub mod config;
pub mod floor;
pub mod measure;
pub mod parse;
pub mod pods;
pub mod procfs;
pub mod report;
pub mod routes;
pub mod runner;
pub mod signal;
pub mod stats;
pub mod target;

pub use config::{BenchConfig, Mode};
