//! The one apply path every snapshot takes (Sync, Apply, restore at start),
//! and the state Status and Routes read.
//!
//! Applies are serialized by a mutex; what readers see is published through an
//! `ArcSwap`, so Status never waits for an apply in progress.
//! [`histogram`]: how long the applies took, as Status reports it.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use kolach_proto::dataplane as pb;
use tokio::sync::Mutex;

use crate::backend::udp;
use crate::backend::Backend;
use crate::datapath::counters::Counters;
use crate::datapath::offload::Features;
use crate::firewall::{self, Runner, Wanted};
use crate::handover::inherit::{Carried, Inherited};
use crate::kernel::Kernel;
use crate::snapshot::{self, BackendKind, Decision, ValidSnapshot};

use self::histogram::Histogram;

pub mod histogram;
pub mod store;

/// Where a snapshot came from; restored ones are not written back to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Controld,
    Restore,
}

/// What has been applied, as Status and Routes show it.
pub struct Applied {
    pub snapshot: ValidSnapshot,
    pub raw: pb::Snapshot,
    pub at: SystemTime,
    /// From the snapshot's receipt to the backend having applied it.
    pub took: Duration,
    pub device: Option<String>,
    pub mode: String,
    /// The udp backend's offloads as applied (the status corrects them by
    /// what the loop found out since).
    pub features: Option<Features>,
    /// Peers actually routed (host-gw skips unreachable ones).
    pub route_count: usize,
    pub warnings: Vec<String>,
}

pub struct Engine {
    run_dir: PathBuf,
    tun_name: String,
    udp: udp::Options,
    kernel: Arc<dyn Kernel>,
    counters: Arc<Counters>,
    started: SystemTime,
    upgrades: u32,
    /// The udp backend's fds from a previous image or the fd store, until a
    /// backend takes them.
    inherited: StdMutex<Inherited>,
    backend: Mutex<Option<Backend>>,
    applied: ArcSwapOption<Applied>,
    /// Why the last snapshot was not applied; cleared by a successful apply.
    last_error: StdMutex<Option<String>>,
    /// How long each applied snapshot took (this image's applies only: a
    /// hot upgrade starts it anew, with the restore as its first).
    apply_times: StdMutex<Histogram>,
    /// Runs `nft` and `iptables` for the host firewall.
    firewall: Arc<dyn Runner>,
    /// What the last firewall sync could not do (for Status); kept apart
    /// from the applied snapshot's warnings because the periodic recheck
    /// updates it too.
    firewall_errors: StdMutex<Vec<String>>,
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Engine {
    pub fn new(
        run_dir: PathBuf,
        tun_name: String,
        kernel: Arc<dyn Kernel>,
        firewall: Arc<dyn Runner>,
    ) -> Self {
        Engine {
            run_dir,
            tun_name,
            udp: udp::Options::default(),
            kernel,
            counters: Arc::new(Counters::default()),
            started: SystemTime::now(),
            upgrades: 0,
            inherited: StdMutex::new(Inherited::default()),
            backend: Mutex::new(None),
            applied: ArcSwapOption::empty(),
            last_error: StdMutex::new(None),
            apply_times: StdMutex::new(Histogram::default()),
            firewall,
            firewall_errors: StdMutex::new(Vec::new()),
        }
    }

    /// How the udp backend runs (`--offload`, `--busy-poll`, `--queues`).
    pub fn with_udp(mut self, udp: udp::Options) -> Self {
        self.udp = udp;
        self
    }

    /// Continues where a previous image of this process left off (hot
    /// upgrade), or takes the fds systemd kept: counters, start time, upgrade
    /// count, and the fds the udp backend will adopt.
    pub fn resuming(mut self, carried: &Carried, fds: Inherited) -> Self {
        self.counters = Arc::new(Counters::from_values(&carried.counters));
        self.started = carried.started;
        self.upgrades = carried.upgrades;
        self.inherited = StdMutex::new(fds);
        self
    }

    /// A backend of `kind`, given the inherited fds if it is the udp backend
    /// (any other backend removes the TUN: the fds are let go).
    fn create_backend(&self, kind: BackendKind) -> Backend {
        let mut b = Backend::create(kind, &self.tun_name, self.udp, self.counters.clone());
        let fds = std::mem::take(&mut *self.inherited.lock().expect("not poisoned"));
        match &mut b {
            Backend::Udp(u) => u.adopt(fds),
            _ if !fds.tun.is_empty() || !fds.udp.is_empty() => {
                crate::handover::notify::remove_fds(crate::handover::FD_TUN);
                crate::handover::notify::remove_fds(crate::handover::FD_UDP);
            }
            _ => {}
        }
        b
    }

    /// When the first image of this process started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Hot upgrades this process has been through.
    pub fn upgrades(&self) -> u32 {
        self.upgrades
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    pub fn applied(&self) -> Option<Arc<Applied>> {
        self.applied.load_full()
    }

    fn reply(&self, applied: bool, reason: impl Into<String>) -> pb::ApplyReply {
        let reason = reason.into();
        if !applied {
            *self.last_error.lock().expect("not poisoned") = Some(reason.clone());
        }
        pb::ApplyReply {
            applied,
            applied_version: self
                .applied
                .load()
                .as_ref()
                .map(|a| a.snapshot.version.into()),
            reason,
        }
    }

    /// Validates, orders and applies one full snapshot.
    pub async fn apply(&self, raw: pb::Snapshot, origin: Origin) -> pb::ApplyReply {
        // Waiting for an apply in progress counts: it delays this one as much.
        let received = Instant::now();
        let s = match snapshot::validate(&raw) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "refusing invalid snapshot");
                return self.reply(false, format!("invalid snapshot: {e}"));
            }
        };
        let mut backend = self.backend.lock().await;
        let current = self.applied.load().as_ref().map(|a| a.snapshot.version);
        match snapshot::decide(current, s.version) {
            Decision::Apply => {}
            Decision::AlreadyApplied => return self.reply(true, "already applied"),
            Decision::Refuse(why) => {
                tracing::warn!(reason = %why, "refusing snapshot");
                return self.reply(false, why);
            }
        }

