//! Multi-host tests of the udp fast path (issue 5): offloads on the wire,
//! the packet loop's queues, steering and busy polling.

mod fast_path;
mod packet_loop;
