//! Finding the underlay: the interface traffic between hosts leaves by, its
//! IPv4 address and its MTU. Reads the current network namespace only
//! (/proc/net/route, getifaddrs, SIOCGIFMTU), so it works under `ip netns exec`.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use nix::ifaddrs::getifaddrs;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

#[derive(Debug, thiserror::Error)]
pub enum UnderlayError {
    #[error("no default route; pass --iface")]
    NoDefaultRoute,
    #[error("cannot read /proc/net/route: {0}")]
    RouteTable(std::io::Error),
    #[error("cannot list interfaces: {0}")]
    Interfaces(nix::Error),
    #[error("no interface named {0}")]
    NoSuchInterface(String),
    #[error("no interface has the address {0}")]
    NoSuchAddress(Ipv4Addr),
    #[error("interface {0} has no IPv4 address")]
    NoIpv4(String),
    #[error("cannot read the MTU of {iface}: {source}")]
    Mtu {
        iface: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    pub iface: String,
    /// The interface's own address.
    pub iface_addr: Ipv4Addr,
    /// The address written into the lease (`--public-ip`, else `iface_addr`).
    pub public_ip: Ipv4Addr,
    pub mtu: u32,
}

/// Resolves `--iface` (a name or an address; default: the default route's
/// interface) and `--public-ip`.
pub fn detect(iface: Option<&str>, public_ip: Option<Ipv4Addr>) -> Result<Underlay, UnderlayError> {
    let addrs = interface_addrs()?;
    let (name, addr) = match iface {
        Some(spec) => match spec.parse::<Ipv4Addr>() {
            Ok(ip) => {
                let name = addrs
                    .iter()
                    .find(|(_, a)| *a == ip)
                    .map(|(n, _)| n.clone())
                    .ok_or(UnderlayError::NoSuchAddress(ip))?;
                (name, ip)
            }
            Err(_) => (spec.to_string(), first_v4(&addrs, spec)?),
        },
        None => {
            let text =
                std::fs::read_to_string("/proc/net/route").map_err(UnderlayError::RouteTable)?;
            let name = default_route_iface(&text).ok_or(UnderlayError::NoDefaultRoute)?;
            let addr = first_v4(&addrs, &name)?;
            (name, addr)
        }
    };
    let mtu = mtu(&name)?;
    Ok(Underlay {
        public_ip: public_ip.unwrap_or(addr),
        iface: name,
        iface_addr: addr,
        mtu,
    })
}

/// Every (interface, IPv4 address) pair; an interface without one appears
/// with 0.0.0.0 so "no such interface" and "no IPv4 address" stay distinct.
fn interface_addrs() -> Result<Vec<(String, Ipv4Addr)>, UnderlayError> {
    let mut out = Vec::new();
    for ifa in getifaddrs().map_err(UnderlayError::Interfaces)? {
        let v4 = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|s| s.ip());
        match v4 {
            Some(ip) => out.push((ifa.interface_name, ip)),
            None => out.push((ifa.interface_name, Ipv4Addr::UNSPECIFIED)),
        }
    }
    Ok(out)
}

fn first_v4(addrs: &[(String, Ipv4Addr)], name: &str) -> Result<Ipv4Addr, UnderlayError> {
    if !addrs.iter().any(|(n, _)| n == name) {
        return Err(UnderlayError::NoSuchInterface(name.to_string()));
    }
    addrs
        .iter()
        .find(|(n, a)| n == name && !a.is_unspecified())
        .map(|(_, a)| *a)
        .ok_or_else(|| UnderlayError::NoIpv4(name.to_string()))
}

/// The interface of the default route with the lowest metric, from the text
/// of /proc/net/route.
pub fn default_route_iface(text: &str) -> Option<String> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            if f.len() < 8 || f[1] != "00000000" || f[7] != "00000000" {
                return None;
            }
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            const RTF_UP: u32 = 0x1;
            if flags & RTF_UP == 0 {
                return None;
            }
            let metric: u32 = f[6].parse().ok()?;
            Some((metric, f[0].to_string()))
        })
        .min()
        .map(|(_, name)| name)
}

