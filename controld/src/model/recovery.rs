//! Deciding which subnet this host should hold, pure (DESIGN §3 "after a
//! restart"): a lease or reservation naming this host's PublicIP first, then
//! the subnet from the previous subnet.env if its key is free, then a random
//! free candidate. The caller does the etcd writes the decision asks for.

use ipnet::Ipv4Net;
use rand::Rng;

use crate::model::config::NetConfig;
use crate::model::lease::{rewrite_reason, Lease, LeaseAttrs, Rewrite};
use crate::model::subnet::{self, overlaps};

/// What to do about this host's subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Keep an existing lease of ours. `rewrite` says why its value must be
    /// rewritten first (e.g. the backend changed): a txn comparing the key's
    /// mod revision, which keeps the subnet.
    Reuse {
        lease: Lease,
        rewrite: Option<Rewrite>,
    },
    /// A reservation names us: use it (no etcd lease, no keepalive), after
    /// rewriting its value when `rewrite` says so (it stays a reservation).
    Reservation {
        lease: Lease,
        rewrite: Option<Rewrite>,
    },
    /// Create this key (create-if-absent).
    Claim { subnet: Ipv4Net, source: Source },
    /// Every candidate is taken.
    Exhausted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The subnet this host had before (subnet.env or the lease it just lost).
    Previous,
    Random,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Our own leases to delete first (txn comparing mod revision): ones that
    /// no longer fit the config, and duplicates, which would otherwise become
    /// routes to ourselves.
    pub release: Vec<Lease>,
    pub action: Action,
    /// Things the operator should hear about (a reservation that does not fit).
    pub notes: Vec<String>,
}

