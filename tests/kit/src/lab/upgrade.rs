//! Restarts and hot upgrades as the DESIGN §6 tests drive them: ask a host's
//! dataplane for a hot upgrade (the Upgrade RPC, SIGHUP or `kolachctl
//! dataplane upgrade`) and wait until the new image reports in under the same
//! PID; restart controld and wait until it pushes again; read and push
//! snapshots by hand; install a binary the way a package manager does.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use kolach_proto::dataplane::dataplane_admin_client::DataplaneAdminClient;
use kolach_proto::dataplane::dataplane_client::DataplaneClient;
use kolach_proto::dataplane::{
    ApplyReply, DataplaneStatus, Snapshot, UpgradeReply, UpgradeRequest,
};
use kolach_proto::prost::Message;
use kolach_proto::uds;

use crate::bins;
use crate::cmd;
use crate::lab::Lab;
use crate::netns;
use crate::process::Stopped;
use crate::query;

/// How a hot upgrade is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Rpc,
    Sighup,
    Kolachctl,
}

/// A finished hot upgrade.
#[derive(Clone, Debug)]
pub struct Upgraded {
    /// From asking to the new image answering Status.
    pub took: Duration,
    /// How long its packet loop was paused (the dataplane's own measure).
    pub pause: Duration,
    pub status: DataplaneStatus,
}

/// How long a hot upgrade may take, check of the new binary included.
pub const UPGRADE_WITHIN: Duration = Duration::from_secs(15);

/// Copies `from` to `path` as a package manager installs: a new file renamed
/// over the old one, with `extra` bytes appended (a "different build").
pub fn install_binary(from: &Path, path: &Path, extra: &[u8]) -> Result<()> {
    let tmp = path.with_extension("kolach-new");
    std::fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
    if !extra.is_empty() {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&tmp)?
            .write_all(extra)?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, path).with_context(|| format!("installing {}", path.display()))?;
    Ok(())
}

impl Lab {
    /// The Upgrade RPC on host `n` (the reply only: the handover follows).
    pub fn dp_upgrade_rpc(&self, n: u8) -> Result<UpgradeReply> {
        let sock = self.host(n).dataplaned_socket();
        self.block_on(async move {
            let ch = uds::connect(&sock, "kolach-dataplaned").await?;
            let r = DataplaneAdminClient::new(ch)
                .upgrade(UpgradeRequest {})
                .await
                .context("DataplaneAdmin.Upgrade")?;
            Ok(r.into_inner())
        })
    }

    /// `kolachctl --run-dir <host n> args...`, run in host `n`'s namespace
    /// (where `ipam check` looks for host ends), under 40 s (an upgrade waits).
    pub fn kolachctl(&self, n: u8, args: &[&str]) -> Result<cmd::Output> {
        let prog = bins::require(bins::KOLACHCTL);
        let dir = self.host(n).dir.display().to_string();
        let mut full = vec!["--run-dir", &dir];
        full.extend_from_slice(args);
        netns::exec(
            &self.host(n).ns,
            &prog.to_string_lossy(),
            &full,
            Duration::from_secs(40),
        )
    }

    /// [`Lab::kolachctl`] with `--json`: exit status and parsed JSON.
    pub fn kolachctl_json(&self, n: u8, args: &[&str]) -> Result<(bool, serde_json::Value)> {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.kolachctl(n, &full)?;
        let v = serde_json::from_str(&out.stdout).with_context(|| {
            format!(
                "kolachctl {args:?} printed no JSON: {}{}",
                out.stdout, out.stderr
            )
        })?;
        Ok((out.success(), v))
    }

    /// Hot-upgrades host `n`'s dataplane and waits for the new image: same
    /// PID, one more upgrade, no upgrade error.
    pub fn hot_upgrade(&self, n: u8, how: Trigger) -> Result<Upgraded> {
        let before = self.dp_status(n)?;
        let t0 = Instant::now();
        match how {
            Trigger::Rpc => {
                let r = self.dp_upgrade_rpc(n)?;
                ensure!(r.started, "host{n}: upgrade refused: {}", r.reason);
            }
            Trigger::Sighup => {
                // SAFETY: kill(2) on the dataplane's PID, which is running.
                let rc = unsafe { libc::kill(before.pid as libc::pid_t, libc::SIGHUP) };
                ensure!(
                    rc == 0,
                    "kill -HUP {}: {}",
                    before.pid,
                    std::io::Error::last_os_error()
                );
            }
            Trigger::Kolachctl => {
                let (ok, v) = self.kolachctl_json(n, &["dataplane", "upgrade"])?;
                ensure!(
                    ok && v["upgraded"] == true,
                    "host{n}: kolachctl dataplane upgrade: {v}"
                );
            }
        }
        loop {
            match self.dp_status(n) {
                Ok(st) if st.upgrades > before.upgrades => {
                    ensure!(
                        st.pid == before.pid,
                        "host{n}: the dataplane's PID changed from {} to {}",
                        before.pid,
                        st.pid
                    );
                    ensure!(st.upgrade_error.is_empty(), "host{n}: {}", st.upgrade_error);
                    return Ok(Upgraded {
                        took: t0.elapsed(),
                        pause: Duration::from_micros(st.handover_pause_us),
                        status: st,
                    });
                }
                // A SIGHUP is handled after kill(2) returns: until then the
                // status may still show the error of an earlier attempt.
                Ok(st)
                    if !st.upgrade_error.is_empty() && st.upgrade_error != before.upgrade_error =>
                {
                    bail!("host{n}: hot upgrade failed: {}", st.upgrade_error)
                }
                _ => {}
            }
            if t0.elapsed() > UPGRADE_WITHIN {
                bail!("host{n}: no new image within {UPGRADE_WITHIN:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The snapshot host `n`'s dataplane saved (the one it applied last).
    pub fn saved_snapshot(&self, n: u8) -> Result<Snapshot> {
        let path = self.host(n).dir.join("snapshot.pb");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Snapshot::decode(bytes.as_slice()).with_context(|| format!("decoding {}", path.display()))
    }

    /// Pushes `s` to host `n`'s dataplane by hand (Dataplane.Apply, as root).
    pub fn dp_apply(&self, n: u8, s: Snapshot) -> Result<ApplyReply> {
        let sock = self.host(n).dataplaned_socket();
        self.block_on(async move {
            let ch = uds::connect(&sock, "kolach-dataplaned").await?;
            Ok(DataplaneClient::new(ch).apply(s).await?.into_inner())
        })
    }

    /// SIGTERM to host `n`'s controld (it must exit within 5 s), start it
    /// again and wait until it holds its subnet and has pushed to the
    /// dataplane; returns the time from start to that.
    pub fn restart_controld(&mut self, n: u8) -> Result<Duration> {
        let epoch_before = self.cd_status(n).map(|s| s.epoch).unwrap_or(0);
        let p = &mut self.host_mut(n).controld;
        let how = p.stop_within(Duration::from_secs(5));
        ensure!(
            matches!(how, Stopped::Graceful(_)),
            "host{n}/controld did not exit within 5 s of SIGTERM: {how:?}"
        );
        p.start()?;
        let started = Instant::now();
        loop {
            if let Ok(s) = self.cd_status(n) {
                if s.epoch != epoch_before
                    && s.dataplane_connected
                    && s.applied_generation > 0
                    && query::control_subnet(&s).is_some()
                {
                    return Ok(started.elapsed());
                }
            }
            if started.elapsed() > Duration::from_secs(15) {
                return Err(anyhow!(
                    "host{n}/controld not pushing to the dataplane 15 s after its start"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
