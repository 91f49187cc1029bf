//! Packet counters shared by the packet loop threads and the status RPC.
//!
//! Plain relaxed atomics: the loop only adds (a [`Tally`] per batch), status
//! only reads. They belong to the process, not to one backend instance, so
//! they survive socket rebinds and hot upgrades. Packets are counted where they
//! cross an interface: a TUN read or write of a TCP super-packet counts once,
//! every UDP datagram (also inside a GSO send or a GRO receive) once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use kolach_proto::dataplane as pb;

pub use kolach_packet::forward::DropReason;

/// Where `reason` counts in the per-reason arrays: its place in
/// [`DropReason::ALL`].
fn index(reason: DropReason) -> usize {
    reason as usize
}

#[derive(Debug, Default)]
pub struct Counters {
    pub tun_rx_packets: AtomicU64,
    pub tun_rx_bytes: AtomicU64,
    pub udp_tx_packets: AtomicU64,
    pub udp_tx_bytes: AtomicU64,
    pub udp_rx_packets: AtomicU64,
    pub udp_rx_bytes: AtomicU64,
    pub tun_tx_packets: AtomicU64,
    pub tun_tx_bytes: AtomicU64,
    pub icmp_unreachable_sent: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// The kernel refused a `UDP_SEGMENT` send (EIO) and the loop sends one
    /// datagram per message since; the status says so. Not carried over a
    /// hot upgrade: the next image finds out for itself.
    gso_refused: std::sync::atomic::AtomicBool,
    /// Likewise for a coalesced UDP write to the TUN (EINVAL): datagrams are
    /// written one by one since.
    uso_refused: std::sync::atomic::AtomicBool,
}

fn add(c: &AtomicU64, bytes: &AtomicU64, len: usize) {
    c.fetch_add(1, Relaxed);
    bytes.fetch_add(len as u64, Relaxed);
}

impl Counters {
    pub fn tun_rx(&self, len: usize) {
        add(&self.tun_rx_packets, &self.tun_rx_bytes, len);
    }
    pub fn udp_tx(&self, len: usize) {
        add(&self.udp_tx_packets, &self.udp_tx_bytes, len);
    }
    pub fn udp_rx(&self, len: usize) {
        add(&self.udp_rx_packets, &self.udp_rx_bytes, len);
    }
    pub fn tun_tx(&self, len: usize) {
        add(&self.tun_tx_packets, &self.tun_tx_bytes, len);
    }
    pub fn icmp_unreachable(&self) {
        self.icmp_unreachable_sent.fetch_add(1, Relaxed);
    }
    pub fn count_drop(&self, reason: DropReason) {
        self.dropped[index(reason)].fetch_add(1, Relaxed);
    }
    pub fn refuse_gso(&self) {
        self.gso_refused.store(true, Relaxed);
    }
    pub fn gso_refused(&self) -> bool {
        self.gso_refused.load(Relaxed)
    }
    pub fn refuse_uso(&self) {
        self.uso_refused.store(true, Relaxed);
    }
    pub fn uso_refused(&self) -> bool {
        self.uso_refused.load(Relaxed)
    }
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[index(reason)].load(Relaxed)
    }

    fn all(&self) -> impl Iterator<Item = &AtomicU64> {
        [
            &self.tun_rx_packets,
            &self.tun_rx_bytes,
            &self.udp_tx_packets,
            &self.udp_tx_bytes,
            &self.udp_rx_packets,
            &self.udp_rx_bytes,
            &self.tun_tx_packets,
            &self.tun_tx_bytes,
            &self.icmp_unreachable_sent,
        ]
        .into_iter()
        .chain(self.dropped.iter())
    }

    /// Every counter in a fixed order (the fields, then the drop reasons in
    /// [`DropReason::ALL`] order): what a hot upgrade carries over.
    pub fn values(&self) -> Vec<u64> {
        self.all().map(|c| c.load(Relaxed)).collect()
    }

    /// Counters continuing from [`Counters::values`] of a previous image;
    /// missing values are 0, extra ones (a newer image's) are ignored.
    pub fn from_values(values: &[u64]) -> Counters {
        let c = Counters::default();
        for (counter, v) in c.all().zip(values) {
            counter.store(*v, Relaxed);
        }
        c
    }

    /// The wire form; every drop reason is listed, zeros included, so a reader
    /// sees which reasons exist.
    pub fn to_pb(&self) -> pb::Counters {
        let dropped: HashMap<String, u64> = DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), self.dropped(*r)))
            .collect();
        pb::Counters {
            tun_rx_packets: self.tun_rx_packets.load(Relaxed),
            tun_rx_bytes: self.tun_rx_bytes.load(Relaxed),
            udp_tx_packets: self.udp_tx_packets.load(Relaxed),
            udp_tx_bytes: self.udp_tx_bytes.load(Relaxed),
            udp_rx_packets: self.udp_rx_packets.load(Relaxed),
            udp_rx_bytes: self.udp_rx_bytes.load(Relaxed),
            tun_tx_packets: self.tun_tx_packets.load(Relaxed),
            tun_tx_bytes: self.tun_tx_bytes.load(Relaxed),
            icmp_unreachable_sent: self.icmp_unreachable_sent.load(Relaxed),
            dropped,
        }
    }
}

