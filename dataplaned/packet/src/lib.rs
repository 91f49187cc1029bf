//! kolach-packet: the udp backend's packet path without I/O. Plain functions
//! over bytes and values that say what to do with a packet; the loop in
//! kolach-dataplaned (`datapath/`) does the syscalls. Nothing here blocks,
//! allocates per packet or needs a privilege, so all of it is tested, and
//! fuzzed (`fuzz/`), on hand-made packets.
//!
//! - [`packet`]: IPv4 header validation and TTL decrement with incremental checksum.
//! - [`csum`]: the Internet checksum over whole payloads, eight bytes at a time.
//! - [`vnet`]: the `virtio_net_hdr` before every packet of an offloading TUN.
//! - [`segment`]: TCP segmentation of TUN super-packets; finishing partial checksums.
//! - [`coalesce`]: received TCP segments / UDP datagrams of one flow → one GSO
//!   write to the TUN (GRO), zero-copy; `coalesce/classify.rs` reads a
//!   packet's flow and whether it may join.
//! - [`gso_plan`]: which datagrams of a send batch share one `UDP_SEGMENT` send.
//! - [`icmp`]: ICMP net-unreachable / time-exceeded answers, and when not to answer.
//! - [`ratelimit`]: the token bucket that keeps those answers to 1000/s (burst 50).
//! - [`routes`]: the route table: destination → peer (by its subnets, or
//!   its pool blocks outside the Network), sender → the prefixes it holds.
//! - [`forward`]: the per-packet verdicts built from those, and why a packet
//!   is dropped ([`forward::DropReason`]).
//! - `testing` (feature `testing`, and this crate's tests): packet builders.
#![forbid(unsafe_code)]

pub mod coalesce;
pub mod csum;
pub mod forward;
pub mod gso_plan;
pub mod icmp;
pub mod packet;
pub mod ratelimit;
pub mod routes;
pub mod segment;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vnet;
