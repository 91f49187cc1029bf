//! kolach's multi-host tests and tools: what is not a reusable helper. The
//! helpers (namespaces, etcd, the lab, kernel readers, traffic) are the test
//! kit, crate `kolach-testkit` in `tests/kit/`; the tests in `tests/tests/`
//! and the bins here are written with it.
//!
//! - [`demo`]: the state behind `kolach-lab up/down/ping-matrix`.
//! - [`bench`]: `make bench` (`kolach-bench`): the backends and the bare
//!   underlay measured side by side.

pub mod bench;
pub mod demo;
