//! The Internet checksum (RFC 1071) for the fast path: sums over whole
//! payloads, so it sums 32-bit words the compiler can vectorise.
//!
//! A [`Sum`] is a ones'-complement sum in network byte order, not yet
//! complemented. Sums of pieces add up ([`Sum::add`]) as long as every piece
//! but the last has an even length, so a segment's checksum is the sum of
//! its pseudo-header, its header and its payload, each taken on its own.

/// A folded ones'-complement sum of 16-bit big-endian words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sum(pub u16);

impl Sum {
    /// The sum of `data`; an odd last byte counts as the high byte of a word.
    #[inline]
    pub fn of(data: &[u8]) -> Sum {
        Sum(u16::from_be(fold(native_sum(data))))
    }

    /// Ones'-complement addition (a method rather than `+`, so chains of
    /// sums read in the order the RFC writes them).
    #[allow(clippy::should_implement_trait)]
    #[inline]
    pub fn add(self, other: Sum) -> Sum {
        let s = u32::from(self.0) + u32::from(other.0);
        Sum(((s & 0xffff) + (s >> 16)) as u16)
    }

    /// The sum of one more 16-bit word.
    #[inline]
    pub fn add_word(self, word: u16) -> Sum {
        self.add(Sum(word))
    }

    /// The value for a checksum field: the complement of the sum.
    #[inline]
    pub fn checksum(self) -> u16 {
        !self.0
    }
}

/// The IPv4 pseudo-header of TCP and UDP: addresses, protocol and the
/// transport length (header plus payload).
#[inline]
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], protocol: u8, len: u16) -> Sum {
    Sum::of(&src)
        .add(Sum::of(&dst))
        .add_word(u16::from(protocol))
        .add_word(len)
}

/// The checksum of an IPv4 header, its own checksum field counted as zero.
#[inline]
pub fn ipv4_header(hdr: &[u8]) -> u16 {
    let stored = u16::from_be_bytes([hdr[10], hdr[11]]);
    // Taking the stored field back out is the same as summing it as zero.
    Sum::of(hdr).add_word(!stored).checksum()
}

/// Writes the IPv4 header checksum into `hdr[10..12]`.
#[inline]
pub fn fill_ipv4_header(hdr: &mut [u8]) {
    hdr[10] = 0;
    hdr[11] = 0;
    let c = Sum::of(hdr).checksum();
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Sums `data` as native-endian 32-bit words into a u64: no carries to
/// propagate (2^32 words before it could overflow), so the compiler turns the
/// loop into vector adds (about twice the end-around-carry u64 loop). Folded,
/// it is the ones'-complement sum of the 16-bit words, byte-swapped on little
/// endian, which is undone at the end (RFC 1071 §2(B)).
#[inline]
fn native_sum(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_ne_bytes(w.try_into().expect("4 bytes")));
    }
    let mut rest = words.remainder();
    if rest.len() >= 2 {
        acc += u64::from(u16::from_ne_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [last] = rest {
        acc += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    acc
}

fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::packet;

    /// A small deterministic generator for test data.
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// RFC 1071 the slow way: 16-bit big-endian words into a u32.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            sum += u32::from(w);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// Ones'-complement values have two zeros (0x0000 and 0xffff).
    fn same(a: u16, b: u16) -> bool {
        a == b || (a % 0xffff == 0 && b % 0xffff == 0)
    }

    #[test]
    fn sums_match_the_reference_at_every_length_and_alignment() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let data = rng.bytes(3010);
        for len in (0..200).chain([1399, 1400, 1432, 1472, 2999]) {
            for off in 0..9 {
                let d = &data[off..off + len];
                assert!(
                    same(Sum::of(d).0, reference(d)),
                    "len {len} offset {off}: {:#06x} vs {:#06x}",
                    Sum::of(d).0,
                    reference(d)
                );
            }
        }
    }

    #[test]
    fn all_ones_and_all_zeros_fold_correctly() {
        for len in [0, 1, 2, 7, 8, 31, 32, 33, 64, 65535] {
            let ones = vec![0xffu8; len];
            assert!(same(Sum::of(&ones).0, reference(&ones)), "ones {len}");
            let zeros = vec![0u8; len];
            assert_eq!(Sum::of(&zeros).0, 0, "zeros {len}");
        }
    }

    #[test]
    fn sums_of_even_pieces_add_up() {
        let mut rng = Rng(7);
        for _ in 0..500 {
            let len = rng.below(3000);
            let d = rng.bytes(len);
            let cut = rng.below(len / 2 + 1) * 2;
            let whole = Sum::of(&d).0;
            let parts = Sum::of(&d[..cut]).add(Sum::of(&d[cut..])).0;
            assert!(same(whole, parts), "len {len} cut {cut}");
        }
    }

    #[test]
    fn ipv4_header_checksum_agrees_with_packet_checksum() {
        let mut rng = Rng(11);
        for _ in 0..200 {
            let n = 20 + 4 * rng.below(11);
            let mut h = rng.bytes(n);
            fill_ipv4_header(&mut h);
            assert_eq!(packet::checksum(&h), 0, "a filled header verifies");
            let stored = u16::from_be_bytes([h[10], h[11]]);
            assert!(same(ipv4_header(&h), stored));
        }
    }

    #[test]
    fn pseudo_header_is_the_sum_of_its_fields() {
        let p = pseudo_header([10, 50, 1, 2], [10, 50, 7, 9], 6, 1452);
        let bytes = [10, 50, 1, 2, 10, 50, 7, 9, 0, 6, 0x05, 0xac];
        assert!(same(p.0, reference(&bytes)));
    }
}
