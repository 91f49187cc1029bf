//! What leaves the state task: snapshots to the dataplane (never before the
//! initial list, never without a lease), subnet.env once the dataplane applied
//! a snapshot (then sd_notify READY=1), and the view the control API serves.

use std::net::Ipv4Addr;
use std::sync::Arc;

use kolach_proto::systemd::Notifier;
use tracing::{error, info, warn};

use super::Controller;
use crate::api::view::View;
use crate::aws;
use crate::event::DataplaneEvent;
use crate::ipam::block;
use crate::model::config::{BackendKind, NetConfig};
use crate::model::lease::Lease;
use crate::model::peers::{self, Note, SkipReason, Skipped};
use crate::model::snapshot::{self, Local};
use crate::model::subnet_env::SubnetEnv;

impl Controller {
    pub(super) fn on_dataplane(&mut self, d: DataplaneEvent) {
        match d {
            DataplaneEvent::Connected => {
                self.dp_connected = true;
            }
            DataplaneEvent::Disconnected(why) => {
                if self.dp_connected {
                    self.warn_event(format!("dataplane disconnected: {why}"));
                }
                self.dp_connected = false;
            }
            DataplaneEvent::Reply {
                generation,
                applied,
                reason,
                applied_version,
            } => {
                if !applied {
                    self.snapshot_push_errors += 1;
                    warn!(generation, reason = %reason, applied = ?applied_version,
                        "dataplane refused the snapshot");
                    self.warn_event(format!(
                        "dataplane refused generation {generation}: {reason}"
                    ));
                    return;
                }
                self.snapshots_pushed += 1;
                self.applied_generation = self.applied_generation.max(generation);
                if let Some(env) = self.pending_env.get(&generation).cloned() {
                    self.acked_env = Some(env);
                }
                self.pending_env.retain(|g, _| *g > generation);
                self.write_subnet_env();
            }
        }
    }

    /// Writes subnet.env from the last snapshot the dataplane applied, then
    /// tells systemd we are ready (first time only).
    pub(super) fn write_subnet_env(&mut self) {
        let Some(env) = self.acked_env.clone() else {
            return;
        };
        if self.written_env.as_ref() == Some(&env) {
            // Ours is written; flannel's may have failed last time.
            if self.flannel_written.as_ref() != Some(&env) {
                self.write_flannel_env(&env);
            }
            return;
        }
        let path = self.settings.subnet_file.clone();
        match crate::model::subnet_env::write_atomic(&path, &env.render()) {
            Ok(()) => {
                match &self.written_env {
                    Some(old) if old.subnet != env.subnet => {
                        warn!(file = %path.display(), old_subnet = %old.subnet, subnet = %env.subnet,
                            "REWROTE subnet.env with a NEW subnet: restart what uses KOLACH_SUBNET (docker --bip)");
                        self.warn_event(format!(
                            "subnet.env rewritten: KOLACH_SUBNET moved from {} to {}",
                            old.subnet, env.subnet
                        ));
                    }
                    _ => {
                        info!(file = %path.display(), network = %env.network, subnet = %env.subnet,
                        mtu = env.mtu, "wrote subnet.env")
                    }
                }
                self.write_flannel_env(&env);
                self.written_env = Some(env);
                if !self.ready_sent {
                    self.ready_sent = true;
                    match Notifier::from_env().and_then(|n| n.send("READY=1", &[])) {
                        Ok(true) => info!("told systemd READY=1"),
                        Ok(false) => {}
                        Err(e) => warn!(error = %e, "sd_notify failed"),
                    }
                }
            }
            Err(e) => {
                error!(file = %path.display(), error = %e, "cannot write subnet.env; will retry");
                self.warn_event(format!("cannot write {}: {e}", path.display()));
            }
        }
    }

    /// flannel's subnet.env (--flannel-subnet-file), right after ours and
    /// from the same content, for what still reads /run/flannel/subnet.env.
    /// A failure is logged and tried again at the dataplane's next reply.
    fn write_flannel_env(&mut self, env: &SubnetEnv) {
        let Some(path) = self.settings.flannel_subnet_file.clone() else {
            return;
        };
        match crate::model::subnet_env::write_atomic_mode(&path, &env.render_flannel(), Some(0o644))
        {
            Ok(()) => {
                info!(file = %path.display(), subnet = %env.subnet, "wrote flannel's subnet.env");
                self.flannel_written = Some(env.clone());
            }
            Err(e) => {
                error!(file = %path.display(), error = %e, "cannot write flannel's subnet.env");
                self.warn_event(format!("cannot write {}: {e}", path.display()));
            }
        }
    }

