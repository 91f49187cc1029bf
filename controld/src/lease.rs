//! Lease values and records, pure.
//!
//! The value at `<prefix>/subnets/<key>` is flannel's JSON:
//! `{"PublicIP":"198.18.0.1","BackendType":"udp","BackendData":null}`. flannel's
//! udp leases carry no BackendType and read as udp. BackendData stays raw JSON:
//! only the backend that wrote it knows its shape.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::Value;

/// What a host says about itself in its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAttrs {
    pub public_ip: Ipv4Addr,
    /// As written ("udp" when absent); a peer may run a backend we do not know.
    pub backend_type: String,
    /// Raw `BackendData`; `None` for null or absent.
    pub backend_data: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseValueError {
    #[error("lease value is not valid JSON: {0}")]
    Json(String),
    #[error("lease value is not a JSON object")]
    NotObject,
    #[error("lease value has no PublicIP")]
    NoPublicIp,
    #[error("lease PublicIP {0} is not an IPv4 address")]
    BadPublicIp(String),
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

    pub fn parse(bytes: &[u8]) -> Result<Self, LeaseValueError> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| LeaseValueError::Json(e.to_string()))?;
        let Value::Object(obj) = v else {
            return Err(LeaseValueError::NotObject);
        };
        let public_ip = match obj.get("PublicIP") {
            None | Some(Value::Null) => return Err(LeaseValueError::NoPublicIp),
            Some(Value::String(s)) => s
                .parse()
                .map_err(|_| LeaseValueError::BadPublicIp(format!("{s:?}")))?,
            Some(other) => return Err(LeaseValueError::BadPublicIp(other.to_string())),
        };
        let backend_type = match obj.get("BackendType") {
            None | Some(Value::Null) => "udp".to_string(),
            Some(Value::String(s)) if s.is_empty() => "udp".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(LeaseValueError::BadBackendType(other.to_string())),
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

/// One key under `<prefix>/subnets/` as last seen in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub subnet: Ipv4Net,
    pub attrs: LeaseAttrs,
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
