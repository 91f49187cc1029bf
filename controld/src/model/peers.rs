//! Which peer leases this host routes to, and what it tells the operator
//! about the others, pure.
//!
//! Like flannel, every backend routes only to leases of its own BackendType
//! (udp also takes flannel's leases without one); a vxlan lease must also
//! carry a usable `BackendData.VtepMAC`. Leases skipped for either reason are
//! reported: one log line when first seen ([`SkipReport::update`]) and a
//! standing status warning while they last ([`SkipReport::warnings`]).

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::config::BackendKind;
use crate::model::lease::Lease;
use crate::model::vtep::{self, Mac};

/// How many subnets a status warning names before "and N more".
const NAMED: usize = 8;

/// A peer this host routes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer<'a> {
    pub lease: &'a Lease,
    /// vxlan only.
    pub vtep_mac: Option<Mac>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// The lease's BackendType is not this host's backend.
    OtherBackend,
    /// A vxlan lease without a usable `BackendData.VtepMAC`.
    NoVtepMac,
    /// Outside the Network, or not of this host's subnet size: routing it
    /// could take over the whole overlay or a piece of another host's subnet.
    OutOfRange,
}

/// A peer lease this host does not route to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Skipped {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    /// The lease's BackendType, as written.
    pub backend: String,
    /// This host's backend when the lease was skipped.
    pub ours: BackendKind,
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            SkipReason::OtherBackend => write!(f, "{} ({})", self.subnet, self.backend),
            SkipReason::NoVtepMac | SkipReason::OutOfRange => {
                write!(f, "{} ({})", self.subnet, self.public_ip)
            }
        }
    }
}

/// The peer leases, split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers<'a> {
    /// Sorted by subnet.
    pub routed: Vec<Peer<'a>>,
    /// Sorted by subnet.
    pub skipped: Vec<Skipped>,
}

/// Splits `leases` into the peers a host running `ours` routes to and the
/// ones it skips. This host's own keys (its subnet, or any key naming its
/// PublicIP) are neither. A peer subnet must lie inside `network` and be of
/// the local subnet's size (SubnetLen), so no lease can cover the whole
/// overlay or part of another host's subnet.
pub fn classify<'a>(
    ours: BackendKind,
    network: Ipv4Net,
    local_subnet: Ipv4Net,
    local_ip: Ipv4Addr,
    leases: impl IntoIterator<Item = &'a Lease>,
) -> Peers<'a> {
    let mut peers = Peers::default();
    for l in leases {
        if l.subnet == local_subnet || l.attrs.public_ip == local_ip {
            continue;
        }
        let skip = |reason| Skipped {
            subnet: l.subnet,
            public_ip: l.attrs.public_ip,
            backend: l.attrs.backend_type.clone(),
            ours,
            reason,
        };
        if !network.contains(&l.subnet) || l.subnet.prefix_len() != local_subnet.prefix_len() {
            peers.skipped.push(skip(SkipReason::OutOfRange));
            continue;
        }
        if BackendKind::parse(&l.attrs.backend_type) != Some(ours) {
            peers.skipped.push(skip(SkipReason::OtherBackend));
            continue;
        }
        let vtep_mac = vtep::from_backend_data(l.attrs.backend_data.as_ref());
        if ours == BackendKind::Vxlan && vtep_mac.is_none() {
            peers.skipped.push(skip(SkipReason::NoVtepMac));
            continue;
        }
        peers.routed.push(Peer {
            lease: l,
            vtep_mac: vtep_mac.filter(|_| ours == BackendKind::Vxlan),
        });
    }
    peers.routed.sort_by_key(|p| p.lease.subnet);
    peers.skipped.sort();
    peers
}

/// What changed in the set of skipped leases since the last update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Skipped now, not before: log it once.
    Skipped(Skipped),
    /// Skipped before, routed now (e.g. the peer finished a backend switch).
    Routed(Skipped),
}

/// The skipped leases last reported, so each is logged once.
#[derive(Debug, Clone, Default)]
pub struct SkipReport {
    current: BTreeSet<Skipped>,
}

impl SkipReport {
    /// Records the latest classification and returns what to log: nothing
    /// when the skipped set is what it was.
    pub fn update(&mut self, peers: &Peers<'_>) -> Vec<Note> {
        let new: BTreeSet<Skipped> = peers.skipped.iter().cloned().collect();
        let mut notes: Vec<Note> = new
            .difference(&self.current)
            .cloned()
            .map(Note::Skipped)
            .collect();
        notes.extend(
            self.current
                .difference(&new)
                .filter(|s| peers.routed.iter().any(|p| p.lease.subnet == s.subnet))
                .cloned()
                .map(Note::Routed),
        );
        self.current = new;
        notes
    }

