//! `kolachctl dataplane upgrade`: asks kolach-dataplaned for a hot upgrade,
//! then waits for the new binary to report in under the same PID (or for the
//! old one to say why it is still running). Exits non-zero unless the
//! upgrade happened, so it can serve as the unit's `ExecReload`.

use std::time::{Duration, Instant};

use anyhow::Result;
use kolach_proto::dataplane::{DataplaneStatus, StatusRequest, UpgradeRequest};
use serde::Serialize;

use crate::cli::Cli;
use crate::clients::{print_json, Connect};
use crate::view::Binary;

#[derive(Serialize, Debug)]
struct Outcome {
    upgraded: bool,
    pid: u32,
    from_version: String,
    to_version: Option<String>,
    upgrades: u32,
    binary: Option<Binary>,
    handover_pause_us: Option<u64>,
    reason: Option<String>,
}

/// What a status seen while waiting means.
#[derive(Debug, PartialEq)]
enum Seen {
    Done,
    Failed(String),
    Waiting,
}

fn judge(pid: u32, upgrades_before: u32, st: &DataplaneStatus) -> Seen {
    if st.pid != pid {
        Seen::Failed(format!(
            "kolach-dataplaned now runs as pid {} (was {pid}): it restarted instead of upgrading in place",
            st.pid
        ))
    } else if st.upgrades > upgrades_before {
        Seen::Done
    } else if !st.upgrade_error.is_empty() {
        Seen::Failed(st.upgrade_error.clone())
    } else {
        Seen::Waiting
    }
}

async fn status(cli: &Cli) -> Result<DataplaneStatus> {
    // A new connection each time: the old image's is cut by the exec.
    let mut c = cli.dataplaned().await?;
    Ok(c.status(StatusRequest {}).await?.into_inner())
}

pub async fn run(cli: &Cli, wait: Duration) -> Result<bool> {
    let reply = {
        let mut admin = cli.dataplaned_admin().await?;
        admin.upgrade(UpgradeRequest {}).await?.into_inner()
    };
    let mut out = Outcome {
        upgraded: false,
        pid: reply.pid,
        from_version: reply.version.clone(),
        to_version: (!reply.new_version.is_empty()).then(|| reply.new_version.clone()),
        upgrades: reply.upgrades,
        binary: reply.binary.clone().map(Binary::from),
        handover_pause_us: None,
        reason: None,
    };
    if !reply.started {
        out.reason = Some(reply.reason);
        return Ok(report(cli, out));
    }
    let deadline = Instant::now() + wait;
    let mut last_error = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match status(cli).await {
            Ok(st) => match judge(reply.pid, reply.upgrades, &st) {
                Seen::Done => {
                    out.upgraded = true;
                    out.upgrades = st.upgrades;
                    out.to_version = Some(st.version);
                    out.binary = st.binary.map(Binary::from);
                    out.handover_pause_us = Some(st.handover_pause_us);
                    break;
                }
                Seen::Failed(why) => {
                    out.reason = Some(why);
                    break;
                }
                Seen::Waiting => {}
            },
            Err(e) => last_error = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            out.reason = Some(format!(
                "the new binary did not report in within {wait:?} (last: {})",
                if last_error.is_empty() {
                    "no change yet"
                } else {
                    &last_error
                }
            ));
            break;
        }
    }
    Ok(report(cli, out))
}

fn report(cli: &Cli, out: Outcome) -> bool {
    let ok = out.upgraded;
    if cli.json {
        print_json(&out);
    } else if ok {
        let b = out
            .binary
            .as_ref()
            .map(|b| format!(", binary {} (inode {})", b.path, b.inode))
            .unwrap_or_default();
        println!(
            "kolach-dataplaned upgraded in place: pid {}, version {} -> {}, {} upgrades{b}, packet loop paused {:.1} ms",
            out.pid,
            out.from_version,
            out.to_version.as_deref().unwrap_or("?"),
            out.upgrades,
            out.handover_pause_us.unwrap_or(0) as f64 / 1000.0
        );
    } else {
        eprintln!(
            "kolachctl: kolach-dataplaned was not upgraded (pid {} keeps running version {}): {}",
            out.pid,
            out.from_version,
            out.reason.as_deref().unwrap_or("unknown reason")
        );
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_ends_on_the_new_image_or_an_error() {
        let st = |pid, upgrades, err: &str| DataplaneStatus {
            pid,
            upgrades,
            upgrade_error: err.into(),
            ..Default::default()
        };
        assert_eq!(judge(7, 2, &st(7, 2, "")), Seen::Waiting);
        assert_eq!(judge(7, 2, &st(7, 3, "")), Seen::Done);
        assert_eq!(
            judge(7, 2, &st(7, 2, "cannot execute /x: ENOENT")),
            Seen::Failed("cannot execute /x: ENOENT".into())
        );
        assert!(matches!(judge(7, 2, &st(8, 0, "")), Seen::Failed(w) if w.contains("pid 8")));
    }
}
