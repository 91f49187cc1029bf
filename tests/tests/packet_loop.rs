//! The udp backend's packet-loop modes.
//!
//! By default one thread (`kolach-udp-loop`) moves both directions;
//! `KOLACH_LOOP_THREADS=2` gives one thread per direction: hosts of either
//! kind ping each other, carry iperf3 both ways and hot-upgrade under a ping
//! without losing a probe.
//!
//! With `KOLACH_BUSY_POLL=30ms` (issue 5's round-trip time) the one thread
//! keeps polling while packets come and sleeps once 30 ms passed without one:
//! - the status says so (`..., busy-poll 30ms`) and the loop is the one
//!   `kolach-udp-loop` thread;
//! - idle, that thread uses (almost) no CPU; under a 100 pps ping it polls
//!   (a large share of a CPU) and every probe is answered; after the traffic
//!   it sleeps again;
//! - iperf3 TCP completes both ways (one thread carries both directions);
//! - a hot upgrade under a 200 pps ping loses nothing (the polling thread
//!   stops for the handover like the sleeping ones) and the new image polls too.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kolach_tests::iperf::Iperf;
use kolach_tests::lab::NETWORK_CONFIG;
use kolach_tests::mesh::CONVERGE_WITHIN;
use kolach_tests::steady_ping::SteadyPing;
use kolach_tests::upgrade::Trigger;
use kolach_tests::{run, Lab};

const WINDOW: &str = "30ms";
const OFFLOAD: &str = "offload (tun-tso, tun-uso, udp-gso, udp-gro)";
const MODE: &str = "offload (tun-tso, tun-uso, udp-gso, udp-gro), busy-poll 30ms";
const TWO_THREADS_MODE: &str = "offload (tun-tso, tun-uso, udp-gso, udp-gro), 2 loop threads";
/// The one loop thread's name as /proc shows it (15 characters at most).
const THREAD: &str = "kolach-udp-loop";
/// `--loop-threads 2`'s threads (names cut to 15 characters by the kernel).
const TWO_THREADS: [&str; 2] = ["kolach-tun-to-u", "kolach-udp-to-t"];
/// Every packet-loop thread name there is.
const LOOP_THREADS: [&str; 3] = [THREAD, TWO_THREADS[0], TWO_THREADS[1]];
/// A sleeping loop: at most this share of one CPU over a quiet second
/// (stray IPv6 packets of the pods may wake it for a window or two).
const IDLE_MAX: f64 = 0.05;
/// A polling loop under a 100 pps ping: at least this share (it yields to
/// anything else that wants the CPU, so on a busy machine it gets less than
/// a whole one; a loop that sleeps between probes uses well under 1 %).
const POLLING_MIN: f64 = 0.10;

#[test]
fn busy_poll_polls_while_traffic_flows_and_sleeps_after() {
    run("busypoll", |lab| {
        let busy: &[(&str, &str)] = &[("KOLACH_BUSY_POLL", WINDOW)];
        start(lab, &[busy, busy])?;
        for n in [1, 2] {
            lab.wait_dp_mode(n, MODE)?;
        }
        for n in [1, 2] {
            let threads = loop_threads(lab, n)?;
            ensure!(
                threads == [THREAD],
                "host{n}: packet loop threads {threads:?}, expected only {THREAD}"
            );
            let idle = quiet_share(lab, n)?;
            ensure!(
                idle <= IDLE_MAX,
                "host{n}: the idle loop used {:.1} % of a CPU",
                idle * 100.0
            );
        }

        // 100 pps for 2 s; the share is taken over the middle second.
        let ping = pod_ping(lab, "100pps", Duration::from_millis(10), 200)?;
        std::thread::sleep(Duration::from_millis(500));
        let busy = [
            cpu_share(lab, 1, Duration::from_secs(1))?,
            cpu_share(lab, 2, Duration::from_secs(1))?,
        ];
        let r = ping.finish(Duration::from_secs(3))?;
        ensure!(
            r.lost() == 0,
            "100 pps ping under busy-poll: {}",
            r.describe()
        );
        for (n, share) in [(1, busy[0]), (2, busy[1])] {
            ensure!(
                share >= POLLING_MIN,
                "host{n}: the loop used only {:.1} % of a CPU under a 100 pps ping: it sleeps between packets",
                share * 100.0
            );
        }
        eprintln!(
            "busy-poll: loop CPU under 100 pps {:.0} % / {:.0} %",
            busy[0] * 100.0,
            busy[1] * 100.0
        );
        for n in [1, 2] {
            let idle = quiet_share(lab, n)?;
            ensure!(
                idle <= IDLE_MAX,
                "host{n}: {:.1} % of a CPU a while after the traffic: the loop does not go back to sleep",
                idle * 100.0
            );
        }

        for (client, server) in [(1u8, 2u8), (2, 1)] {
            iperf(lab, client, server)?;
        }

        let ping = pod_ping(lab, "upgrade", Duration::from_millis(5), 400)?;
        std::thread::sleep(Duration::from_millis(300));
        for n in [1, 2] {
            let u = lab.hot_upgrade(n, Trigger::Rpc)?;
            ensure!(
                u.status.mode == MODE,
                "host{n}: after the upgrade the mode is {:?}",
                u.status.mode
            );
            eprintln!("busy-poll: host{n} hot upgrade, loop paused {:?}", u.pause);
        }
        let r = ping.finish(Duration::from_secs(3))?;
        ensure!(
            r.lost() == 0,
            "200 pps ping across hot upgrades: {}",
            r.describe()
        );
        for n in [1, 2] {
            let threads = loop_threads(lab, n)?;
            ensure!(
                threads == [THREAD],
                "host{n} after the upgrade: {threads:?}"
            );
        }
        Ok(())
    });
}