    /// Pushes a new snapshot if the content changed. Never before the initial
    /// list, and only while this host holds a lease.
    pub(super) fn push_snapshot(&mut self) {
        let (Some(cfg), Some(m), Some(blocks)) = (&self.cfg, &self.mine, &self.blocks) else {
            return;
        };
        if !self.listed {
            return;
        }
        let local = Local {
            subnet: m.subnet,
            public_ip: self.underlay.public_ip,
            iface: self.underlay.iface.clone(),
            underlay_mtu: self.underlay.mtu,
            ip_masq: self.settings.ip_masq,
            forward_rules: self.settings.forward_rules,
        };
        let peers = peers::classify(
            cfg.backend.kind,
            cfg.network,
            m.subnet,
            local.public_ip,
            self.table.leases(),
        );
        for note in self.skipped.update(&peers) {
            log_note(&note);
        }
        let (blocks, dropped) = block::routable(blocks, cfg.network);
        let changes = self.unroutable.update(dropped);
        for (net, why) in changes.new {
            warn!(block = %net, why = %why, "not routing a block");
        }
        for net in changes.cleared {
            info!(block = %net, "block routable again or gone");
        }
        let content = snapshot::build(cfg, &local, &peers.routed, &blocks);
        let env = SubnetEnv {
            network: cfg.network,
            subnet: m.subnet,
            mtu: content.mtu,
            ipmasq: self.settings.ip_masq,
        };
        let routes = content.routes.len();
        let block_count = content.routes.iter().map(|r| r.blocks.len()).sum::<usize>()
            + content.local_blocks.len();
        if let Some(s) = self.versioner.stamp(content, self.table.revision()) {
            let generation = self.versioner.generation();
            info!(
                generation,
                backend = %cfg.backend.kind,
                routes,
                blocks = block_count,
                revision = self.table.revision(),
                "new snapshot"
            );
            self.peer_count = routes as u32;
            self.pending_env.insert(generation, env);
            self.snapshots.send_replace(Some(s));
        }
    }

    pub(super) fn phase(&self) -> &'static str {
        if self.cfg.is_none() {
            if self.etcd_reachable {
                "waiting-for-config"
            } else {
                "waiting-for-etcd"
            }
        } else if !self.listed {
            "listing"
        } else if self.mine.is_none() {
            if self.loss.is_some() {
                "reclaiming"
            } else {
                "claiming"
            }
        } else if self.applied_generation == 0 {
            "waiting-for-dataplane"
        } else {
            "running"
        }
    }

    pub(super) fn publish(&self) {
        let mut leases: Vec<Lease> = self.table.leases().cloned().collect();
        if let Some(m) = &self.mine {
            if !leases.iter().any(|l| l.subnet == m.subnet) {
                leases.push(m.clone());
                leases.sort_by_key(|l| l.subnet);
            }
        }
        let v = View {
            phase: self.phase(),
            subnet: self.mine.as_ref().map(|m| m.subnet),
            reservation: self.mine.as_ref().is_some_and(Lease::is_reservation),
            lease_id: self.mine.as_ref().map_or(0, |m| m.lease_id),
            public_ip: Some(self.underlay.public_ip),
            iface: self.underlay.iface.clone(),
            backend: self
                .cfg
                .as_ref()
                .map(|c| c.backend.kind.to_string())
                .unwrap_or_default(),
            network: self.cfg.as_ref().map(|c| c.network),
            mtu: self
                .cfg
                .as_ref()
                .map_or(0, |c| snapshot::overlay_mtu(c, self.underlay.mtu)),
            keepalive: self.keepalive,
            etcd_reachable: self.etcd_reachable,
            etcd_errors: self.etcd_errors,
            watched_revision: self.table.revision(),
            dataplane_connected: self.dp_connected,
            epoch: self.versioner.epoch(),
            generation: self.versioner.generation(),
            applied_generation: self.applied_generation,
            snapshots_pushed: self.snapshots_pushed,
            snapshot_push_errors: self.snapshot_push_errors,
            peer_count: self.peer_count,
            config_error: self.config_error.clone().unwrap_or_default(),
            // What stands now (skipped peers, insecure endpoints) first,
            // then recent events.
            warnings: self
                .skipped
                .warnings()
                .into_iter()
                .chain(self.standing_warnings.iter().cloned())
                .chain(self.warnings.iter().cloned())
                .collect(),
            leases,
        };
        self.view.send_replace(Arc::new(v));
        self.send_aws_desired();
    }

    /// Tells the aws-vpc task what to keep: this host's subnet while the
    /// backend is aws-vpc and the lease is held, else nothing. The lease never
    /// waits on the VPC: whatever the task meets, it only reports.
    fn send_aws_desired(&self) {
        let desired = aws_desired(
            self.cfg.as_ref(),
            self.mine.as_ref(),
            self.underlay.public_ip,
        );
        self.aws_desired.send_if_modified(|d| {
            if *d == desired {
                return false;
            }
            match &desired {
                Some(w) => info!(subnet = %w.subnet, public_ip = %w.public_ip,
                    tables = ?w.route_tables, "aws-vpc: keeping this subnet in the VPC"),
                None if d.is_some() => info!("aws-vpc: nothing to keep in the VPC"),
                None => {}
            }
            *d = desired;
            true
        });
    }
}

