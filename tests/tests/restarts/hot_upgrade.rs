//! Hot upgrades of kolach-dataplaned on the udp backend (DESIGN §6), whose
//! data path lives in the process: the binary on disk takes over the TUN fd,
//! the UDP socket, the listening socket and the table with the same PID.
//!
//! - 20 hot upgrades of each host's dataplane under a 500 pps pod-to-pod
//!   ping lose no probe and change nothing in the kernel (`ip monitor`);
//! - an iperf3 TCP flow across 10 hot upgrades completes without a reset;
//! - the upgrade really runs the new file (copied, replaced, upgraded: same
//!   PID, status shows the new inode and size), and a binary that fails its
//!   check is refused while the old one forwards on.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use kolach_testkit::kernel::monitor::KernelMonitor;
use kolach_testkit::lab::upgrade::{install_binary, Trigger, Upgraded};
use kolach_testkit::lab::NETWORK_CONFIG;
use kolach_testkit::traffic::iperf::Iperf;
use kolach_testkit::traffic::steady_ping::SteadyPing;
use kolach_testkit::{bins, run, Lab};

/// 500 pps.
const INTERVAL: Duration = Duration::from_millis(2);
const UPGRADES_PER_HOST: u32 = 20;

#[test]
fn twenty_hot_upgrades_per_host_under_500pps_lose_nothing() {
    run("hotupg", upgrades_under_ping);
}

#[test]
fn iperf3_tcp_flow_survives_ten_hot_upgrades() {
    run("hotiperf", iperf_across_upgrades);
}

#[test]
fn hot_upgrade_runs_the_new_binary_and_refuses_a_broken_one() {
    run("hotbin", new_binary_runs);
}

/// Milliseconds, for the summaries.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(what: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    if v.is_empty() {
        return format!("{what}: none");
    }
    format!(
        "{what}: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    )
}

