//! Lease values and records, pure.
//!
//! The value at `<prefix>/subnets/<key>` is flannel's JSON:
//! `{"PublicIP":"198.18.0.1","BackendType":"udp","BackendData":null}`. flannel's
//! udp leases carry no BackendType and read as udp. BackendData stays raw JSON:
//! only the backend that wrote it knows its shape.
//!
//! What this host writes per backend (ISSUE 3): udp, host-gw and alloc
//! `"BackendData":null`; vxlan `"BackendData":{"VtepMAC":"0e:6b:.."}`. When
//! the stored value of this host's key differs from that in any byte (another
//! backend, another MAC, flannel's or an older kolach's spelling),
//! [`rewrite_reason`] says why it must be rewritten.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use crate::model::config::BackendKind;
use crate::model::text::shown;
use crate::model::vtep;

/// What a host says about itself in its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAttrs {
    pub public_ip: Ipv4Addr,
    /// As written ("udp" when absent); a peer may run a backend we do not know.
    pub backend_type: String,
    /// Raw `BackendData`; `None` for null or absent.
    pub backend_data: Option<Value>,
}

/// The largest lease value read. flannel's are about 100 bytes; a vxlan one
/// with its BackendData about 150.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseValueError {
    #[error("lease value is {0} bytes, more than the {MAX_VALUE_BYTES} a lease can need")]
    TooLarge(usize),
    #[error("lease value is not valid JSON: {0}")]
    Json(String),
    #[error("lease value is not a JSON object")]
    NotObject,
    #[error("lease value has no PublicIP")]
    NoPublicIp,
    #[error("lease PublicIP {0} is not an IPv4 address")]
    BadPublicIp(String),
    #[error("lease PublicIP {0} is not a unicast address a host can have")]
    NotUnicast(Ipv4Addr),
    #[error("lease BackendType {0} is not a string")]
    BadBackendType(String),
}

impl LeaseAttrs {
    pub fn new(public_ip: Ipv4Addr, backend_type: &str) -> Self {
        LeaseAttrs {
            public_ip,
            backend_type: backend_type.to_string(),
            backend_data: None,
        }
    }

    /// The value this host publishes when it runs `backend`.
    pub fn ours(backend: BackendKind, public_ip: Ipv4Addr) -> Self {
        let backend_data = match backend {
            BackendKind::Vxlan => Some(json!({
                "VtepMAC": vtep::for_public_ip(public_ip).to_string()
            })),
            BackendKind::Udp | BackendKind::HostGw | BackendKind::Alloc | BackendKind::AwsVpc => {
                None
            }
        };
        LeaseAttrs {
            public_ip,
            backend_type: backend.as_str().to_string(),
            backend_data,
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, LeaseValueError> {
        if bytes.len() > MAX_VALUE_BYTES {
            return Err(LeaseValueError::TooLarge(bytes.len()));
        }
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| LeaseValueError::Json(e.to_string()))?;
        let Value::Object(obj) = v else {
            return Err(LeaseValueError::NotObject);
        };
        let public_ip: Ipv4Addr = match obj.get("PublicIP") {
            None | Some(Value::Null) => return Err(LeaseValueError::NoPublicIp),
            Some(Value::String(s)) => s
                .parse()
                .map_err(|_| LeaseValueError::BadPublicIp(shown(format!("{s:?}"))))?,
            Some(other) => return Err(LeaseValueError::BadPublicIp(shown(other.to_string()))),
        };
        if !is_host_address(public_ip) {
            return Err(LeaseValueError::NotUnicast(public_ip));
        }
        let backend_type = match obj.get("BackendType") {
            None | Some(Value::Null) => "udp".to_string(),
            Some(Value::String(s)) if s.is_empty() => "udp".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(LeaseValueError::BadBackendType(shown(other.to_string()))),
        };
        let backend_data = match obj.get("BackendData") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.clone()),
        };
        Ok(LeaseAttrs {
            public_ip,
            backend_type,
            backend_data,
        })
    }

    /// The value to store, keys in flannel's order.
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Wire<'a> {
            #[serde(rename = "PublicIP")]
            public_ip: String,
            #[serde(rename = "BackendType")]
            backend_type: &'a str,
            #[serde(rename = "BackendData")]
            backend_data: &'a Option<Value>,
        }
        serde_json::to_string(&Wire {
            public_ip: self.public_ip.to_string(),
            backend_type: &self.backend_type,
            backend_data: &self.backend_data,
        })
        .expect("plain data serializes")
    }

    /// Raw BackendData as JSON text, empty when there is none.
    pub fn backend_data_json(&self) -> String {
        self.backend_data
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default()
    }
}

/// Whether peers could send to this address: not unspecified, loopback,
/// broadcast or multicast (nor the reserved 240/4).
pub fn is_host_address(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.octets()[0] >= 240)
}