    /// Forgets everything (this host no longer holds a lease).
    pub fn clear(&mut self) {
        self.current.clear();
    }

    /// One status line per reason that has skipped leases, e.g.
    /// `2 leases of another backend ignored: 10.50.7.0/24 (vxlan), 10.50.9.0/24 (host-gw)`.
    pub fn warnings(&self) -> Vec<String> {
        let line = |reason: SkipReason, one: &str, many: &str, tail: &str| {
            let hits: Vec<&Skipped> = self.current.iter().filter(|s| s.reason == reason).collect();
            if hits.is_empty() {
                return None;
            }
            let mut names: Vec<String> = hits.iter().take(NAMED).map(|s| s.to_string()).collect();
            if hits.len() > NAMED {
                names.push(format!("and {} more", hits.len() - NAMED));
            }
            let noun = if hits.len() == 1 { one } else { many };
            Some(format!(
                "{} {noun} {tail}: {}",
                hits.len(),
                names.join(", ")
            ))
        };
        [
            line(
                SkipReason::OtherBackend,
                "lease of another backend",
                "leases of another backend",
                "ignored",
            ),
            line(
                SkipReason::NoVtepMac,
                "vxlan lease without a valid VtepMAC",
                "vxlan leases without a valid VtepMAC",
                "not routed",
            ),
            line(
                SkipReason::OutOfRange,
                "lease outside the Network or of another size than SubnetLen",
                "leases outside the Network or of another size than SubnetLen",
                "not routed",
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lease::LeaseAttrs;

    fn lease(subnet: &str, value: &str) -> Lease {
        Lease {
            subnet: subnet.parse().unwrap(),
            attrs: LeaseAttrs::parse(value.as_bytes()).unwrap(),
            value: value.into(),
            lease_id: 1,
            mod_revision: 1,
            create_revision: 1,
        }
    }

    fn ours(kind: BackendKind, subnet: &str, ip: &str) -> Lease {
        lease(
            subnet,
            &LeaseAttrs::ours(kind, ip.parse().unwrap()).to_json(),
        )
    }

    fn split<'a>(kind: BackendKind, leases: &'a [Lease]) -> Peers<'a> {
        classify(
            kind,
            "10.50.0.0/16".parse().unwrap(),
            "10.50.18.0/24".parse().unwrap(),
            "198.18.0.1".parse().unwrap(),
            leases,
        )
    }

    fn routed(p: &Peers<'_>) -> Vec<String> {
        p.routed
            .iter()
            .map(|p| p.lease.subnet.to_string())
            .collect()
    }

    fn mixed() -> Vec<Lease> {
        vec![
            ours(BackendKind::Vxlan, "10.50.30.0/24", "198.18.0.3"),
            ours(BackendKind::Udp, "10.50.18.0/24", "198.18.0.1"), // this host
            ours(BackendKind::Udp, "10.50.10.0/24", "198.18.0.1"), // this host, duplicate key
            ours(BackendKind::Udp, "10.50.7.0/24", "198.18.0.2"),
            lease("10.50.8.0/24", r#"{"PublicIP":"198.18.0.8"}"#), // flannel udp
            ours(BackendKind::HostGw, "10.50.9.0/24", "198.18.0.4"),
            ours(BackendKind::Alloc, "10.50.11.0/24", "198.18.0.11"),
            lease(
                "10.50.12.0/24",
                r#"{"PublicIP":"198.18.0.12","BackendType":"wireguard"}"#,
            ),
            lease(
                "10.50.13.0/24",
                r#"{"PublicIP":"198.18.0.13","BackendType":"vxlan","BackendData":null}"#,
            ),
            lease(
                "10.50.14.0/24",
                r#"{"PublicIP":"198.18.0.14","BackendType":"vxlan","BackendData":{"VtepMAC":"ff:ff:ff:ff:ff:ff"}}"#,
            ),
            ours(BackendKind::Udp, "10.60.1.0/24", "198.18.0.5"), // outside Network
            ours(BackendKind::Udp, "10.50.0.0/16", "198.18.0.6"), // the whole Network
            ours(BackendKind::Udp, "10.50.18.128/25", "198.18.0.7"), // half of ours
            ours(BackendKind::Udp, "10.50.7.0/25", "198.18.0.8"), // half of a peer's
        ]
    }

    #[test]
    fn each_backend_routes_its_own_type_only() {
        let leases = mixed();
        let udp = split(BackendKind::Udp, &leases);
        assert_eq!(routed(&udp), ["10.50.7.0/24", "10.50.8.0/24"]);
        assert!(udp.routed.iter().all(|p| p.vtep_mac.is_none()));
        let skipped: Vec<String> = udp
            .skipped
            .iter()
            .filter(|s| s.reason == SkipReason::OtherBackend)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            skipped,
            [
                "10.50.9.0/24 (host-gw)",
                "10.50.11.0/24 (alloc)",
                "10.50.12.0/24 (wireguard)",
                "10.50.13.0/24 (vxlan)",
                "10.50.14.0/24 (vxlan)",
                "10.50.30.0/24 (vxlan)",
            ]
        );
        assert!(udp
            .skipped
            .iter()
            .filter(|s| s.reason != SkipReason::OutOfRange)
            .all(|s| s.reason == SkipReason::OtherBackend && s.ours == BackendKind::Udp));
        let out: Vec<String> = udp
            .skipped
            .iter()
            .filter(|s| s.reason == SkipReason::OutOfRange)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            out,
            [
                "10.50.0.0/16 (198.18.0.6)",
                "10.50.7.0/25 (198.18.0.8)",
                "10.50.18.128/25 (198.18.0.7)",
                "10.60.1.0/24 (198.18.0.5)",
            ]
        );

        let vx = split(BackendKind::Vxlan, &leases);
        assert_eq!(routed(&vx), ["10.50.30.0/24"]);
        assert_eq!(
            vx.routed[0].vtep_mac,
            Some(vtep::for_public_ip("198.18.0.3".parse().unwrap()))
        );
        let no_mac: Vec<String> = vx
            .skipped
            .iter()
            .filter(|s| s.reason == SkipReason::NoVtepMac)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            no_mac,
            ["10.50.13.0/24 (198.18.0.13)", "10.50.14.0/24 (198.18.0.14)"]
        );
        assert_eq!(vx.skipped.len(), 11);

