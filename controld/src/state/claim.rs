//! Getting and keeping this host's subnet: the etcd side of the decisions
//! [`crate::model::recovery`] makes. Every write is a transaction (create-if-absent,
//! or compare the mod revision); a lost race means list again and pick again.

use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::Controller;
use crate::etcd::EtcdError;
use crate::model::config::NetConfig;
use crate::model::lease::{rewrite_reason, Lease, LeaseAttrs, Rewrite};
use crate::model::recovery::{self, Action, Source};

/// Attempts per claim before backing off (each lost race costs one).
const ATTEMPTS: usize = 8;

impl Controller {
    /// Checks the lease we hold against the current config: release it when
    /// it no longer fits, rewrite its value when our attributes changed.
    pub(super) async fn check_mine(&mut self, cfg: &NetConfig) {
        let Some(m) = self.mine.clone() else { return };
        let fits = if m.is_reservation() {
            cfg.fits_network(m.subnet)
        } else {
            cfg.allows(m.subnet)
        };
        if !fits {
            warn!(subnet = %m.subnet, network = %cfg.network, subnet_len = cfg.subnet_len,
                subnet_min = %cfg.subnet_min, subnet_max = %cfg.subnet_max,
                "this host's subnet does not fit the new config; releasing it and claiming another");
            self.warn_event(format!(
                "subnet {} no longer fits the config; releasing it",
                m.subnet
            ));
            if !m.is_reservation() {
                match self.reg.release(&m).await {
                    Ok(true) => info!(subnet = %m.subnet, "released"),
                    Ok(false) => info!(subnet = %m.subnet, "already changed or gone; not released"),
                    Err(e) => return self.etcd_failed(e),
                }
            }
            self.stop_keeper();
            self.mine = None;
            self.previous = None;
            self.lease_deadline = None;
            self.loss = Some(crate::model::loss::Loss {
                subnet: m.subnet,
                reason: "it no longer fits the config".into(),
                at: std::time::SystemTime::now(),
            });
            return;
        }
        let want = self.my_attrs(cfg);
        let Some(why) = rewrite_reason(&m, &want) else {
            return;
        };
        match self.rewrite(&m, &want, &why).await {
            Ok(Some(new)) => {
                self.table.put_own(new.clone());
                self.mine = Some(new);
            }
            Ok(None) => {
                self.lost(&m, "our subnet key changed under us while rewriting it");
            }
            Err(e) => self.etcd_failed(e),
        }
    }

    /// Rewrites the value of this host's key to `want` (a txn comparing its
    /// mod revision: never blind), keeping the subnet and its etcd lease.
    /// None when the key changed meanwhile.
    async fn rewrite(
        &mut self,
        m: &Lease,
        want: &LeaseAttrs,
        why: &Rewrite,
    ) -> Result<Option<Lease>, EtcdError> {
        let new = self.reg.update(m, want).await?;
        match &new {
            Some(n) => info!(subnet = %n.subnet, reason = %why, old = %m.value, new = %n.value,
                reservation = n.is_reservation(), "rewrote this host's lease value"),
            None => info!(subnet = %m.subnet, reason = %why,
                "this host's key changed while rewriting its value"),
        }
        Ok(new)
    }