/// What the aws-vpc task should keep under `cfg` while `mine` is held.
pub(super) fn aws_desired(
    cfg: Option<&NetConfig>,
    mine: Option<&Lease>,
    public_ip: Ipv4Addr,
) -> Option<aws::Desired> {
    let (cfg, mine) = (cfg?, mine?);
    (cfg.backend.kind == BackendKind::AwsVpc).then(|| aws::Desired {
        network: cfg.network,
        subnet: mine.subnet,
        public_ip,
        route_tables: cfg.backend.route_tables.clone(),
    })
}

/// One line per skipped lease when it is first skipped, and when it is
/// routed again; never per event.
fn log_note(note: &Note) {
    match note {
        Note::Skipped(
            s @ Skipped {
                reason: SkipReason::OtherBackend,
                ..
            },
        ) => warn!(subnet = %s.subnet, public_ip = %s.public_ip, backend = %s.backend,
            ours = %s.ours, "ignoring a lease of another backend"),
        Note::Skipped(
            s @ Skipped {
                reason: SkipReason::OutOfRange,
                ..
            },
        ) => warn!(subnet = %s.subnet, public_ip = %s.public_ip,
            "not routing a lease outside the Network or of another size than SubnetLen"),
        Note::Skipped(s) => warn!(subnet = %s.subnet, public_ip = %s.public_ip,
            backend = %s.backend, ours = %s.ours,
            "not routing a vxlan lease without a valid BackendData.VtepMAC"),
        Note::Routed(s) => info!(subnet = %s.subnet, public_ip = %s.public_ip, ours = %s.ours,
            "routing a lease skipped before"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config;
    use crate::model::lease::LeaseAttrs;

    fn cfg(json: &str) -> NetConfig {
        config::parse(json.as_bytes()).unwrap().config
    }

    #[test]
    fn aws_desired_only_for_aws_vpc_with_a_lease() {
        let ip: Ipv4Addr = "198.18.0.1".parse().unwrap();
        let attrs = LeaseAttrs::ours(BackendKind::AwsVpc, ip);
        let mine = Lease {
            subnet: "10.50.18.0/24".parse().unwrap(),
            value: attrs.to_json(),
            attrs,
            lease_id: 7,
            mod_revision: 1,
            create_revision: 1,
        };
        let aws = cfg(
            r#"{"Network":"10.50.0.0/16","Backend":{"Type":"aws-vpc","RouteTableID":["rtb-0a","rtb-0b"]}}"#,
        );
        assert_eq!(
            aws_desired(Some(&aws), Some(&mine), ip),
            Some(aws::Desired {
                network: "10.50.0.0/16".parse().unwrap(),
                subnet: "10.50.18.0/24".parse().unwrap(),
                public_ip: ip,
                route_tables: vec!["rtb-0a".into(), "rtb-0b".into()],
            })
        );
        assert_eq!(aws_desired(Some(&aws), None, ip), None);
        assert_eq!(aws_desired(None, Some(&mine), ip), None);
        let vxlan = cfg(r#"{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan"}}"#);
        assert_eq!(aws_desired(Some(&vxlan), Some(&mine), ip), None);
    }
}