/// `struct ifreq` with the `ifr_mtu` member of the union, padded to the
/// kernel's 40 bytes (never smaller than libc's, checked below).
#[repr(C)]
struct IfReqMtu {
    name: [u8; libc::IFNAMSIZ],
    mtu: libc::c_int,
    _pad: [u8; 20],
}

const _: () = assert!(std::mem::size_of::<IfReqMtu>() >= std::mem::size_of::<libc::ifreq>());

nix::ioctl_read_bad!(siocgifmtu, libc::SIOCGIFMTU, IfReqMtu);

/// The MTU by ioctl, which (unlike /sys) always answers for the caller's
/// network namespace.
fn mtu(name: &str) -> Result<u32, UnderlayError> {
    let err = |errno: nix::Error| UnderlayError::Mtu {
        iface: name.to_string(),
        source: errno.into(),
    };
    if name.len() >= libc::IFNAMSIZ {
        return Err(UnderlayError::NoSuchInterface(name.to_string()));
    }
    // Any socket will do for SIOCGIFMTU; dropping the OwnedFd closes it.
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err)?;
    let mut req = IfReqMtu {
        name: [0; libc::IFNAMSIZ],
        mtu: 0,
        _pad: [0; 20],
    };
    // The length check above leaves the last byte NUL.
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `sock` is an open socket for the whole call, and `req` is a
    // live ifreq (NUL-terminated name, at least libc's size) that the kernel
    // only writes within.
    #[allow(unsafe_code)]
    unsafe { siocgifmtu(sock.as_raw_fd(), &mut req) }.map_err(err)?;
    Ok(req.mtu as u32)
}

/// Re-reads the MTU (the underlay's MTU may be changed while we run).
pub fn current_mtu(name: &str) -> Result<u32, UnderlayError> {
    mtu(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_picks_lowest_metric_up_route() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth1\t00000000\t010012C6\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
                    eth0\t00000000\t010012C6\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                    eth0\t000012C6\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        assert_eq!(default_route_iface(text).as_deref(), Some("eth0"));
        let none = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t000012C6\t00000000\t0001\t0\t0\t0\t0000FFFF\n";
        assert_eq!(default_route_iface(none), None);
    }

    #[test]
    fn loopback_by_name_and_by_address() {
        let u = detect(Some("lo"), Some("198.18.0.7".parse().unwrap())).unwrap();
        assert_eq!(u.iface, "lo");
        assert_eq!(u.iface_addr, Ipv4Addr::LOCALHOST);
        assert_eq!(u.public_ip, "198.18.0.7".parse::<Ipv4Addr>().unwrap());
        assert!(u.mtu >= 1280);
        let by_ip = detect(Some("127.0.0.1"), None).unwrap();
        assert_eq!(by_ip.iface, "lo");
        assert_eq!(by_ip.public_ip, Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn mtu_errors_name_the_interface_and_close_the_socket() {
        let e = current_mtu("eth9nope").unwrap_err().to_string();
        assert!(e.starts_with("cannot read the MTU of eth9nope: "), "{e}");
        assert_eq!(
            current_mtu("a-name-longer-than-15")
                .unwrap_err()
                .to_string(),
            "no interface named a-name-longer-than-15"
        );
        // Other tests may open a few files meanwhile (cargo test runs them as
        // threads of one process); a leaked socket per call would be 100.
        let open = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        let before = open();
        for _ in 0..50 {
            assert!(current_mtu("lo").unwrap() >= 1280);
            assert!(current_mtu("eth9nope").is_err());
        }
        assert!(open() < before + 10, "{before} -> {}", open());
    }

    #[test]
    fn clear_errors() {
        assert_eq!(
            detect(Some("eth9nope"), None).unwrap_err().to_string(),
            "no interface named eth9nope"
        );
        assert_eq!(
            detect(Some("192.0.2.77"), None).unwrap_err().to_string(),
            "no interface has the address 192.0.2.77"
        );
    }
}
