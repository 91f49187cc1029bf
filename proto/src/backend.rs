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
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Udp,
        BackendKind::Vxlan,
        BackendKind::HostGw,
        BackendKind::Alloc,
    ];

    /// The `Backend.Type` / lease `BackendType` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Udp => "udp",
            BackendKind::Vxlan => "vxlan",
            BackendKind::HostGw => "host-gw",
            BackendKind::Alloc => "alloc",
        }
    }

    /// Parses a config / lease backend name; `None` for a name kolach does not know.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// Bytes the encapsulation adds to every packet (DESIGN §5).
    pub fn overhead(self) -> u32 {
        match self {
            BackendKind::Udp => 28,
            BackendKind::Vxlan => 50,
            BackendKind::HostGw | BackendKind::Alloc => 0,
        }
    }

    pub fn to_pb(self) -> BackendType {
        match self {
            BackendKind::Udp => BackendType::Udp,
            BackendKind::Vxlan => BackendType::Vxlan,
            BackendKind::HostGw => BackendType::HostGw,
            BackendKind::Alloc => BackendType::Alloc,
        }
    }

    /// The kind of a wire `Backend.type`; `None` for unspecified or unknown values.
    pub fn from_pb(t: i32) -> Option<Self> {
        match BackendType::try_from(t).ok()? {
            BackendType::Udp => Some(BackendKind::Udp),
            BackendType::Vxlan => Some(BackendKind::Vxlan),
            BackendType::HostGw => Some(BackendKind::HostGw),
            BackendType::Alloc => Some(BackendKind::Alloc),
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
