//! The backend kinds both daemons speak of, with their config spelling and
//! their encapsulation overhead, and the conversion to the wire enum.

use std::fmt;

use crate::dataplane::BackendType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendKind {
    Udp,
    Vxlan,
    HostGw,
    Alloc,
    /// flannel 0.4's aws-vpc: the VPC's route tables carry the packets;
    /// controld keeps them, the dataplane makes nothing (DESIGN §11).
    AwsVpc,
}

impl BackendKind {
    pub const ALL: [BackendKind; 5] = [
        BackendKind::Udp,
        BackendKind::Vxlan,
        BackendKind::HostGw,
        BackendKind::Alloc,
        BackendKind::AwsVpc,
    ];

    /// The `Backend.Type` / lease `BackendType` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Udp => "udp",
            BackendKind::Vxlan => "vxlan",
            BackendKind::HostGw => "host-gw",
            BackendKind::Alloc => "alloc",
            BackendKind::AwsVpc => "aws-vpc",
        }
    }

    /// Parses a config / lease backend name; `None` for a name kolach does not know.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// Whether the host's kernel routes peers itself (aws-vpc and alloc: no;
    /// the VPC's router, or nobody, does).
    pub fn routes_peers(self) -> bool {
        !matches!(self, BackendKind::Alloc | BackendKind::AwsVpc)
    }

    /// Bytes the encapsulation adds to every packet (DESIGN §5).
    pub fn overhead(self) -> u32 {
        match self {
            BackendKind::Udp => 28,
            BackendKind::Vxlan => 50,
            BackendKind::HostGw | BackendKind::Alloc | BackendKind::AwsVpc => 0,
        }
    }

    pub fn to_pb(self) -> BackendType {
        match self {
            BackendKind::Udp => BackendType::Udp,
            BackendKind::Vxlan => BackendType::Vxlan,
            BackendKind::HostGw => BackendType::HostGw,
            BackendKind::Alloc => BackendType::Alloc,
            BackendKind::AwsVpc => BackendType::AwsVpc,
        }
    }

    /// The kind of a wire `Backend.type`; `None` for unspecified or unknown values.
    pub fn from_pb(t: i32) -> Option<Self> {
        match BackendType::try_from(t).ok()? {
            BackendType::Udp => Some(BackendKind::Udp),
            BackendType::Vxlan => Some(BackendKind::Vxlan),
            BackendType::HostGw => Some(BackendKind::HostGw),
            BackendType::Alloc => Some(BackendKind::Alloc),
            BackendType::AwsVpc => Some(BackendKind::AwsVpc),
            BackendType::Unspecified => None,
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_wire_roundtrip() {
        for b in BackendKind::ALL {
            assert_eq!(BackendKind::parse(b.as_str()), Some(b));
            assert_eq!(BackendKind::from_pb(b.to_pb() as i32), Some(b));
        }
        assert_eq!(BackendKind::parse("ipip"), None);
        assert_eq!(BackendKind::from_pb(0), None);
        assert_eq!(BackendKind::from_pb(99), None);
    }
}
