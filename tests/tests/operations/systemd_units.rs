//! The units in packaging/systemd, checked without a running systemd:
//!
//! - both pass `systemd-analyze verify` (binary paths pointed at the build,
//!   man pages as the built kolach-docgen writes them);
//! - `systemd-analyze security --offline=true` exposure: controld ≤ 2.5,
//!   dataplaned ≤ 4.0;
//! - every syscall the daemons make — start, Sync from controld, three hot
//!   upgrades (RPC, SIGHUP, and `kolachctl dataplane upgrade`, the unit's
//!   ExecReload), the fd store, forwarding, the host firewall (`nft` and
//!   `iptables` as the dataplane runs them: controld `--ip-masq`, FORWARD
//!   policy DROP so the forward rules are written), stop — passes the unit's
//!   `SystemCallFilter=` (which returns EPERM for anything else): the
//!   daemons and kolachctl run under `strace -f` in a 2-host lab.

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kolach_testkit::lab::upgrade::Trigger;
use kolach_testkit::systemd::{self, allowed_syscalls, copy_units, exposure, strace_syscalls};
use kolach_testkit::{bins, run, Lab};

const DATAPLANED_UNIT: &str = "kolach-dataplaned.service";
const CONTROLD_UNIT: &str = "kolach-controld.service";

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kolach-units-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = tmp("verify");
    let units = copy_units(&dir).unwrap();
    let names: Vec<String> = units
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [CONTROLD_UNIT, DATAPLANED_UNIT]);
    // The man pages the units name, as the package gets them. `man` looks
    // them up: man-db is in the Makefile's DEB_PACKAGES.
    assert!(
        find_in_path("man").is_some(),
        "systemd-analyze verify needs `man` to check Documentation=man: (Debian package man-db)"
    );
    let man_dir = systemd::generate_man_pages(&dir.join("docs")).unwrap();
    for unit in [CONTROLD_UNIT, DATAPLANED_UNIT] {
        let page = man_dir.join("man8").join(unit.replace(".service", ".8"));
        assert!(page.is_file(), "no {}", page.display());
    }
    let complaints = systemd::verify(&units, &man_dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        complaints.is_none(),
        "systemd-analyze verify:\n{}",
        complaints.unwrap()
    );
}

/// kolach-dataplaned's `--queues` at most; each queue has a TUN fd and a
/// UDP socket in the fd store.
const MAX_QUEUES: usize = 64;

#[test]
fn the_fd_store_holds_every_queues_tun_fd_and_socket() {
    let unit = unit_text(DATAPLANED_UNIT).unwrap();
    let max: Vec<usize> = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("FileDescriptorStoreMax="))
        .map(|v| v.trim().parse().expect("a number"))
        .collect();
    assert_eq!(max.len(), 1, "one FileDescriptorStoreMax= line: {max:?}");
    assert!(
        max[0] >= 2 * MAX_QUEUES,
        "FileDescriptorStoreMax={} cannot hold {MAX_QUEUES} queues' TUN fds and sockets",
        max[0]
    );
}