fn upgrades_under_ping(lab: &mut Lab) -> Result<()> {
    lab.mesh(2)?;
    lab.assert_all_pairs_ping(2)?;
    let before = [lab.kernel_objects(1)?, lab.kernel_objects(2)?];
    let monitors: Vec<KernelMonitor> = [1u8, 2]
        .into_iter()
        .map(|n| KernelMonitor::start(&lab.host(n).ns, &lab.dir, &format!("host{n}")))
        .collect::<Result<_>>()?;

    // The 40 upgrades take about 4 s here: room for a machine 3x slower.
    let ping_for = Duration::from_secs(15);
    let count = (ping_for.as_millis() / INTERVAL.as_millis()) as u32;
    let out = lab.dir.join("steady-ping.txt");
    let mut ping = SteadyPing::start(&lab.pod(1).ns, lab.pod(2).ip, INTERVAL, count, &out)?;
    std::thread::sleep(Duration::from_millis(300));
    let mut done: Vec<Upgraded> = Vec::new();
    for i in 0..UPGRADES_PER_HOST {
        for n in [1u8, 2] {
            // Mostly the RPC; every fourth by SIGHUP, every fourth by kolachctl.
            let how = match i % 4 {
                2 => Trigger::Sighup,
                3 => Trigger::Kolachctl,
                _ => Trigger::Rpc,
            };
            done.push(lab.hot_upgrade(n, how)?);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let upgrades_done = ping.started.elapsed();
    ensure!(
        ping.is_running(),
        "the upgrades took {upgrades_done:?}, longer than the {ping_for:?} ping"
    );
    let r = ping.finish(Duration::from_secs(10))?;
    let mut events = Vec::new();
    for (i, m) in monitors.into_iter().enumerate() {
        events.extend(m.stop()?.into_iter().map(|e| format!("host{}: {e}", i + 1)));
    }
    eprintln!(
        "udp: {} hot upgrades (each host {UPGRADES_PER_HOST}; RPC, SIGHUP, kolachctl) done {upgrades_done:?} into a {INTERVAL:?}-interval ping: {}",
        done.len(),
        r.describe()
    );
    eprintln!(
        "{}",
        summary(
            "  packet loop paused",
            done.iter().map(|u| u.pause).collect()
        )
    );
    eprintln!(
        "{}",
        summary(
            "  upgrade asked -> new image answering",
            done.iter().map(|u| u.took).collect()
        )
    );
    eprintln!(
        "  kolach events from ip/bridge monitor meanwhile: {}",
        events.len()
    );
    ensure!(
        r.summary.transmitted == count && r.lost() == 0,
        "packets lost across hot upgrades: {}",
        r.describe()
    );
    ensure!(
        events.is_empty(),
        "hot upgrades touched kolach's kernel objects:\n{}",
        events.join("\n")
    );
    for n in [1u8, 2] {
        let st = lab.dp_status(n)?;
        ensure!(
            st.upgrades == UPGRADES_PER_HOST,
            "host{n}: {} upgrades, not {UPGRADES_PER_HOST}",
            st.upgrades
        );
        let io_errors = kolach_testkit::query::dropped(&st, "io-error");
        ensure!(io_errors == 0, "host{n}: {io_errors} io-error drops");
        let after = lab.kernel_objects(n)?;
        ensure!(
            after.same_as(&before[usize::from(n) - 1])
                && after.links == before[usize::from(n) - 1].links,
            "host{n}: kolach's kernel objects changed across the upgrades"
        );
    }
    lab.wait_converged(Duration::from_secs(5))?;
    Ok(())
}

fn iperf_across_upgrades(lab: &mut Lab) -> Result<()> {
    lab.mesh(2)?;
    let seconds = 14;
    let iperf = Iperf::start(
        &lab.pod(2).ns,
        &lab.pod(1).ns,
        lab.pod(2).ip,
        seconds,
        &lab.dir,
    )?;
    std::thread::sleep(Duration::from_millis(1500));
    let mut pauses = Vec::new();
    for i in 0..10u8 {
        let n = 1 + i % 2;
        pauses.push(lab.hot_upgrade(n, Trigger::Rpc)?.pause);
        std::thread::sleep(Duration::from_millis(900));
    }
    let upgrades_done = iperf.elapsed();
    ensure!(
        upgrades_done < Duration::from_secs(u64::from(seconds)),
        "the upgrades took {upgrades_done:?}, longer than the {seconds} s flow"
    );
    let r = iperf.finish()?;
    eprintln!(
        "udp: iperf3 TCP pod1 -> pod2 across 10 hot upgrades (done {upgrades_done:?} into the flow): {}",
        r.describe()
    );
    eprintln!("{}", summary("  packet loop paused", pauses));
    ensure!(r.error.is_none(), "iperf3 failed: {}", r.describe());
    ensure!(
        r.received_bytes > 0 && r.intervals >= seconds as usize,
        "iperf3 did not run its {seconds} s: {}",
        r.describe()
    );
    Ok(())
}

fn kolachctl_text(lab: &Lab, n: u8) -> Result<String> {
    let prog = bins::require(bins::KOLACHCTL);
    let dir = lab.host(n).dir.display().to_string();
    let out = kolach_testkit::cmd::run(
        &prog.to_string_lossy(),
        &["--run-dir", &dir, "status"],
        Duration::from_secs(10),
    )?;
    Ok(out.stdout)
}

fn new_binary_runs(lab: &mut Lab) -> Result<()> {
    // Host 1's dataplane runs from a copy the test replaces.
    let program = lab.dir.join("kolach-dataplaned");
    let built = bins::require(bins::DATAPLANED);
    install_binary(&built, &program, b"")?;
    lab.start_etcd()?;
    lab.put_config(NETWORK_CONFIG)?;
    for _ in 0..2 {
        lab.add_host()?;
    }
    lab.host_mut(1).dataplaned.program = program.clone();
    for n in [1, 2] {
        lab.start_host(n)?;
    }
    for n in [1, 2] {
        lab.wait_ready(n)?;
        lab.add_pod(n)?;
    }
    lab.wait_converged(Duration::from_secs(10))?;

    let before = lab.dp_status(1)?;
    let b0 = before.binary.clone().expect("status names the binary");
    ensure!(
        Path::new(&b0.path) == program && !b0.changed_on_disk,
        "binary before: {b0:?}"
    );
    let text = kolachctl_text(lab, 1)?;
    ensure!(
        text.contains(&format!("binary       {}", program.display())),
        "{text}"
    );

    // A new build lands on disk; the running one notices.
    let marker = b"\nkolach-tests: a new build\n";
    install_binary(&built, &program, marker)?;
    let new_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&program)?);
    ensure!(lab.dp_status(1)?.binary.unwrap().changed_on_disk);
    let text = kolachctl_text(lab, 1)?;
    ensure!(text.contains("REPLACED on disk"), "{text}");

    let u = lab.hot_upgrade(1, Trigger::Kolachctl)?;
    let b1 = u.status.binary.clone().unwrap();
    eprintln!(
        "host1: upgraded in place to {} (inode {} -> {}, {} -> {} bytes), pid {} kept, loop paused {:.1} ms",
        b1.path,
        b0.inode,
        b1.inode,
        b0.size,
        b1.size,
        u.status.pid,
        ms(u.pause)
    );
    ensure!(
        b1.inode == new_inode && b1.size == b0.size + marker.len() as u64 && !b1.changed_on_disk,
        "after the upgrade the status shows {b1:?}"
    );
    ensure!(u.status.pid == before.pid && u.status.upgrades == 1);
    ensure!(
        u.status.start_time_unix == before.start_time_unix,
        "the start time must be the first image's"
    );
    lab.assert_all_pairs_ping(3)?;

    // A broken build: refused with the reason, the old image forwards on.
    let broken = lab.dir.join("broken.sh");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho 'error: this build is broken' >&2\nexit 1\n",
    )?;
    install_binary(&broken, &program, b"")?;
    let (ok, v) = lab.kolachctl_json(1, &["dataplane", "upgrade"])?;
    ensure!(!ok && v["upgraded"] == false, "{v}");
    let reason = v["reason"].as_str().unwrap_or_default().to_string();
    ensure!(reason.contains("this build is broken"), "{reason}");
    let st = lab.dp_status(1)?;
    ensure!(
        st.pid == before.pid && st.upgrades == 1 && st.upgrade_error == reason,
        "{st:?}"
    );
    eprintln!("host1: broken build refused: {reason}");
    lab.assert_all_pairs_ping(3)?;

    // A good build again upgrades.
    install_binary(&built, &program, b"")?;
    let t = Instant::now();
    let u = lab.hot_upgrade(1, Trigger::Sighup)?;
    ensure!(u.status.upgrades == 2 && u.status.upgrade_error.is_empty());
    eprintln!("host1: good build upgraded by SIGHUP in {:?}", t.elapsed());
    lab.assert_all_pairs_ping(3)
}
