//! VTEP MACs for the vxlan backend, pure.
//!
//! A host's MAC is derived from its PublicIP (`0e:6b:<a>:<b>:<c>:<d>` for
//! a.b.c.d): locally administered, unicast, unique as long as PublicIPs are,
//! and the same after a restart or a reinstall, so the FDB and neighbour
//! entries peers hold for this host never go stale.

use std::fmt;
use std::net::Ipv4Addr;

/// The two fixed leading octets: 0x0e has the locally administered bit set
/// and the multicast bit clear; 0x6b is `k`.
const PREFIX: [u8; 2] = [0x0e, 0x6b];

/// A 6-byte Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// This host's VTEP MAC, from its PublicIP.
    pub fn for_public_ip(ip: Ipv4Addr) -> Mac {
        let [a, b, c, d] = ip.octets();
        Mac([PREFIX[0], PREFIX[1], a, b, c, d])
    }

    /// Parses flannel's spelling, `aa:bb:cc:dd:ee:ff` (either case). Only a
    /// unicast, non-zero address is a usable VTEP: a multicast or all-zero
    /// one would make the peers' FDB and neighbour entries nonsense.
    pub fn parse(s: &str) -> Option<Mac> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut mac {
            let p = parts.next()?;
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        if parts.next().is_some() || mac[0] & 1 == 1 || mac == [0; 6] {
            return None;
        }
        Some(Mac(mac))
    }

    /// The `VtepMAC` of a lease's raw `BackendData`, when present and usable.
    pub fn from_backend_data(data: Option<&serde_json::Value>) -> Option<Mac> {
        Mac::parse(data?.get("VtepMAC")?.as_str()?)
    }

    pub fn to_vec(self) -> Vec<u8> {
        self.0.to_vec()
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn derived_from_the_public_ip() {
        let m = Mac::for_public_ip("198.18.0.1".parse().unwrap());
        assert_eq!(m.to_string(), "0e:6b:c6:12:00:01");
        assert_eq!(m.0, [0x0e, 0x6b, 0xc6, 0x12, 0x00, 0x01]);
        // Locally administered, unicast.
        assert_eq!(m.0[0] & 0b11, 0b10);
        assert_eq!(Mac::parse(&m.to_string()), Some(m));
        // Distinct hosts, distinct MACs; the same host, the same MAC.
        let n = Mac::for_public_ip("198.18.0.2".parse().unwrap());
        assert_ne!(m, n);
        assert_eq!(Mac::for_public_ip("198.18.0.1".parse().unwrap()), m);
        assert_eq!(
            Mac::for_public_ip("255.255.255.255".parse().unwrap()).to_string(),
            "0e:6b:ff:ff:ff:ff"
        );
    }

    #[test]
    fn parse_takes_flannel_spelling_only() {
        assert_eq!(
            Mac::parse("AA:bb:cc:dd:ee:0F"),
            Some(Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f]))
        );
        for bad in [
            "",
            "nonsense",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "a:bb:cc:dd:ee:ff",
            "+a:bb:cc:dd:ee:ff",
            "aa-bb-cc-dd-ee-ff",
            "aa:bb:cc:dd:ee:fg",
            "01:00:5e:00:00:01", // multicast
            "ff:ff:ff:ff:ff:ff", // broadcast
            "00:00:00:00:00:00",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn from_backend_data() {
        let d = json!({"VtepMAC": "0e:6b:c6:12:00:02"});
        assert_eq!(
            Mac::from_backend_data(Some(&d)),
            Some(Mac::for_public_ip("198.18.0.2".parse().unwrap()))
        );
        // flannel also writes the VNI; it is read past.
        let f = json!({"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"});
        assert!(Mac::from_backend_data(Some(&f)).is_some());
        for bad in [json!(null), json!({}), json!({"VtepMAC": 7}), json!("x")] {
            assert_eq!(Mac::from_backend_data(Some(&bad)), None, "{bad}");
        }
        assert_eq!(Mac::from_backend_data(None), None);
    }
}
