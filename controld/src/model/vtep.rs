//! VTEP MACs for the vxlan backend, pure.
//!
//! A host's MAC is derived from its PublicIP (`0e:6b:<a>:<b>:<c>:<d>` for
//! a.b.c.d): locally administered, unicast, unique as long as PublicIPs are,
//! and the same after a restart or a reinstall, so the FDB and neighbour
//! entries peers hold for this host never go stale.

use std::net::Ipv4Addr;

pub use kolach_proto::Mac;

/// The two fixed leading octets: 0x0e has the locally administered bit set
/// and the multicast bit clear; 0x6b is `k`.
const PREFIX: [u8; 2] = [0x0e, 0x6b];

/// This host's VTEP MAC, from its PublicIP.
pub fn for_public_ip(ip: Ipv4Addr) -> Mac {
    let [a, b, c, d] = ip.octets();
    Mac([PREFIX[0], PREFIX[1], a, b, c, d])
}

/// The `VtepMAC` of a lease's raw `BackendData`, when present and usable.
pub fn from_backend_data(data: Option<&serde_json::Value>) -> Option<Mac> {
    Mac::parse(data?.get("VtepMAC")?.as_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn derived_from_the_public_ip() {
        let m = for_public_ip("198.18.0.1".parse().unwrap());
        assert_eq!(m.to_string(), "0e:6b:c6:12:00:01");
        assert_eq!(m.0, [0x0e, 0x6b, 0xc6, 0x12, 0x00, 0x01]);
        // Locally administered, unicast.
        assert_eq!(m.0[0] & 0b11, 0b10);
        assert_eq!(Mac::parse(&m.to_string()), Some(m));
        // Distinct hosts, distinct MACs; the same host, the same MAC.
        let n = for_public_ip("198.18.0.2".parse().unwrap());
        assert_ne!(m, n);
        assert_eq!(for_public_ip("198.18.0.1".parse().unwrap()), m);
        assert_eq!(
            for_public_ip("255.255.255.255".parse().unwrap()).to_string(),
            "0e:6b:ff:ff:ff:ff"
        );
    }

    #[test]
    fn reads_the_vtep_mac_of_backend_data() {
        let d = json!({"VtepMAC": "0e:6b:c6:12:00:02"});
        assert_eq!(
            from_backend_data(Some(&d)),
            Some(for_public_ip("198.18.0.2".parse().unwrap()))
        );
        // flannel also writes the VNI; it is read past.
        let f = json!({"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"});
        assert!(from_backend_data(Some(&f)).is_some());
        for bad in [json!(null), json!({}), json!({"VtepMAC": 7}), json!("x")] {
            assert_eq!(from_backend_data(Some(&bad)), None, "{bad}");
        }
        assert_eq!(from_backend_data(None), None);
    }
}
