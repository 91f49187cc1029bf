//! subnet.env (DESIGN §5): what Docker and CNI read to learn this host's
//! subnet and MTU. Formatting and parsing are pure; writing is atomic (temp
//! file in the same directory, fsync, rename) so a reader never sees half a file.

use std::io::{self, Write};
use std::path::Path;

use ipnet::Ipv4Net;

use crate::model::subnet::first_host;

/// The file's content for this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: Ipv4Net,
    pub subnet: Ipv4Net,
    pub mtu: u32,
    pub ipmasq: bool,
}

impl SubnetEnv {
    pub fn render(&self) -> String {
        format!(
            "KOLACH_NETWORK={}\nKOLACH_SUBNET={}\nKOLACH_MTU={}\nKOLACH_IPMASQ={}\n",
            self.network,
            first_host(self.subnet),
            self.mtu,
            self.ipmasq
        )
    }

    /// flannel's subnet.env for the same lease, byte for byte as flanneld's
    /// WriteSubnetFile writes it (IPv4 only): `FLANNEL_NETWORK`,
    /// `FLANNEL_SUBNET` (the first address, with the subnet's prefix
    /// length), `FLANNEL_MTU`, `FLANNEL_IPMASQ`, in that order.
    pub fn render_flannel(&self) -> String {
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.network,
            first_host(self.subnet),
            self.mtu,
            self.ipmasq
        )
    }
}

/// The subnet a previous run wrote (`KOLACH_SUBNET=10.50.18.1/24` →
/// `10.50.18.0/24`; flanneld's or our flannel file's `FLANNEL_SUBNET=` alike),
/// if the text has a readable one.
pub fn parse_subnet(text: &str) -> Option<Ipv4Net> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("KOLACH_SUBNET=")
                .or_else(|| l.strip_prefix("FLANNEL_SUBNET="))
        })
        .filter_map(|v| v.trim().trim_matches('"').parse::<Ipv4Net>().ok())
        .map(|n| n.trunc())
        .next_back()
}

/// Reads the previous subnet from `path`; a missing or unreadable file is
/// simply no hint.
pub fn read_previous(path: &Path) -> Option<Ipv4Net> {
    std::fs::read_to_string(path)
        .ok()
        .as_deref()
        .and_then(parse_subnet)
}

/// Writes `contents` to `path` atomically, creating the directory if needed.
pub fn write_atomic(path: &Path, contents: &str) -> io::Result<()> {
    write_atomic_mode(path, contents, None)
}

/// [`write_atomic`] with the file's mode set (flannel's file is 0644 whatever
/// the umask, as flanneld writes it).
pub fn write_atomic_mode(path: &Path, contents: &str, mode: Option<u32>) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "subnet file has no name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_contract() {
        let env = SubnetEnv {
            network: "10.50.0.0/16".parse().unwrap(),
            subnet: "10.50.18.0/24".parse().unwrap(),
            mtu: 1472,
            ipmasq: false,
        };
        assert_eq!(
            env.render(),
            "KOLACH_NETWORK=10.50.0.0/16\nKOLACH_SUBNET=10.50.18.1/24\nKOLACH_MTU=1472\nKOLACH_IPMASQ=false\n"
        );
        assert_eq!(
            parse_subnet(&env.render()),
            Some("10.50.18.0/24".parse().unwrap())
        );
    }

    #[test]
    fn renders_flannels_file() {
        let env = SubnetEnv {
            network: "10.50.0.0/16".parse().unwrap(),
            subnet: "10.50.18.0/24".parse().unwrap(),
            mtu: 1472,
            ipmasq: true,
        };
        assert_eq!(
            env.render_flannel().as_bytes(),
            b"FLANNEL_NETWORK=10.50.0.0/16\nFLANNEL_SUBNET=10.50.18.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n"
        );
        assert!(env.render().ends_with("KOLACH_IPMASQ=true\n"));
        assert_eq!(
            parse_subnet(&env.render_flannel()),
            Some("10.50.18.0/24".parse().unwrap())
        );
    }

    #[test]
    fn parse_tolerates_noise() {
        assert_eq!(parse_subnet(""), None);
        assert_eq!(parse_subnet("KOLACH_SUBNET=banana\n"), None);
        assert_eq!(
            parse_subnet("# x\n  KOLACH_SUBNET=\"10.50.7.1/24\"  \nKOLACH_MTU=1"),
            Some("10.50.7.0/24".parse().unwrap())
        );
    }

    #[test]
    fn write_is_atomic_and_creates_the_dir() {
        let dir = std::env::temp_dir().join(format!("kolach-env-{}", std::process::id()));
        let path = dir.join("sub/subnet.env");
        write_atomic(&path, "A=1\n").unwrap();
        write_atomic(&path, "A=2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "A=2\n");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