#[test]
fn one_thread_by_default_and_two_on_request_interoperate() {
    run("looptwo", |lab| {
        start(lab, &[&[], &[("KOLACH_LOOP_THREADS", "2")]])?;
        lab.wait_dp_mode(1, OFFLOAD)?;
        lab.wait_dp_mode(2, TWO_THREADS_MODE)?;
        let one = loop_threads(lab, 1)?;
        ensure!(one == [THREAD], "host1 (default): loop threads {one:?}");
        let two = loop_threads(lab, 2)?;
        ensure!(
            two == TWO_THREADS,
            "host2 (--loop-threads 2): loop threads {two:?}"
        );
        for (client, server) in [(1u8, 2u8), (2, 1)] {
            iperf(lab, client, server)?;
        }
        let ping = pod_ping(lab, "upgrade", Duration::from_millis(5), 300)?;
        std::thread::sleep(Duration::from_millis(300));
        for n in [2, 1] {
            let u = lab.hot_upgrade(n, Trigger::Rpc)?;
            eprintln!(
                "loop threads: host{n} hot upgrade, loop paused {:?}",
                u.pause
            );
        }
        let r = ping.finish(Duration::from_secs(3))?;
        ensure!(
            r.lost() == 0,
            "200 pps ping across hot upgrades: {}",
            r.describe()
        );
        let two = loop_threads(lab, 2)?;
        ensure!(two == TWO_THREADS, "host2 after its upgrade: {two:?}");
        Ok(())
    });
}

/// Hosts with the given dataplane environments, pods, routes, all pairs ping.
fn start(lab: &mut Lab, envs: &[&[(&str, &str)]]) -> Result<()> {
    lab.start_etcd()?;
    lab.put_config(NETWORK_CONFIG)?;
    for env in envs {
        let n = lab.add_host()?;
        for (k, v) in env.iter() {
            lab.host_mut(n)
                .dataplaned
                .env
                .push((k.to_string(), v.to_string()));
        }
        lab.start_host(n)?;
    }
    for n in lab.host_ids() {
        lab.wait_ready(n)?;
        lab.add_pod(n)?;
    }
    lab.wait_converged(CONVERGE_WITHIN)?;
    lab.assert_all_pairs_ping(2)
}

/// An iperf3 TCP flow of 3 s from pod `client` to pod `server` that completes.
fn iperf(lab: &Lab, client: u8, server: u8) -> Result<()> {
    let (srv, cli) = (lab.pod(server), lab.pod(client));
    let r = Iperf::start_with(&srv.ns, &cli.ns, srv.ip, 3, &lab.dir, &[])?.finish()?;
    ensure!(
        r.error.is_none(),
        "iperf3 pod{client} → pod{server}: {:?}",
        r.error
    );
    ensure!(
        r.received_bytes > 0,
        "iperf3 moved nothing: {}",
        r.describe()
    );
    eprintln!("iperf3 pod{client} → pod{server}: {}", r.describe());
    Ok(())
}

/// pod1 pings pod2 in the background (output in `ping-<name>.txt`).
fn pod_ping(lab: &Lab, name: &str, interval: Duration, count: u32) -> Result<SteadyPing> {
    let out = lab.dir.join(format!("ping-{name}.txt"));
    SteadyPing::start(&lab.pod(1).ns, lab.pod(2).ip, interval, count, &out)
}

fn dataplaned_pid(lab: &Lab, n: u8) -> Result<u32> {
    Ok(lab.dp_status(n)?.pid)
}

/// Names of host `n`'s dataplane threads that move packets.
fn loop_threads(lab: &Lab, n: u8) -> Result<Vec<String>> {
    let pid = dataplaned_pid(lab, n)?;
    let mut names = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let comm = std::fs::read_to_string(t?.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if LOOP_THREADS.contains(&comm) {
            names.push(comm.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// CPU time (user + system) of host `n`'s loop thread.
fn loop_cpu(lab: &Lab, n: u8) -> Result<Duration> {
    let pid = dataplaned_pid(lab, n)?;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = t?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != THREAD {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat"))?;
        // Fields after the ")" closing the name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').context("no ) in stat")? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        return Ok(Duration::from_micros(ticks * 1_000_000 / hz));
    }
    bail!("host{n}: no {THREAD} thread in kolach-dataplaned {pid}")
}

/// The loop thread's share of one CPU over `over`.
fn cpu_share(lab: &Lab, n: u8, over: Duration) -> Result<f64> {
    let (c0, t0) = (loop_cpu(lab, n)?, Instant::now());
    std::thread::sleep(over);
    let (c1, t1) = (loop_cpu(lab, n)?, Instant::now());
    Ok((c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64())
}

/// The loop's CPU share over a quiet second, the lowest of up to three
/// tries (a stray packet keeps it polling for one window).
fn quiet_share(lab: &Lab, n: u8) -> Result<f64> {
    std::thread::sleep(Duration::from_millis(200));
    let mut lowest = f64::MAX;
    for _ in 0..3 {
        lowest = lowest.min(cpu_share(lab, n, Duration::from_secs(1))?);
        if lowest <= IDLE_MAX {
            break;
        }
    }
    Ok(lowest)
}