/// Counts of one batch, kept by a loop thread in plain integers and added to
/// the shared [`Counters`] once per batch ([`Counters::add`]): the threads
/// then never contend for the counters' cache lines per packet.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// In [`Counters::values`] order.
    v: [u64; FIELDS + DropReason::ALL.len()],
}

/// Counters before the drop reasons, in [`Counters::values`] order.
const FIELDS: usize = 9;

impl Tally {
    fn pair(&mut self, i: usize, len: usize) {
        self.v[i] += 1;
        self.v[i + 1] += len as u64;
    }
    pub fn tun_rx(&mut self, len: usize) {
        self.pair(0, len);
    }
    pub fn udp_tx(&mut self, len: usize) {
        self.pair(2, len);
    }
    pub fn udp_rx(&mut self, len: usize) {
        self.pair(4, len);
    }
    pub fn tun_tx(&mut self, len: usize) {
        self.pair(6, len);
    }
    pub fn icmp_unreachable(&mut self) {
        self.v[8] += 1;
    }
    pub fn drop(&mut self, reason: DropReason, packets: usize) {
        self.v[FIELDS + index(reason)] += packets as u64;
    }
}

impl Counters {
    /// Adds a batch's tally and clears it.
    pub fn add(&self, t: &mut Tally) {
        for (c, v) in self.all().zip(t.v.iter_mut()) {
            if *v != 0 {
                c.fetch_add(*v, Relaxed);
                *v = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_adds_up_like_direct_counting() {
        let direct = Counters::default();
        direct.tun_rx(100);
        direct.udp_tx(60);
        direct.udp_tx(40);
        direct.udp_rx(7);
        direct.tun_tx(7);
        direct.icmp_unreachable();
        direct.count_drop(DropReason::NotIpv4);
        direct.count_drop(DropReason::IoError);
        direct.count_drop(DropReason::IoError);
        let batched = Counters::default();
        let mut t = Tally::default();
        t.tun_rx(100);
        t.udp_tx(60);
        t.udp_tx(40);
        t.udp_rx(7);
        t.tun_tx(7);
        t.icmp_unreachable();
        t.drop(DropReason::NotIpv4, 1);
        t.drop(DropReason::IoError, 2);
        batched.add(&mut t);
        assert_eq!(batched.values(), direct.values());
        batched.add(&mut t);
        assert_eq!(batched.values(), direct.values(), "adding clears the tally");
    }

    #[test]
    fn indices_match_the_list() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(index(*r), i);
        }
    }

    #[test]
    fn wire_form_lists_every_reason() {
        let c = Counters::default();
        c.count_drop(DropReason::SpoofedSource);
        c.count_drop(DropReason::SpoofedSource);
        c.udp_rx(100);
        let pb = c.to_pb();
        assert_eq!(pb.dropped["spoofed-source"], 2);
        assert_eq!(pb.dropped["unknown-sender"], 0);
        assert_eq!(pb.dropped.len(), DropReason::ALL.len());
        assert_eq!((pb.udp_rx_packets, pb.udp_rx_bytes), (1, 100));
    }

    #[test]
    fn values_carry_over() {
        let c = Counters::default();
        c.tun_rx(10);
        c.icmp_unreachable();
        c.count_drop(DropReason::IoError);
        let v = c.values();
        assert_eq!(v.len(), 9 + DropReason::ALL.len());
        let next = Counters::from_values(&v);
        assert_eq!(next.to_pb(), c.to_pb());
        assert_eq!(next.dropped(DropReason::IoError), 1);
        // A shorter list (an older image) leaves the rest at 0.
        let short = Counters::from_values(&[5]);
        assert_eq!(short.tun_rx_packets.load(Relaxed), 5);
        assert_eq!(short.values()[1..].iter().sum::<u64>(), 0);
    }
}