        let previous = self.applied.load_full();
        let result = match backend.as_mut() {
            Some(b) if b.kind() == s.backend => b.apply(&s, &*self.kernel).await,
            _ => {
                // A switch (or the first apply): the old runtime stops first so
                // that the new backend can remove the old one's devices.
                if let Some(old) = backend.as_mut() {
                    old.retire();
                }
                let mut fresh = self.create_backend(s.backend);
                match fresh.apply(&s, &*self.kernel).await {
                    Ok(o) => {
                        if let Some(old) = backend.replace(fresh) {
                            tracing::info!(
                                from = old.kind().as_str(),
                                to = s.backend.as_str(),
                                "backend changed"
                            );
                        }
                        Ok(o)
                    }
                    Err(e) => {
                        // Bring the old backend back with what it had.
                        if let (Some(old), Some(p)) = (backend.as_mut(), previous.as_ref()) {
                            if let Err(e) = old.apply(&p.snapshot, &*self.kernel).await {
                                tracing::warn!(error = %e, "cannot restore the previous backend");
                            }
                        }
                        Err(e)
                    }
                }
            }
        };
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(version = %s.version, error = %e, "snapshot not applied");
                return self.reply(false, e.to_string());
            }
        };
        let took = received.elapsed();
        self.apply_times.lock().expect("not poisoned").observe(took);
        let mut warnings = outcome.warnings;
        if origin == Origin::Controld {
            if let Err(e) = store::save(&self.run_dir, &raw) {
                tracing::warn!(error = %e, "cannot save the applied snapshot; a restart will wait for controld");
                warnings.push(e.to_string());
            }
        }
        // After the backend: routes never wait for (or fail by) the firewall.
        self.sync_firewall(Wanted::of(&s)).await;
        let b = backend.as_ref().expect("set above");
        tracing::info!(
            epoch = s.version.epoch,
            generation = s.version.generation,
            etcd_revision = s.version.etcd_revision,
            backend = s.backend.as_str(),
            subnet = %s.local_subnet,
            routes = outcome.routes,
            took_us = took.as_micros() as u64,
            "snapshot applied"
        );
        self.applied.store(Some(Arc::new(Applied {
            device: b.device().map(str::to_string),
            mode: b.mode(),
            features: b.features(),
            route_count: outcome.routes,
            snapshot: s,
            raw,
            at: SystemTime::now(),
            took,
            warnings,
        })));
        *self.last_error.lock().expect("not poisoned") = None;
        self.reply(true, "")
    }

    /// Makes the host firewall match `wanted`; what cannot be done goes to
    /// the status, and to the log when it differs from last time (the
    /// recheck runs every few seconds). Callers hold the backend lock, so
    /// syncs never overlap, nor run across a handover's exec.
    async fn sync_firewall(&self, wanted: Wanted) {
        let report = firewall::sync(&*self.firewall, &wanted).await;
        let mut errors = self.firewall_errors.lock().expect("not poisoned");
        if report.errors != *errors {
            for e in &report.errors {
                tracing::warn!(error = %e, "host firewall not as asked");
            }
            if report.errors.is_empty() {
                tracing::info!("host firewall as asked again");
            }
        }
        *errors = report.errors;
    }

    /// Between snapshots ([`firewall::RECHECK`]): puts back what someone
    /// removed (Docker re-creates its chains when it restarts). With both
    /// features off there is nothing to put back: the apply that turned
    /// them off removed ours, so no tool is run.
    pub async fn recheck_firewall(&self) {
        let _backend = self.backend.lock().await;
        if let Some(a) = self.applied() {
            let wanted = Wanted::of(&a.snapshot);
            if wanted.ip_masq || wanted.forward_rules {
                self.sync_firewall(wanted).await;
            }
        }
    }

    /// Applies the snapshot saved in the run dir, if any. A corrupt or
    /// unusable file is logged and ignored: controld will push a fresh one.
    pub async fn restore(&self) {
        let raw = match store::load(&self.run_dir) {
            Ok(Some(raw)) => raw,
            Ok(None) => {
                tracing::info!("no saved snapshot; waiting for controld");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring saved snapshot");
                return;
            }
        };
        let reply = self.apply(raw, Origin::Restore).await;
        match self.applied() {
            Some(a) if reply.applied => tracing::info!(
                epoch = a.snapshot.version.epoch,
                generation = a.snapshot.version.generation,
                etcd_revision = a.snapshot.version.etcd_revision,
                routes = a.snapshot.routes.len(),
                "restored snapshot"
            ),
            _ => tracing::warn!(reason = %reply.reason, "saved snapshot not restored"),
        }
    }

    /// Hot upgrade: with applies held off, makes sure the saved snapshot is
    /// the applied one (the next image restores it), pauses the packet loop
    /// and calls `exec` with the (TUN, UDP) fds to hand over, the counters and
    /// when forwarding paused (CLOCK_MONOTONIC µs). `exec` returns only if
    /// the exec failed; forwarding then resumes and its error is returned.
    pub async fn hand_over<E>(
        &self,
        max_queues: usize,
        exec: impl FnOnce(Option<(Vec<RawFd>, Vec<RawFd>)>, Vec<u64>, u64) -> E,
    ) -> E {
        let mut backend = self.backend.lock().await;
        if let Some(a) = self.applied() {
            if store::load(&self.run_dir).ok().flatten().as_ref() != Some(&a.raw) {
                if let Err(e) = store::save(&self.run_dir, &a.raw) {
                    tracing::warn!(error = %e, "cannot save the applied snapshot; the new image will wait for controld");
                }
            }
        }
        let fds = backend.as_mut().and_then(|b| b.pause(max_queues));
        let paused_at = crate::handover::monotonic_us();
        let err = exec(fds, self.counters.values(), paused_at);
        if let Some(b) = backend.as_mut() {
            if let Err(e) = b.resume() {
                tracing::error!(error = %e, "cannot restart the packet loop after a failed handover");
            }
        }
        err
    }

    /// Stops the backend's runtime; devices, addresses and routes stay.
    pub async fn shutdown(&self) {
        if let Some(mut b) = self.backend.lock().await.take() {
            b.stop();
        }
    }

    pub fn status(&self) -> pb::DataplaneStatus {
        let a = self.applied();
        let mut errors: Vec<String> = a.as_ref().map(|a| a.warnings.clone()).unwrap_or_default();
        errors.extend(self.last_error.lock().expect("not poisoned").clone());
        errors.extend(self.firewall_errors.lock().expect("not poisoned").clone());
        let s = a.as_ref().map(|a| &a.snapshot);
        pb::DataplaneStatus {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            start_time_unix: unix(self.started),
            upgrades: self.upgrades,
            has_snapshot: a.is_some(),
            applied_version: s.map(|s| s.version.into()),
            // Effective values: defaults filled in (vxlan port 8472, VNI 1).
            backend: s.map(|s| pb::Backend {
                r#type: s.backend.to_pb() as i32,
                port: u32::from(s.port),
                vni: s.vni,
            }),
            route_count: a.as_ref().map(|a| a.route_count as u32).unwrap_or(0),
            device: a
                .as_ref()
                .and_then(|a| a.device.clone())
                .unwrap_or_default(),
            mtu: s.map(|s| s.mtu).unwrap_or(0),
            local_subnet: s.map(|s| s.local_subnet.into()),
            public_ip: s.and_then(|s| s.public_ip).map(Into::into),
            counters: Some(self.counters.to_pb()),
            mode: a.as_ref().map_or("none".into(), |a| self.mode(a)),
            errors,
            applied_at_unix: a.as_ref().map(|a| unix(a.at)).unwrap_or(0),
            // Filled by the upgrader: the process, not the packet state.
            binary: None,
            upgraded_at_unix: 0,
            handover_pause_us: 0,
            upgrade_error: String::new(),
            export_table: s.map(|s| s.export_table).unwrap_or(0),
            snapshot_apply_seconds: Some(self.apply_times.lock().expect("not poisoned").to_pb()),
            last_apply_us: a.as_ref().map_or(0, |a| a.took.as_micros() as u64),
            firewall: s.map(|s| Wanted::of(s).to_pb()),
        }
    }

    /// The mode as it runs now: GSO or USO may have been refused since the
    /// apply.
    fn mode(&self, a: &Applied) -> String {
        match a.features {
            Some(f) => f
                .without_refused(self.counters.gso_refused(), self.counters.uso_refused())
                .to_string(),
            None => a.mode.clone(),
        }
    }

    pub fn routes(&self) -> pb::RoutesReply {
        match self.applied() {
            Some(a) => pb::RoutesReply {
                version: Some(a.snapshot.version.into()),
                routes: a.raw.routes.clone(),
                export_table: a.snapshot.export_table,
                exported: if a.snapshot.export_table == 0 {
                    Vec::new()
                } else {
                    a.snapshot.exported().into_iter().map(Into::into).collect()
                },
            },
            None => pb::RoutesReply::default(),
        }
    }

    /// The backend kind currently running, if any.
    pub async fn backend_kind(&self) -> Option<BackendKind> {
        self.backend.lock().await.as_ref().map(Backend::kind)
    }
}

#[cfg(test)]
mod tests;