    /// Gets a subnet: our own lease or reservation, the previous subnet, or
    /// a random free one.
    pub(super) async fn claim(&mut self, cfg: &NetConfig) {
        let me = self.my_attrs(cfg);
        for attempt in 1..=ATTEMPTS {
            let listing = match self.reg.list_subnets().await {
                Ok(l) => l,
                Err(e) => return self.etcd_failed(e),
            };
            let extra: Vec<Ipv4Net> = listing.garbage.iter().filter_map(|g| g.subnet).collect();
            let d = recovery::decide(
                &listing.leases,
                &extra,
                &me,
                self.previous,
                cfg,
                &mut self.rng,
            );
            for note in d.notes {
                warn!("{note}");
                self.warn_event(note);
            }
            for old in &d.release {
                match self.reg.release(old).await {
                    Ok(true) => info!(subnet = %old.subnet, "released an old lease of this host"),
                    Ok(false) => {}
                    Err(e) => return self.etcd_failed(e),
                }
            }
            match d.action {
                // A key of ours already: rewritten first if its value must change
                // (a reservation stays one, a lease keeps its etcd lease).
                Action::Reservation { lease, rewrite } | Action::Reuse { lease, rewrite } => {
                    let lease = match rewrite {
                        Some(why) => match self.rewrite(&lease, &me, &why).await {
                            Ok(Some(new)) => new,
                            Ok(None) => continue,
                            Err(e) => return self.etcd_failed(e),
                        },
                        None => lease,
                    };
                    if lease.is_reservation() {
                        info!(subnet = %lease.subnet, public_ip = %lease.attrs.public_ip, "using the reservation for this host");
                    } else {
                        info!(subnet = %lease.subnet, lease_id = format!("{:x}", lease.lease_id),
                            "found this host's lease; keeping it");
                    }
                    return self.take(lease, None);
                }
                Action::Claim { subnet, source } => {
                    // etcd counts a fresh lease's TTL from no earlier than now.
                    let asked = Instant::now();
                    let (lease_id, deadline) = match self.spare_lease {
                        Some(id) => (id, None),
                        None => match self.reg.grant(self.settings.lease_ttl).await {
                            Ok(id) => (id, Some(asked + self.settings.lease_ttl)),
                            Err(e) => return self.etcd_failed(e),
                        },
                    };
                    self.spare_lease = Some(lease_id);
                    match self.reg.create(subnet, &me, lease_id).await {
                        Ok(Some(lease)) => {
                            self.spare_lease = None;
                            let how = match source {
                                Source::Previous => "previous",
                                Source::Random => "random free",
                            };
                            info!(subnet = %subnet, lease_id = format!("{lease_id:x}"),
                                ttl = self.settings.lease_ttl.as_secs(), source = how, "claimed subnet");
                            return self.take(lease, deadline);
                        }
                        Ok(None) => {
                            info!(subnet = %subnet, attempt,
                                "another host took this subnet meanwhile; listing again");
                            if source == Source::Previous {
                                self.previous = None;
                            }
                        }
                        Err(EtcdError::LeaseGone(id)) => {
                            info!(
                                lease_id = format!("{id:x}"),
                                "that etcd lease is gone; granting a new one"
                            );
                            self.spare_lease = None;
                        }
                        Err(e) => {
                            // The spare lease may have expired; get a fresh one next time.
                            self.spare_lease = None;
                            return self.etcd_failed(e);
                        }
                    }
                }
                Action::Exhausted => {
                    let msg = format!(
                        "no free subnet between SubnetMin {} and SubnetMax {} ({} keys taken); waiting for one to be freed",
                        cfg.subnet_min.network(), cfg.subnet_max.network(), listing.leases.len() + extra.len()
                    );
                    error!("{msg}");
                    self.warn_event(msg);
                    self.retry_later(Duration::from_secs(10));
                    return;
                }
            }
        }
        warn!(
            attempts = ATTEMPTS,
            "lost every race for a subnet; backing off"
        );
        let d = self.retry_backoff.next_delay();
        self.retry_later(d);
    }

    fn take(&mut self, lease: Lease, deadline: Option<Instant>) {
        self.retry_backoff.reset();
        self.retry_at = None;
        self.lease_deadline = deadline.filter(|_| !lease.is_reservation());
        self.settle_loss(lease.subnet);
        self.previous = Some(lease.subnet);
        self.table.put_own(lease.clone());
        self.mine = Some(lease);
    }

    fn retry_later(&mut self, d: Duration) {
        self.retry_at = Some(Instant::now() + d);
    }

    fn etcd_failed(&mut self, e: EtcdError) {
        self.etcd_down(e.to_string());
        let d = self.retry_backoff.next_delay();
        self.retry_later(d);
    }
}
