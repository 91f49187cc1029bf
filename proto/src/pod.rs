//! A pod's host end name (DESIGN §10): `kol` + the first 11 hex digits of
//! SHA-256(container ID ‖ 0x00 ‖ ifname), 14 characters, within IFNAMSIZ.
//!
//! The CNI plugin's DEL and GC find a pod's veth by this name alone (the plugin
//! keeps no state), and `kolachctl ipam check` uses it to tell a live pod from a
//! gone one, so the formula is part of the contract: changing it would strand
//! every veth made by an older version. The NUL cannot occur in either part
//! (container IDs are `[A-Za-z0-9_.-]`, interface names exclude it), so
//! distinct pairs hash distinct inputs.

use sha2::{Digest, Sha256};

pub const PREFIX: &str = "kol";
/// The pool name `kolach.ipam.v1` gives addresses out of the host's own
/// subnet (no block in etcd).
pub const DEFAULT_POOL: &str = "default";
/// Hex digits of the hash in the name.
pub const HASH_DIGITS: usize = 11;

pub fn host_end(container_id: &str, ifname: &str) -> String {
    let mut h = Sha256::new();
    h.update(container_id.as_bytes());
    h.update([0u8]);
    h.update(ifname.as_bytes());
    let digest = h.finalize();
    let mut name = String::with_capacity(PREFIX.len() + HASH_DIGITS);
    name.push_str(PREFIX);
    for b in digest.iter() {
        for nibble in [b >> 4, b & 0xf] {
            if name.len() == PREFIX.len() + HASH_DIGITS {
                return name;
            }
            name.push(char::from_digit(u32::from(nibble), 16).expect("a nibble"));
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_across_versions() {
        // Pinned: a change here strands the veths older plugins made.
        // printf 'abc\0eth0' | sha256sum → d887cd286879fd47…
        assert_eq!(host_end("abc", "eth0"), golden("abc", "eth0"));
        assert_eq!(host_end("abc", "eth0"), "kold887cd28687");
    }

    /// The formula spelled out once more, independently of the loop above.
    fn golden(cid: &str, ifname: &str) -> String {
        let mut input = cid.as_bytes().to_vec();
        input.push(0);
        input.extend_from_slice(ifname.as_bytes());
        let hex: String = Sha256::digest(&input)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("kol{}", &hex[..11])
    }

    #[test]
    fn shape() {
        let cid = "3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755";
        let a = host_end(cid, "eth0");
        assert_eq!(a.len(), 14);
        assert!(a.len() <= 15, "fits IFNAMSIZ");
        assert!(a.starts_with("kol"));
        assert!(a[3..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(a, host_end(cid, "eth0"), "deterministic");
        assert_ne!(a, host_end(cid, "net1"), "differs per ifname");
        assert_ne!(a, host_end("other", "eth0"), "differs per container");
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(host_end("ab", "c"), host_end("a", "bc"));
    }
}