        assert_eq!(
            routed(&split(BackendKind::HostGw, &leases)),
            ["10.50.9.0/24"]
        );
        assert_eq!(
            routed(&split(BackendKind::Alloc, &leases)),
            ["10.50.11.0/24"]
        );
    }

    #[test]
    fn skipped_leases_are_noted_once() {
        let mut r = SkipReport::default();
        let mut leases = vec![
            ours(BackendKind::Udp, "10.50.7.0/24", "198.18.0.2"),
            ours(BackendKind::HostGw, "10.50.9.0/24", "198.18.0.4"),
        ];
        let notes = r.update(&split(BackendKind::Vxlan, &leases));
        assert_eq!(notes.len(), 2);
        assert!(notes.iter().all(|n| matches!(n, Note::Skipped(_))));
        // The same table again, as after every unrelated event: silence.
        for _ in 0..5 {
            assert!(r.update(&split(BackendKind::Vxlan, &leases)).is_empty());
        }
        assert_eq!(
            r.warnings(),
            ["2 leases of another backend ignored: 10.50.7.0/24 (udp), 10.50.9.0/24 (host-gw)"]
        );
        // One peer finishes its switch to vxlan; the other goes away.
        leases[0] = ours(BackendKind::Vxlan, "10.50.7.0/24", "198.18.0.2");
        leases.pop();
        let notes = r.update(&split(BackendKind::Vxlan, &leases));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(matches!(&notes[0], Note::Routed(s) if s.subnet.to_string() == "10.50.7.0/24"));
        assert!(r.warnings().is_empty());
        // This host switches: the same lease is skipped for another reason.
        let notes = r.update(&split(BackendKind::Udp, &leases));
        assert!(matches!(&notes[..], [Note::Skipped(s)] if s.ours == BackendKind::Udp));
        assert_eq!(
            r.warnings(),
            ["1 lease of another backend ignored: 10.50.7.0/24 (vxlan)"]
        );
        r.clear();
        assert!(r.warnings().is_empty());
    }

    #[test]
    fn warnings_name_a_few_and_count_the_rest() {
        let mut leases: Vec<Lease> = (1..=10)
            .map(|i| {
                ours(
                    BackendKind::Udp,
                    &format!("10.50.{i}.0/24"),
                    &format!("198.18.1.{i}"),
                )
            })
            .collect();
        leases.push(lease(
            "10.50.100.0/24",
            r#"{"PublicIP":"198.18.0.100","BackendType":"vxlan"}"#,
        ));
        let mut r = SkipReport::default();
        r.update(&split(BackendKind::Vxlan, &leases));
        let w = r.warnings();
        assert_eq!(w.len(), 2);
        assert!(
            w[0].starts_with("10 leases of another backend ignored: 10.50.1.0/24 (udp), "),
            "{}",
            w[0]
        );
        assert!(
            w[0].ends_with(", 10.50.8.0/24 (udp), and 2 more"),
            "{}",
            w[0]
        );
        assert_eq!(
            w[1],
            "1 vxlan lease without a valid VtepMAC not routed: 10.50.100.0/24 (198.18.0.100)"
        );
    }
}
