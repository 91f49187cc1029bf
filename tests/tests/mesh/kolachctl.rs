//! kolachctl against real daemons: status, leases and routes in both output
//! forms, and a sentence instead of a stack trace when a daemon is stopped.

use anyhow::{ensure, Context};
use kolach_testkit::run;

#[test]
fn kolachctl_reports_the_running_mesh_and_a_stopped_daemon() {
    run("ctl", |lab| {
        lab.mesh(2)?;
        let s1 = lab.pod(1).subnet.to_string();
        let s2 = lab.pod(2).subnet.to_string();

        for cmd in ["status", "leases", "routes"] {
            let out = lab.kolachctl(1, &["--json", cmd])?;
            ensure!(out.success(), "kolachctl --json {cmd}: {}", out.stderr);
            serde_json::from_str::<serde_json::Value>(&out.stdout).with_context(|| {
                format!("kolachctl --json {cmd} printed no JSON: {}", out.stdout)
            })?;
            let text = lab.kolachctl(1, &[cmd])?;
            ensure!(text.success(), "kolachctl {cmd}: {}", text.stderr);
            ensure!(
                text.stdout.contains(&s1) || cmd == "routes",
                "kolachctl {cmd} does not show {s1}:\n{}",
                text.stdout
            );
            if cmd != "status" {
                ensure!(
                    out.stdout.contains(&s2) && text.stdout.contains(&s2),
                    "kolachctl {cmd} does not show the peer {s2}:\n{}\n{}",
                    out.stdout,
                    text.stdout
                );
            }
        }

        lab.host_mut(2).controld.stop();
        let out = lab.kolachctl(2, &["status"])?;
        let all = format!("{}{}", out.stdout, out.stderr);
        ensure!(
            all.contains("kolach-controld is not running"),
            "stopped controld not reported as such:\n{all}"
        );
        ensure!(!all.contains("panicked"), "kolachctl panicked:\n{all}");
        ensure!(
            all.contains("dataplaned") && !all.contains("kolach-dataplaned is not running"),
            "the running dataplaned should still be reported:\n{all}"
        );
        Ok(())
    });
}