/// One key under `<prefix>/subnets/` as last seen in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub subnet: Ipv4Net,
    pub attrs: LeaseAttrs,
    /// The value exactly as stored: two values can read the same and still
    /// differ (flannel's udp lease has no BackendType).
    pub value: String,
    /// The etcd lease the key is attached to; 0 for a reservation.
    pub lease_id: i64,
    pub mod_revision: i64,
    pub create_revision: i64,
}

impl Lease {
    pub fn is_reservation(&self) -> bool {
        self.lease_id == 0
    }
}

/// Why this host's stored lease value must be rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// It names another PublicIP (a reservation or lease for our old address).
    PublicIp { stored: Ipv4Addr },
    /// The config moved this host to another backend.
    Backend { stored: String },
    /// Same backend, other BackendData (e.g. another VtepMAC, or none).
    BackendData,
    /// Same meaning, other spelling: written by flannel or an older kolach.
    Spelling,
}

impl fmt::Display for Rewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rewrite::PublicIp { stored } => write!(f, "it names PublicIP {stored}"),
            Rewrite::Backend { stored } => write!(f, "it names BackendType {stored}"),
            Rewrite::BackendData => f.write_str("its BackendData differs"),
            Rewrite::Spelling => f.write_str("it is spelled the old way"),
        }
    }
}

