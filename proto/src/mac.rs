//! Ethernet addresses as both daemons meet them: the vxlan VTEP MAC that
//! controld writes into a lease as `VtepMAC` and sends in a snapshot, and
//! that dataplaned programs into the kernel's FDB and neighbour tables.

use std::fmt;

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("expected 6 bytes, got {0}")]
    Length(usize),
    #[error("{0} is not a unicast address")]
    NotUnicast(Mac),
}

impl Mac {
    /// A usable device or neighbour address: 6 bytes, unicast, not all zero.
    /// A multicast or all-zero VTEP would make the peers' FDB and neighbour
    /// entries nonsense.
    pub fn from_bytes(b: &[u8]) -> Result<Mac, MacError> {
        let a: [u8; 6] = b.try_into().map_err(|_| MacError::Length(b.len()))?;
        let m = Mac(a);
        if !m.is_unicast() {
            return Err(MacError::NotUnicast(m));
        }
        Ok(m)
    }

    /// Parses flannel's spelling, `aa:bb:cc:dd:ee:ff` (either case); only a
    /// usable address (see [`Mac::from_bytes`]).
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
        if parts.next().is_some() {
            return None;
        }
        Mac::from_bytes(&mac).ok()
    }

    /// Unicast (multicast bit clear) and not all zero.
    pub fn is_unicast(self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
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

    #[test]
    fn parses_flannels_spelling_and_prints_it_back() {
        let m = Mac::parse("0E:6b:c6:12:00:01").unwrap();
        assert_eq!(m, Mac([0x0e, 0x6b, 0xc6, 0x12, 0, 1]));
        assert_eq!(m.to_string(), "0e:6b:c6:12:00:01");
    }

    #[test]
    fn refuses_what_no_vtep_can_be() {
        for bad in [
            "",
            "nonsense",
            "0e:6b:c6:12:00",
            "0e:6b:c6:12:00:01:02",
            "0e:6b:c6:12:00:1",
            "+e:6b:c6:12:00:01",
            "0e-6b-c6-12-00-01",
            "0e:6b:c6:12:00:zz",
            "01:00:5e:00:00:01", // multicast
            "ff:ff:ff:ff:ff:ff", // broadcast
            "00:00:00:00:00:00",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Mac::from_bytes(&[1; 5]), Err(MacError::Length(5)));
        assert_eq!(
            Mac::from_bytes(&[0xff; 6]),
            Err(MacError::NotUnicast(Mac([0xff; 6])))
        );
    }
}
