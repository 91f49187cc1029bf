//! Applying what the etcd watches saw: the config key, the subnet listing and
//! each subnet event, and noticing when one of them concerns this host's own
//! key (then it is lost: see [`super::loss`]).

use tracing::{error, info, warn};

use super::Controller;
use crate::model::config;
use crate::model::table::{Change, Listing, SubnetEvent};
use crate::model::text::shown;

impl Controller {
    /// A full listing of the subnets (at start, and after a compaction).
    pub(super) fn on_listed(&mut self, l: Listing) {
        let relist = self.listed;
        for g in &l.garbage {
            warn!(key = %shown(&g.key), error = %g.error, "ignoring unreadable subnet lease");
        }
        let changes = self.table.replace(l.leases, l.garbage, l.revision);
        self.listed = true;
        if relist {
            info!(
                revision = l.revision,
                changes = changes.len(),
                "subnets listed again"
            );
        }
        for c in changes {
            self.on_change(c);
        }
        if let Some(m) = self.mine.clone() {
            if self.table.get(&m.subnet).is_none() && m.mod_revision <= l.revision {
                self.lost(&m, "our subnet key is gone from etcd");
            }
        }
    }

    pub(super) fn on_config(&mut self, raw: Option<Vec<u8>>) {
        if self.config_raw.as_ref() == Some(&raw) {
            return;
        }
        self.config_raw = Some(raw.clone());
        let parsed = match &raw {
            None => Err(config::ConfigError(format!(
                "{} does not exist; write a config such as {{\"Network\": \"10.50.0.0/16\"}}",
                self.settings.config_key
            ))),
            Some(bytes) => config::parse(bytes),
        };
        match parsed {
            Err(e) => {
                let msg = e.to_string();
                if self.cfg.is_some() {
                    error!("{msg} (keeping the last good config, its lease and routes)");
                } else {
                    error!("{msg} (waiting for a valid config)");
                }
                // The status shows it as the config's state (not among the
                // recent warnings, where it would outlive the fix).
                self.config_error = Some(msg);
            }
            Ok(p) => {
                for w in &p.warnings {
                    warn!("{w}");
                }
                if self.config_error.take().is_some() {
                    info!("config is valid again");
                }
                if self.cfg.as_ref() != Some(&p.config) {
                    let c = &p.config;
                    info!(network = %c.network, subnet_len = c.subnet_len, subnet_min = %c.subnet_min,
                        subnet_max = %c.subnet_max, backend = %c.backend.kind, port = c.backend.port,
                        vni = c.backend.vni, export_table = c.export_table, "config applied");
                    if let Some(expected) = self.settings.expect_udp_port {
                        if let Some(w) =
                            crate::flannel::port_mismatch(expected, c.backend.kind, c.backend.port)
                        {
                            warn!("{w}");
                            self.warn_event(w);
                        }
                    }
                    self.cfg = Some(p.config);
                }
            }
        }
    }

    pub(super) fn on_subnet(&mut self, e: SubnetEvent) {
        let change = match e {
            SubnetEvent::Put(l) => self.table.put(l),
            SubnetEvent::Deleted { subnet, revision } => self.table.delete(subnet, revision),
            SubnetEvent::Garbage(g) => {
                let hits_mine = self
                    .mine
                    .as_ref()
                    .is_some_and(|m| g.subnet == Some(m.subnet) && g.mod_revision > m.mod_revision);
                let (key, error) = (g.key.clone(), g.error.clone());
                if self.table.note_garbage(g) {
                    warn!(key = %shown(&key), error = %error, "ignoring unreadable subnet lease");
                }
                if hits_mine {
                    let m = self.mine.clone().expect("checked");
                    self.lost(
                        &m,
                        "our subnet key was overwritten with an unreadable value",
                    );
                }
                return;
            }
            SubnetEvent::GarbageDeleted { key, revision } => {
                self.table.forget_garbage(&key, revision);
                return;
            }
        };
        self.on_change(change);
    }

    /// Notices when a table change concerns this host's own key.
    fn on_change(&mut self, change: Change) {
        let Some(m) = self.mine.clone() else { return };
        match change {
            Change::Removed(old) if old.subnet == m.subnet => {
                // The etcd lease may well outlive its key (an operator's
                // `etcdctl del`): reclaim with it rather than leave it dangling.
                if m.lease_id != 0 && self.spare_lease.is_none() {
                    self.spare_lease = Some(m.lease_id);
                }
                self.lost(&m, "our subnet key was deleted");
            }
            Change::Added(new) | Change::Updated { new, .. } if new.subnet == m.subnet => {
                if new.attrs.public_ip == m.attrs.public_ip && new.lease_id == m.lease_id {
                    self.mine = Some(new);
                } else if new.mod_revision > m.mod_revision {
                    self.lost(
                        &m,
                        &format!(
                            "our subnet key now names PublicIP {} (etcd lease {:x})",
                            new.attrs.public_ip, new.lease_id
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}