#[test]
fn exposure_levels_are_within_the_targets() {
    let dir = tmp("security");
    let units = copy_units(&dir).unwrap();
    let mut bad = Vec::new();
    for (name, limit) in [(CONTROLD_UNIT, 2.5), (DATAPLANED_UNIT, 4.0)] {
        let level = exposure(&dir.join(name)).unwrap();
        eprintln!(
            "systemd-analyze security --offline=true {name}: exposure {level} (target <= {limit})"
        );
        if level > limit {
            bad.push(format!("{name}: {level} > {limit}"));
        }
    }
    drop(units);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn daemons_and_reload_use_only_syscalls_their_units_allow() {
    run("sysc", traced);
}

fn find_in_path(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// Kills the traced daemons if the test ends early: a process whose strace
/// was killed runs on detached, out of the harness's reach.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            // SAFETY: kill(2); at worst the PID is gone already.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

fn unit_text(name: &str) -> Result<String> {
    let p = systemd::units_dir().join(name);
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

fn check(what: &str, used: &BTreeSet<String>, unit: &str) -> Result<()> {
    let allowed = allowed_syscalls(&unit_text(unit)?)?;
    let refused: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    eprintln!(
        "{what}: {} distinct syscalls, {} refused by {unit}'s SystemCallFilter: {refused:?}",
        used.len(),
        refused.len()
    );
    ensure!(
        refused.is_empty(),
        "{what} uses syscalls {unit} refuses (EPERM): {refused:?}"
    );
    Ok(())
}

fn traced(lab: &mut Lab) -> Result<()> {
    let strace = find_in_path("strace")
        .context("strace is needed to see the daemons' syscalls (Debian package strace)")?;
    let strace_s = strace.to_string_lossy().into_owned();
    // A fake systemd for the dataplane, so the sd_notify / FDSTORE path runs.
    let notify_path = lab.dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(Duration::from_millis(200)))?;
    let stop_reading = Arc::new(AtomicBool::new(false));
    // Read as systemd does, all along.
    let reader = {
        let stop = stop_reading.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if notify.recv(&mut buf).is_ok() {
                    n += 1;
                }
            }
            n
        })
    };

    lab.start_etcd()?;
    lab.put_config(kolach_testkit::lab::NETWORK_CONFIG)?;
    // The dataplane then runs nft (table ip kolach) and, once the FORWARD
    // policy is DROP, iptables -A: their syscalls are traced too (strace -f).
    lab.opts.controld_args.push("--ip-masq".into());
    for _ in 0..2 {
        lab.add_host()?;
    }
    let traces = [
        lab.dir.join("strace-dataplaned.txt"),
        lab.dir.join("strace-controld.txt"),
    ];
    {
        let h = lab.host_mut(1);
        for (p, trace, env) in [
            (&mut h.dataplaned, &traces[0], Some(&notify_path)),
            (&mut h.controld, &traces[1], None),
        ] {
            let mut args = vec!["-f".to_string(), "-qq".to_string(), "-o".to_string()];
            args.push(trace.display().to_string());
            if let Some(n) = env {
                args.push("-E".to_string());
                args.push(format!("NOTIFY_SOCKET={}", n.display()));
            }
            args.push(p.program.display().to_string());
            args.append(&mut p.args);
            p.args = args;
            p.program = strace.clone();
        }
    }
    for n in [1, 2] {
        lab.start_host(n)?;
    }
    for n in [1, 2] {
        lab.wait_ready(n)?;
        lab.add_pod(n)?;
    }
    lab.wait_converged(Duration::from_secs(20))?;
    for n in [1, 2] {
        kolach_testkit::netns::exec_ok(&lab.host(n).ns, "iptables", &["-P", "FORWARD", "DROP"])?;
    }
    let h1 = lab.host(1).ns.clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let table = kolach_testkit::netns::exec_ok(&h1, "nft", &["list", "table", "ip", "kolach"]);
        let rules = kolach_testkit::netns::exec_ok(&h1, "iptables", &["-S", "FORWARD"])?;
        if table.is_ok() && rules.matches("\"kolach:").count() == 2 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "host1's dataplane did not write its firewall: {table:?}\n{rules}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dp_pid = lab.dp_status(1)?.pid;
    let cd_pid = lab.cd_status(1)?.pid;
    let _guard = KillOnDrop(vec![dp_pid, cd_pid]);

    lab.assert_all_pairs_ping(2)?;
    lab.hot_upgrade(1, Trigger::Rpc)?;
    lab.hot_upgrade(1, Trigger::Sighup)?;
    // The unit's ExecReload, traced.
    let reload_trace = lab.dir.join("strace-kolachctl.txt");
    let dir = lab.host(1).dir.display().to_string();
    let kolachctl = bins::require(bins::KOLACHCTL).display().to_string();
    let before = lab.dp_status(1)?.upgrades;
    let out = kolach_testkit::cmd::run(
        &strace_s,
        &[
            "-f",
            "-qq",
            "-o",
            &reload_trace.display().to_string(),
            &kolachctl,
            "--run-dir",
            &dir,
            "dataplane",
            "upgrade",
        ],
        Duration::from_secs(60),
    )?;
    ensure!(
        out.success(),
        "kolachctl dataplane upgrade: {}{}",
        out.stdout,
        out.stderr
    );
    ensure!(lab.dp_status(1)?.upgrades == before + 1);
    lab.assert_all_pairs_ping(2)?;
    stop_reading.store(true, Ordering::Relaxed);
    let notes = reader.join().expect("notify reader");
    ensure!(notes > 0, "the dataplane sent no sd_notify message");

    // Graceful stops are part of what the units run.
    for pid in [cd_pid, dp_pid] {
        // SAFETY: kill(2) on a daemon of this lab.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let h = lab.host_mut(1);
    for p in [&mut h.controld, &mut h.dataplaned] {
        p.wait_or_kill(deadline);
    }

    let read = |p: &Path| -> Result<BTreeSet<String>> {
        Ok(strace_syscalls(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ))
    };
    check("kolach-dataplaned", &read(&traces[0])?, DATAPLANED_UNIT)?;
    check(
        "kolachctl dataplane upgrade (ExecReload)",
        &read(&reload_trace)?,
        DATAPLANED_UNIT,
    )?;
    check("kolach-controld", &read(&traces[1])?, CONTROLD_UNIT)?;
    Ok(())
}
