//! Which datagrams of a TX batch share one `sendmmsg` message: runs of
//! equal-size datagrams to one peer go out as one `UDP_SEGMENT` (GSO) send,
//! within the kernel's limits; without GSO every datagram is a message.
//! Pure: decided on lengths and addresses, tested here.

use std::net::SocketAddrV4;

/// Datagrams per `UDP_SEGMENT` send (the kernel's UDP_MAX_SEGMENTS).
const GSO_MAX_SEGS: usize = 64;
/// UDP payload bytes per send: 65535 − IPv4 header − UDP header.
const GSO_MAX_BYTES: usize = 65535 - 20 - 8;

/// Consecutive segments sent in one message: all `size` bytes long but the
/// last, which may be shorter (and then closes the message).
#[derive(Debug, Clone, Copy)]
pub struct Msg {
    pub dst: SocketAddrV4,
    pub first: usize,
    pub count: usize,
    pub size: usize,
    bytes: usize,
    closed: bool,
}

impl Msg {
    /// Whether a datagram of `len` bytes to `to` may join this `UDP_SEGMENT`
    /// message: same peer, not longer than the others, the message not ended
    /// by a shorter one, and within the kernel's limits.
    fn takes(&self, to: SocketAddrV4, len: usize) -> bool {
        self.dst == to
            && !self.closed
            && len <= self.size
            && self.count < GSO_MAX_SEGS
            && self.bytes + len <= GSO_MAX_BYTES
    }
}

/// Adds datagram number `index` (`len` bytes to `to`) to the messages of a
/// batch: to the last one if GSO is on and it takes it (`Msg::takes`), else
/// as a message of its own.
#[inline]
pub fn add_datagram(msgs: &mut Vec<Msg>, gso: bool, to: SocketAddrV4, len: usize, index: usize) {
    if let Some(m) = msgs.last_mut().filter(|m| gso && m.takes(to, len)) {
        m.count += 1;
        m.bytes += len;
        m.closed = len < m.size;
        return;
    }
    msgs.push(Msg {
        dst: to,
        first: index,
        count: 1,
        size: len,
        bytes: len,
        closed: false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(gso: bool, datagrams: &[(u8, usize)]) -> Vec<(u8, usize, usize, usize)> {
        let mut msgs = Vec::new();
        for (i, (peer, len)) in datagrams.iter().enumerate() {
            let to = SocketAddrV4::new([198, 18, 0, *peer].into(), 8285);
            add_datagram(&mut msgs, gso, to, *len, i);
        }
        msgs.iter()
            .map(|m| (m.dst.ip().octets()[3], m.first, m.count, m.size))
            .collect()
    }

    #[test]
    fn a_cut_super_packet_is_one_message_ending_in_its_short_segment() {
        let mut d = vec![(2, 1472); 30];
        d.push((2, 1000));
        assert_eq!(plan(true, &d), [(2, 0, 31, 1472)]);
        // A 64 KiB read (45 full segments and a short one) needs two sends.
        let mut d = vec![(2, 1472); 45];
        d.push((2, 1000));
        assert_eq!(plan(true, &d), [(2, 0, 44, 1472), (2, 44, 2, 1472)]);
    }

    #[test]
    fn a_message_ends_at_a_shorter_datagram_another_peer_or_a_limit() {
        // After a short one nothing joins, not even one of the same size.
        let p = plan(
            true,
            &[
                (2, 1472),
                (2, 900),
                (2, 900),
                (3, 900),
                (2, 1472),
                (2, 1500),
            ],
        );
        assert_eq!(
            p,
            [
                (2, 0, 2, 1472),
                (2, 2, 1, 900),
                (3, 3, 1, 900),
                (2, 4, 1, 1472),
                (2, 5, 1, 1500)
            ]
        );
        // 64 datagrams at most.
        let p = plan(true, &vec![(2, 100); 130]);
        assert_eq!(p, [(2, 0, 64, 100), (2, 64, 64, 100), (2, 128, 2, 100)]);
        // 65507 bytes at most: 44 datagrams of 1472 (64768), the 45th starts anew.
        let p = plan(true, &vec![(2, 1472); 46]);
        assert_eq!(p, [(2, 0, 44, 1472), (2, 44, 2, 1472)]);
    }

    #[test]
    fn without_gso_every_datagram_is_a_message() {
        let p = plan(false, &[(2, 1472), (2, 1472), (2, 100)]);
        assert_eq!(p, [(2, 0, 1, 1472), (2, 1, 1, 1472), (2, 2, 1, 100)]);
    }
}