/// `leases`: everything under `<prefix>/subnets/`; `taken_extra`: subnets of
/// keys with unreadable values; `me`: the value we would write; `previous`:
/// the subnet we held before, if known.
pub fn decide<R: Rng + ?Sized>(
    leases: &[Lease],
    taken_extra: &[Ipv4Net],
    me: &LeaseAttrs,
    previous: Option<Ipv4Net>,
    cfg: &NetConfig,
    rng: &mut R,
) -> Decision {
    let mut notes = Vec::new();
    let mine: Vec<&Lease> = leases
        .iter()
        .filter(|l| l.attrs.public_ip == me.public_ip)
        .collect();

    let reservation = mine
        .iter()
        .filter(|l| l.is_reservation())
        .filter(|l| {
            let fits = cfg.fits_network(l.subnet);
            if !fits {
                notes.push(format!(
                    "reservation {} for {} does not fit Network {} with SubnetLen {}; ignoring it",
                    l.subnet, me.public_ip, cfg.network, cfg.subnet_len
                ));
            }
            fits
        })
        .min_by_key(|l| l.subnet)
        .copied();

    let keep = match reservation {
        Some(_) => None,
        None => mine
            .iter()
            .filter(|l| !l.is_reservation() && cfg.allows(l.subnet))
            .min_by_key(|l| (Some(l.subnet) != previous, l.subnet))
            .copied(),
    };

    let release: Vec<Lease> = mine
        .iter()
        .filter(|l| !l.is_reservation() && Some(**l) != keep)
        .map(|l| (*l).clone())
        .collect();

    let action = if let Some(r) = reservation {
        Action::Reservation {
            lease: r.clone(),
            rewrite: rewrite_reason(r, me),
        }
    } else if let Some(l) = keep {
        Action::Reuse {
            lease: l.clone(),
            rewrite: rewrite_reason(l, me),
        }
    } else {
        let taken: Vec<Ipv4Net> = leases
            .iter()
            .filter(|l| !release.contains(l))
            .map(|l| l.subnet)
            .chain(taken_extra.iter().copied())
            .collect();
        match previous {
            Some(p) if cfg.allows(p) && !taken.iter().any(|t| overlaps(*t, p)) => Action::Claim {
                subnet: p,
                source: Source::Previous,
            },
            _ => match subnet::pick_free(cfg, &taken, rng) {
                Some(subnet) => Action::Claim {
                    subnet,
                    source: Source::Random,
                },
                None => Action::Exhausted,
            },
        }
    };
    Decision {
        release,
        action,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{self, BackendKind};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const ME: &str = "198.18.0.1";

    fn cfg(json: &str) -> NetConfig {
        config::parse(json.as_bytes()).unwrap().config
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn me() -> LeaseAttrs {
        LeaseAttrs::ours(BackendKind::Udp, ME.parse().unwrap())
    }

    fn lease(subnet: &str, ip: &str, lease_id: i64) -> Lease {
        let attrs = LeaseAttrs::ours(BackendKind::Udp, ip.parse().unwrap());
        Lease {
            subnet: net(subnet),
            value: attrs.to_json(),
            attrs,
            lease_id,
            mod_revision: 5,
            create_revision: 5,
        }
    }

    fn run(leases: &[Lease], previous: Option<&str>, c: &NetConfig) -> Decision {
        let mut rng = StdRng::seed_from_u64(3);
        decide(leases, &[], &me(), previous.map(net), c, &mut rng)
    }

    /// Two candidates: 10.50.1.0/24 and 10.50.2.0/24.
    fn two_candidates() -> NetConfig {
        cfg(r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.1.0","SubnetMax":"10.50.2.0"}"#)
    }

    /// [`two_candidates`] with 10.50.1.0/24 taken: 10.50.2.0/24, whatever the seed.
    fn claim_the_free_one() -> Action {
        Action::Claim {
            subnet: net("10.50.2.0/24"),
            source: Source::Random,
        }
    }

    fn small() -> NetConfig {
        cfg(r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.1.0","SubnetMax":"10.50.4.0"}"#)
    }

    #[test]
    fn reuses_own_lease_by_public_ip() {
        let leases = [
            lease("10.50.2.0/24", ME, 9),
            lease("10.50.3.0/24", "198.18.0.2", 8),
        ];
        let d = run(&leases, Some("10.50.4.0/24"), &small());
        assert_eq!(d.release, vec![]);
        assert_eq!(
            d.action,
            Action::Reuse {
                lease: leases[0].clone(),
                rewrite: None
            }
        );
    }

    #[test]
    fn rewrites_own_lease_when_backend_changed() {
        // Our old vxlan lease, now configured for udp: same subnet, new value.
        let mut l = lease("10.50.2.0/24", ME, 9);
        l.attrs = LeaseAttrs::ours(BackendKind::Vxlan, ME.parse().unwrap());
        l.value = l.attrs.to_json();
        let d = run(std::slice::from_ref(&l), Some("10.50.4.0/24"), &small());
        assert!(d.release.is_empty());
        assert_eq!(
            d.action,
            Action::Reuse {
                lease: l,
                rewrite: Some(Rewrite::Backend {
                    stored: "vxlan".into()
                })
            }
        );
    }

    #[test]
    fn reservation_value_is_rewritten_too() {
        let mut r = lease("10.50.3.0/24", ME, 0);
        r.value = format!(r#"{{"PublicIP":"{ME}"}}"#);
        let d = run(std::slice::from_ref(&r), None, &small());
        assert_eq!(
            d.action,
            Action::Reservation {
                lease: r,
                rewrite: Some(Rewrite::Spelling)
            }
        );
    }

    #[test]
    fn reservation_wins_and_own_leases_are_released() {
        let leases = [lease("10.50.2.0/24", ME, 9), lease("10.50.3.0/24", ME, 0)];
        let d = run(&leases, None, &small());
        assert_eq!(
            d.action,
            Action::Reservation {
                lease: leases[1].clone(),
                rewrite: None
            }
        );
        assert_eq!(d.release, vec![leases[0].clone()]);
    }

    #[test]
    fn reservation_outside_min_max_still_counts_but_not_outside_network() {
        let r = lease("10.50.200.0/24", ME, 0);
        let d = run(std::slice::from_ref(&r), None, &small());
        assert_eq!(
            d.action,
            Action::Reservation {
                lease: r,
                rewrite: None
            }
        );
        let far = lease("10.60.1.0/24", ME, 0);
        let d = run(std::slice::from_ref(&far), None, &small());
        assert!(matches!(d.action, Action::Claim { .. }));
        assert_eq!(d.notes.len(), 1, "{:?}", d.notes);
        assert!(d.release.is_empty(), "reservations are never deleted");
    }

    #[test]
    fn someone_elses_reservation_is_never_taken() {
        let c = two_candidates();
        let leases = [lease("10.50.1.0/24", "198.18.0.9", 0)];
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let d = decide(&leases, &[], &me(), Some(net("10.50.1.0/24")), &c, &mut rng);
            assert_eq!(d.action, claim_the_free_one());
        }
    }

    #[test]
    fn lease_that_no_longer_fits_is_released_and_a_new_one_claimed() {
        // SubnetLen went from 24 to 25: the old /24 must go.
        let c = cfg(
            r#"{"Network":"10.50.0.0/16","SubnetLen":25,"SubnetMin":"10.50.1.0","SubnetMax":"10.50.1.128"}"#,
        );
        let old = lease("10.50.1.0/24", ME, 9);
        let d = run(std::slice::from_ref(&old), Some("10.50.1.0/24"), &c);
        assert_eq!(d.release, vec![old]);
        // The released /24 no longer blocks the /25s inside it.
        assert!(
            matches!(d.action, Action::Claim { subnet, source: Source::Random } if c.allows(subnet))
        );
    }

    #[test]
    fn previous_subnet_is_claimed_when_free() {
        let leases = [lease("10.50.3.0/24", "198.18.0.2", 8)];
        let d = run(&leases, Some("10.50.2.0/24"), &small());
        assert_eq!(
            d.action,
            Action::Claim {
                subnet: net("10.50.2.0/24"),
                source: Source::Previous
            }
        );
    }

    #[test]
    fn previous_subnet_taken_or_out_of_range_falls_back_to_random() {
        let leases = [lease("10.50.2.0/24", "198.18.0.2", 8)];
        let d = run(&leases, Some("10.50.2.0/24"), &small());
        assert!(
            matches!(d.action, Action::Claim { source: Source::Random, subnet } if subnet != net("10.50.2.0/24"))
        );
        let d = run(&[], Some("10.50.9.0/24"), &small());
        assert!(
            matches!(d.action, Action::Claim { source: Source::Random, subnet } if small().allows(subnet))
        );
    }

    #[test]
    fn garbage_keys_count_as_taken() {
        let c = two_candidates();
        let mut rng = StdRng::seed_from_u64(0);
        let d = decide(&[], &[net("10.50.1.0/24")], &me(), None, &c, &mut rng);
        assert_eq!(d.action, claim_the_free_one());
    }

    #[test]
    fn exhausted_when_all_taken() {
        let leases: Vec<Lease> = (1..=4)
            .map(|i| {
                lease(
                    &format!("10.50.{i}.0/24"),
                    &format!("198.18.0.{}", 10 + i),
                    3,
                )
            })
            .collect();
        assert_eq!(run(&leases, None, &small()).action, Action::Exhausted);
    }

    #[test]
    fn duplicate_own_leases_keep_the_previous_one() {
        let leases = [lease("10.50.2.0/24", ME, 9), lease("10.50.4.0/24", ME, 10)];
        let d = run(&leases, Some("10.50.4.0/24"), &small());
        assert_eq!(
            d.action,
            Action::Reuse {
                lease: leases[1].clone(),
                rewrite: None
            }
        );
        assert_eq!(d.release, vec![leases[0].clone()]);
    }
}