/// Whether `stored` (this host's key) must be rewritten to hold `want`, and
/// why; None when it already holds exactly `want.to_json()`.
pub fn rewrite_reason(stored: &Lease, want: &LeaseAttrs) -> Option<Rewrite> {
    let have = &stored.attrs;
    if have.public_ip != want.public_ip {
        Some(Rewrite::PublicIp {
            stored: have.public_ip,
        })
    } else if have.backend_type != want.backend_type {
        Some(Rewrite::Backend {
            stored: have.backend_type.clone(),
        })
    } else if have.backend_data != want.backend_data {
        Some(Rewrite::BackendData)
    } else if stored.value != want.to_json() {
        Some(Rewrite::Spelling)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_kolach_and_flannel_values() {
        let a = LeaseAttrs::parse(
            br#"{"PublicIP":"198.18.0.1","BackendType":"udp","BackendData":null}"#,
        )
        .unwrap();
        assert_eq!(a, LeaseAttrs::new("198.18.0.1".parse().unwrap(), "udp"));
        // flannel's udp lease: no BackendType at all.
        let f = LeaseAttrs::parse(br#"{"PublicIP":"198.18.0.2"}"#).unwrap();
        assert_eq!(f.backend_type, "udp");
        let v = LeaseAttrs::parse(
            br#"{"PublicIP":"198.18.0.3","BackendType":"vxlan","BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff"}}"#,
        )
        .unwrap();
        assert_eq!(v.backend_type, "vxlan");
        assert_eq!(v.backend_data, Some(json!({"VtepMAC":"aa:bb:cc:dd:ee:ff"})));
        assert_eq!(v.backend_data_json(), r#"{"VtepMAC":"aa:bb:cc:dd:ee:ff"}"#);
        // Unknown backends pass through as written.
        let w =
            LeaseAttrs::parse(br#"{"PublicIP":"198.18.0.4","BackendType":"wireguard"}"#).unwrap();
        assert_eq!(w.backend_type, "wireguard");
    }

    #[test]
    fn serializes_flannel_style() {
        let a = LeaseAttrs::new("198.18.0.1".parse().unwrap(), "udp");
        assert_eq!(
            a.to_json(),
            r#"{"PublicIP":"198.18.0.1","BackendType":"udp","BackendData":null}"#
        );
        assert_eq!(LeaseAttrs::parse(a.to_json().as_bytes()).unwrap(), a);
    }

    #[test]
    fn our_value_per_backend() {
        let ip: Ipv4Addr = "198.18.0.1".parse().unwrap();
        let want = [
            (
                BackendKind::Udp,
                r#"{"PublicIP":"198.18.0.1","BackendType":"udp","BackendData":null}"#,
            ),
            (
                BackendKind::Vxlan,
                r#"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:6b:c6:12:00:01"}}"#,
            ),
            (
                BackendKind::HostGw,
                r#"{"PublicIP":"198.18.0.1","BackendType":"host-gw","BackendData":null}"#,
            ),
            (
                BackendKind::Alloc,
                r#"{"PublicIP":"198.18.0.1","BackendType":"alloc","BackendData":null}"#,
            ),
        ];
        for (kind, json) in want {
            let a = LeaseAttrs::ours(kind, ip);
            assert_eq!(a.to_json(), json, "{kind}");
            assert_eq!(LeaseAttrs::parse(json.as_bytes()).unwrap(), a);
        }
    }

    fn stored(value: &str) -> Lease {
        Lease {
            subnet: "10.50.18.0/24".parse().unwrap(),
            attrs: LeaseAttrs::parse(value.as_bytes()).unwrap(),
            value: value.to_string(),
            lease_id: 7,
            mod_revision: 3,
            create_revision: 3,
        }
    }

    #[test]
    fn rewrite_decision() {
        let ip: Ipv4Addr = "198.18.0.1".parse().unwrap();
        let udp = LeaseAttrs::ours(BackendKind::Udp, ip);
        let vxlan = LeaseAttrs::ours(BackendKind::Vxlan, ip);
        let host_gw = LeaseAttrs::ours(BackendKind::HostGw, ip);
        // Exactly what we write: nothing to do.
        assert_eq!(rewrite_reason(&stored(&udp.to_json()), &udp), None);
        assert_eq!(rewrite_reason(&stored(&vxlan.to_json()), &vxlan), None);
        // Backend switch, both ways.
        assert_eq!(
            rewrite_reason(&stored(&udp.to_json()), &vxlan),
            Some(Rewrite::Backend {
                stored: "udp".into()
            })
        );
        assert_eq!(
            rewrite_reason(&stored(&vxlan.to_json()), &host_gw),
            Some(Rewrite::Backend {
                stored: "vxlan".into()
            })
        );
        // An older kolach's vxlan lease (no MAC) and flannel's (random MAC, VNI).
        for old in [
            r#"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":null}"#,
            r#"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:6b:c6:12:00:01"}}"#,
            r#"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff"}}"#,
        ] {
            assert_eq!(
                rewrite_reason(&stored(old), &vxlan),
                Some(Rewrite::BackendData),
                "{old}"
            );
        }
        // flannel's udp spelling reads the same but is rewritten once.
        assert_eq!(
            rewrite_reason(&stored(r#"{"PublicIP":"198.18.0.1"}"#), &udp),
            Some(Rewrite::Spelling)
        );
        assert_eq!(
            rewrite_reason(
                &stored(r#"{"BackendType":"udp","PublicIP":"198.18.0.1","BackendData":null}"#),
                &udp
            ),
            Some(Rewrite::Spelling)
        );
        assert_eq!(
            rewrite_reason(
                &stored(r#"{"PublicIP":"198.18.0.9","BackendType":"udp","BackendData":null}"#),
                &udp
            ),
            Some(Rewrite::PublicIp {
                stored: "198.18.0.9".parse().unwrap()
            })
        );
        assert_eq!(
            Rewrite::Backend {
                stored: "udp".into()
            }
            .to_string(),
            "it names BackendType udp"
        );
    }

    #[test]
    fn garbage_gets_a_specific_error() {
        let cases: [(&[u8], LeaseValueError); 6] = [
            (
                b"{",
                LeaseValueError::Json("EOF while parsing an object at line 1 column 1".into()),
            ),
            (b"[1]", LeaseValueError::NotObject),
            (br#"{"BackendType":"udp"}"#, LeaseValueError::NoPublicIp),
            (
                br#"{"PublicIP":"fd00::1"}"#,
                LeaseValueError::BadPublicIp("\"fd00::1\"".into()),
            ),
            (
                br#"{"PublicIP":7}"#,
                LeaseValueError::BadPublicIp("7".into()),
            ),
            (
                br#"{"PublicIP":"198.18.0.1","BackendType":3}"#,
                LeaseValueError::BadBackendType("3".into()),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(LeaseAttrs::parse(bytes).unwrap_err(), want);
        }
    }

    #[test]
    fn out_of_range_and_enormous_values() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "240.1.2.3",
        ] {
            let v = format!(r#"{{"PublicIP":"{ip}"}}"#);
            assert_eq!(
                LeaseAttrs::parse(v.as_bytes()).unwrap_err(),
                LeaseValueError::NotUnicast(ip.parse().unwrap()),
                "{ip}"
            );
        }
        let big = format!(
            r#"{{"PublicIP":"198.18.0.1","Pad":"{}"}}"#,
            "x".repeat(MAX_VALUE_BYTES)
        );
        assert!(matches!(
            LeaseAttrs::parse(big.as_bytes()),
            Err(LeaseValueError::TooLarge(n)) if n == big.len()
        ));
        // A huge wrong-typed field is named, not copied whole into the log.
        let arr = format!(r#"{{"PublicIP":[{}]}}"#, vec!["1"; 3000].join(","));
        let e = LeaseAttrs::parse(arr.as_bytes()).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
        assert!(e.starts_with("lease PublicIP [1,1,"), "{e}");
    }

    #[test]
    fn mangled_values_never_panic() {
        use rand::{Rng, SeedableRng};
        let seed = br#"{"PublicIP":"198.18.0.3","BackendType":"vxlan","BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff"}}"#;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..20_000 {
            let mut b = seed.to_vec();
            for _ in 0..rng.random_range(1..6) {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            if let Ok(a) = LeaseAttrs::parse(&b) {
                assert_eq!(LeaseAttrs::parse(a.to_json().as_bytes()).unwrap(), a);
            }
        }
    }
}
