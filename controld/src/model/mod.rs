//! The model, pure: values and decisions over them, tested in memory. Nothing
//! here talks to etcd, the dataplane or the kernel; the state task
//! ([`crate::state`]) feeds it what the etcd tasks saw and does what it decides.
//! (Two file reads sit beside their pure content: [`subnet_env`]'s atomic
//! write and read of the previous subnet.)
//!
//! - [`config`]: parse and validate `<prefix>/config` (DESIGN §4), legacy keys included.
//! - [`subnet`]: subnet key names and random choice among free candidates.
//! - [`lease`]: lease values (flannel's JSON) and records; what this host
//!   writes per backend and when its stored value must be rewritten.
//! - [`vtep`]: the vxlan VTEP MAC, derived from the PublicIP.
//! - [`peers`]: which peer leases are routed (same backend, usable VtepMAC)
//!   and the report of the skipped ones.
//! - [`table`]: the lease table the peer watch maintains, per-key revision guarded.
//! - [`recovery`]: which subnet to hold after a (re)start or a loss.
//! - [`loss`]: what losing the lease amounts to (a reclaim or a move) and how
//!   it is told.
//! - [`snapshot`]: turning config + lease table into a versioned snapshot.
//! - [`subnet_env`]: subnet.env content, and its atomic write.
//! - [`text`]: clipping outside input before it goes into a log line.
//! - [`noted`]: telling a standing problem once (appears, changes, gone).

pub mod config;
pub mod lease;
pub mod loss;
pub mod noted;
pub mod peers;
pub mod recovery;
pub mod snapshot;
pub mod subnet;
pub mod subnet_env;
pub mod table;
pub mod text;
pub mod vtep;
