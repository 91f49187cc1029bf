//! Conversions between the typed wire messages and `std::net` / `ipnet`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::netpb::{IpAddress, IpNetwork};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetError {
    #[error("address has {0} bytes, expected 4 or 16")]
    BadLength(usize),
    #[error("prefix length {len} is too long for {addr}")]
    BadPrefix { addr: IpAddr, len: u32 },
    #[error("network has no address")]
    MissingAddress,
    #[error("expected an IPv4 {0}")]
    NotV4(&'static str),
}

impl From<IpAddr> for IpAddress {
    fn from(ip: IpAddr) -> Self {
        let addr = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        IpAddress { addr }
    }
}

impl From<Ipv4Addr> for IpAddress {
    fn from(ip: Ipv4Addr) -> Self {
        IpAddr::V4(ip).into()
    }
}

impl TryFrom<&IpAddress> for IpAddr {
    type Error = NetError;
    fn try_from(a: &IpAddress) -> Result<Self, NetError> {
        match a.addr.len() {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(&a.addr[..]).expect("length checked"),
            ))),
            16 => Ok(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&a.addr[..]).expect("length checked"),
            ))),
            n => Err(NetError::BadLength(n)),
        }
    }
}

impl TryFrom<&IpAddress> for Ipv4Addr {
    type Error = NetError;
    fn try_from(a: &IpAddress) -> Result<Self, NetError> {
        match IpAddr::try_from(a)? {
            IpAddr::V4(v4) => Ok(v4),
            IpAddr::V6(_) => Err(NetError::NotV4("address")),
        }
    }
}

impl From<IpNet> for IpNetwork {
    fn from(n: IpNet) -> Self {
        IpNetwork {
            addr: Some(n.addr().into()),
            prefix_len: u32::from(n.prefix_len()),
        }
    }
}

impl From<Ipv4Net> for IpNetwork {
    fn from(n: Ipv4Net) -> Self {
        IpNet::V4(n).into()
    }
}

impl TryFrom<&IpNetwork> for IpNet {
    type Error = NetError;
    fn try_from(n: &IpNetwork) -> Result<Self, NetError> {
        let addr = IpAddr::try_from(n.addr.as_ref().ok_or(NetError::MissingAddress)?)?;
        let len = u8::try_from(n.prefix_len)
            .ok()
            .and_then(|l| IpNet::new(addr, l).ok())
            .ok_or(NetError::BadPrefix {
                addr,
                len: n.prefix_len,
            })?;
        Ok(len)
    }
}

impl TryFrom<&IpNetwork> for Ipv4Net {
    type Error = NetError;
    fn try_from(n: &IpNetwork) -> Result<Self, NetError> {
        match IpNet::try_from(n)? {
            IpNet::V4(v4) => Ok(v4),
            IpNet::V6(_) => Err(NetError::NotV4("network")),
        }
    }
}

/// Decodes an optional message field, naming the field when it is absent.
pub fn required<'a, T>(field: &'a Option<T>, name: &'static str) -> Result<&'a T, tonic::Status> {
    field
        .as_ref()
        .ok_or_else(|| tonic::Status::invalid_argument(format!("{name} is missing")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_v4_network() {
        let n: Ipv4Net = "10.50.18.0/24".parse().unwrap();
        let wire = IpNetwork::from(n);
        assert_eq!(wire.prefix_len, 24);
        assert_eq!(Ipv4Net::try_from(&wire).unwrap(), n);
    }

    #[test]
    fn roundtrip_v6_address() {
        let ip: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(IpAddr::try_from(&IpAddress::from(ip)).unwrap(), ip);
    }

    #[test]
    fn rejects_bad_length_and_prefix() {
        let bad = IpAddress {
            addr: vec![1, 2, 3],
        };
        assert_eq!(IpAddr::try_from(&bad), Err(NetError::BadLength(3)));
        let wire = IpNetwork {
            addr: Some(Ipv4Addr::new(10, 0, 0, 0).into()),
            prefix_len: 33,
        };
        assert!(matches!(
            Ipv4Net::try_from(&wire),
            Err(NetError::BadPrefix { len: 33, .. })
        ));
        let v6 = IpNetwork::from("fd00::/64".parse::<IpNet>().unwrap());
        assert_eq!(Ipv4Net::try_from(&v6), Err(NetError::NotV4("network")));
    }
}
