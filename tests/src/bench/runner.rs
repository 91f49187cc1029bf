//! The whole run: build one lab per selected mode, measure every selected
//! mode once per round in rotated order, load the phantom routes into the
//! udp lab (dataplaned's defaults) if it is among them, tear every lab down (also when a
//! step fails or a signal arrives), then print the table and write the JSON.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use crate::bench::config::{round_order, BenchConfig, Mode, NETWORK};
use crate::bench::floor::{self, FloorSample, FloorSummary, Placement};
use crate::bench::measure::{self, UDP_PAYLOAD};
use crate::bench::pods::{self, PodBench};
use crate::bench::report::{self, Sample, Summary};
use crate::bench::routes::{self, RouteLoad};
use crate::bench::signal;
use crate::bench::target::Target;
use kolach_testkit::cmd;

/// A timestamped copy of the JSON is kept only below this size.
const COPY_MAX_BYTES: usize = 256 * 1024;

#[derive(Serialize)]
pub struct SetupInfo {
    pub mode: Mode,
    pub setup_s: f64,
    pub mtu: u32,
    pub client_ns: String,
    pub server: String,
    pub dataplane_mode: Option<String>,
}

#[derive(Serialize)]
pub struct Document {
    pub generated_at: String,
    pub took_s: f64,
    pub machine: serde_json::Value,
    pub config: serde_json::Value,
    pub reference: Mode,
    pub summary: Vec<Summary>,
    pub table: String,
    /// The relay floor per placement (medians over the rounds).
    pub floor: Vec<FloorSummary>,
    pub floor_samples: Vec<FloorSample>,
    /// The udp lab's dataplaneds with the phantom routes (None: skipped or failed).
    pub routes: Option<RouteLoad>,
    pub routes_error: Option<String>,
    /// Why the phantom routes were not loaded although asked for.
    pub routes_skipped: Option<String>,
    pub setup: Vec<SetupInfo>,
    /// Pods through the CNI plugin (None: skipped or failed).
    pub pods: Option<PodBench>,
    pub pods_error: Option<String>,
    pub samples: Vec<Sample>,
    pub teardown_errors: Vec<String>,
}

fn machine() -> serde_json::Value {
    let uname = cmd::run_ok("uname", &["-srm"]).unwrap_or_default();
    let iperf = cmd::run("iperf3", &["--version"], cmd::DEFAULT_TIMEOUT)
        .map(|o| o.stdout.lines().next().unwrap_or_default().to_string())
        .unwrap_or_default();
    serde_json::json!({
        "kernel": uname.trim(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "iperf3": iperf,
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    })
}

/// Measures one mode once; a failed measurement is recorded, not fatal.
fn measure_mode(t: &mut Target, cfg: &BenchConfig, round: u32, slot: usize) -> Result<Sample> {
    let mut s = Sample {
        round,
        slot,
        mode: t.mode,
        ping: None,
        tcp1: None,
        tcp4: None,
        udp: None,
        errors: Vec::new(),
    };
    let pause = Duration::from_millis(300);
    match measure::ping(t, cfg.pings, cfg.ping_interval) {
        Ok(p) => s.ping = Some(p),
        Err(e) => s_err(&mut s.errors, "ping", e),
    }
    signal::check()?;
    signal::sleep(pause);
    match measure::tcp(t, 1, cfg.seconds) {
        Ok(r) => s.tcp1 = Some(r),
        Err(e) => s_err(&mut s.errors, "tcp 1 stream", e),
    }
    signal::check()?;
    signal::sleep(pause);
    match measure::tcp(t, 4, cfg.seconds) {
        Ok(r) => s.tcp4 = Some(r),
        Err(e) => s_err(&mut s.errors, "tcp 4 streams", e),
    }
    signal::check()?;
    signal::sleep(pause);
    match measure::udp(t, cfg.seconds, &cfg.udp_rate) {
        Ok(r) => s.udp = Some(r),
        Err(e) => s_err(&mut s.errors, "udp", e),
    }
    signal::check()?;
    t.daemons_alive()
        .with_context(|| format!("{} lab, round {}", t.mode, round + 1))?;
    Ok(s)
}

fn s_err(errors: &mut Vec<String>, what: &str, e: anyhow::Error) {
    let msg = format!("{what}: {e:#}");
    eprintln!("bench:   {msg}");
    errors.push(msg);
}

/// One line of progress per sample.
fn describe(s: &Sample) -> String {
    let f = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
    format!(
        "{:<10} tcp1 {} Gbit/s, tcp4 {} Gbit/s, udp {} kpps rx ({}% lost), rtt p50 {} us p99 {} us",
        s.mode.name(),
        f(s.tcp1.as_ref().map(|t| t.report.bits_per_second / 1e9), 3),
        f(s.tcp4.as_ref().map(|t| t.report.bits_per_second / 1e9), 3),
        f(s.udp.as_ref().map(|u| u.report.received_pps() / 1e3), 1),
        f(s.udp.as_ref().map(|u| u.report.lost_percent), 1),
        f(s.ping.as_ref().and_then(|p| p.p50_ms).map(|v| v * 1e3), 0),
        f(s.ping.as_ref().and_then(|p| p.p99_ms).map(|v| v * 1e3), 0),
    )
}

struct Measured {
    samples: Vec<Sample>,
    floor: Vec<FloorSample>,
    routes: Option<RouteLoad>,
    routes_error: Option<String>,
    routes_skipped: Option<String>,
    setup: Vec<SetupInfo>,
}

/// Everything that needs the labs; the caller tears them down afterwards.
fn measure_all(cfg: &BenchConfig, modes: &[Mode], targets: &mut Vec<Target>) -> Result<Measured> {
    for &mode in modes {
        signal::check()?;
        eprintln!("bench: setting up the {mode} lab");
        let t = Target::build(mode)?;
        eprintln!(
            "bench: {mode} lab up in {:.1?} ({} -> {}, MTU {}{})",
            t.setup,
            t.client_ns,
            t.server_ip,
            t.mtu,
            t.dataplane_mode
                .as_ref()
                .map(|m| format!(", udp packet I/O mode {m:?}"))
                .unwrap_or_default()
        );
        if let Some(note) = mode.unconfirmed_note(t.dataplane_mode.as_deref()) {
            eprintln!("bench: warning: {note}");
        }
        targets.push(t);
    }
    eprintln!(
        "bench: {} rounds of {} s runs, about {:.0} s",
        cfg.rounds,
        cfg.seconds,
        cfg.estimate_secs()
    );
    let mut samples = Vec::new();
    let mut floor = Vec::new();
    for round in 0..cfg.rounds {
        let started = Instant::now();
        for (slot, mode) in round_order(modes, round as usize).into_iter().enumerate() {
            let t = targets
                .iter_mut()
                .find(|t| t.mode == mode)
                .ok_or_else(|| anyhow!("no lab for {mode}"))?;
            let s = measure_mode(t, cfg, round, slot)?;
            eprintln!("bench: round {} {}", round + 1, describe(&s));
            samples.push(s);
        }
        for placement in Placement::ALL {
            signal::check()?;
            match floor::measure(round, placement, cfg.pings, cfg.ping_interval) {
                Ok(f) => {
                    eprintln!(
                        "bench: round {} relay floor {}: rtt p50 {:.0} us p99 {:.0} us",
                        round + 1,
                        placement.name(),
                        f.p50_us.unwrap_or(f64::NAN),
                        f.p99_us.unwrap_or(f64::NAN)
                    );
                    floor.push(f);
                }
                Err(e) => eprintln!("bench:   relay floor {}: {e:#}", placement.name()),
            }
        }
        eprintln!(
            "bench: round {}/{} took {:.1?}",
            round + 1,
            cfg.rounds,
            started.elapsed()
        );
    }
    let (mut routes, mut routes_error, mut routes_skipped) = (None, None, None);
    if cfg.routes > 0 {
        match targets.iter().find(|t| t.mode == Mode::Udp) {
            None => {
                let why = format!(
                    "they are loaded into the {udp} lab, and {udp} was not among the modes",
                    udp = Mode::Udp
                );
                eprintln!("bench: skipping the {} phantom routes: {why}", cfg.routes);
                routes_skipped = Some(why);
            }
            Some(udp) => {
                signal::check()?;
                eprintln!("bench: loading {} phantom udp leases", cfg.routes);
                match routes::load(&udp.lab, cfg.routes) {
                    Ok(r) => routes = Some(r),
                    Err(e) => {
                        signal::check()?;
                        eprintln!("bench: phantom routes: {e:#}");
                        routes_error = Some(format!("{e:#}"));
                    }
                }
            }
        }
    }
    let setup = targets
        .iter()
        .map(|t| SetupInfo {
            mode: t.mode,
            setup_s: t.setup.as_secs_f64(),
            mtu: t.mtu,
            client_ns: t.client_ns.clone(),
            server: format!("{} in {}", t.server_ip, t.server_ns),
            dataplane_mode: t.dataplane_mode.clone(),
        })
        .collect();
    Ok(Measured {
        samples,
        floor,
        routes,
        routes_error,
        routes_skipped,
        setup,
    })
}

/// Tears down every lab (last built first); returns the errors.
fn teardown(targets: &mut Vec<Target>) -> Vec<String> {
    let mut errors = Vec::new();
    while let Some(mut t) = targets.pop() {
        for e in t.lab.teardown() {
            errors.push(format!("{} lab: {e:#}", t.mode));
        }
    }
    errors
}

fn memory_line(r: &RouteLoad) -> String {
    let peak = r.hosts.iter().map(|h| h.vm_hwm_kb).max().unwrap_or(0);
    let before = r
        .hosts
        .iter()
        .map(|h| h.vm_hwm_kb_before)
        .max()
        .unwrap_or(0);
    format!(
        "dataplaned (udp) with {} routes: peak RSS (VmHWM) {:.1} MiB (was {:.1} MiB after the traffic rounds), \
         RSS now {:.1} MiB; {} leases written to etcd in {:.2} s, every dataplane held them {:.2} s after \
         the first put ({:.2} s after the last)",
        r.routes,
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
        r.hosts.iter().map(|h| h.vm_rss_kb).max().unwrap_or(0) as f64 / 1024.0,
        r.phantom_leases,
        r.write_s,
        r.applied_s,
        r.applied_after_last_write_s
    )
}

fn pods_line(p: &PodBench) -> String {
    format!(
        "pods: {} through the CNI plugin, {} at a time: ADD p50 {:.1} ms p99 {:.1} ms ({:.0} pods/s), DEL p50 {:.1} ms p99 {:.1} ms ({:.0} pods/s); one at a time ({} pods): ADD p50 {:.1} ms p99 {:.1} ms, DEL p50 {:.1} ms p99 {:.1} ms; controld RSS with {} allocations {:.1} MiB (peak {:.1} MiB)",
        p.pods,
        p.parallel,
        p.add.p50_ms,
        p.add.p99_ms,
        p.add_pods_per_s,
        p.del.p50_ms,
        p.del.p99_ms,
        p.del_pods_per_s,
        p.serial,
        p.add_serial.p50_ms,
        p.add_serial.p99_ms,
        p.del_serial.p50_ms,
        p.del_serial.p99_ms,
        p.allocations,
        p.controld_rss_kb as f64 / 1024.0,
        p.controld_hwm_kb as f64 / 1024.0
    )
}

fn write_json(path: &Path, doc: &Document, unix: u64) -> Result<Vec<PathBuf>> {
    let text = serde_json::to_string_pretty(doc)? + "\n";
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    let mut written = vec![path.to_path_buf()];
    if text.len() <= COPY_MAX_BYTES {
        let stamp = report::utc_timestamp(unix).replace([':', '-'], "");
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("results");
        let copy = path.with_file_name(format!("{stem}-{stamp}.json"));
        std::fs::write(&copy, &text).with_context(|| format!("writing {}", copy.display()))?;
        written.push(copy);
    }
    Ok(written)
}

/// Runs the bench; prints progress to stderr, the table to stdout.
pub fn run(cfg: &BenchConfig) -> Result<()> {
    cfg.validate()?;
    signal::install();
    let started = Instant::now();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let machine = machine();
    let modes = cfg.selected();
    if cfg.reference_added() {
        eprintln!(
            "bench: note: measuring {} too, the ratios are taken against it",
            Mode::REFERENCE
        );
    }
    let mut targets = Vec::new();
    let measured = measure_all(cfg, &modes, &mut targets);
    eprintln!("bench: tearing the labs down");
    let teardown_errors = teardown(&mut targets);
    for e in &teardown_errors {
        eprintln!("bench: teardown: {e}");
    }
    let m = measured?;
    let (mut pod_bench, mut pods_error) = (None, None);
    if cfg.pods > 0 {
        signal::check()?;
        eprintln!(
            "bench: {} pods through the CNI plugin, {} at a time, then {} allocations",
            cfg.pods, cfg.pod_parallel, cfg.allocations
        );
        match pods::run(cfg.pods, cfg.pod_parallel, cfg.allocations) {
            Ok(p) => pod_bench = Some(p),
            Err(e) => {
                eprintln!("bench: pods: {e:#}");
                pods_error = Some(format!("{e:#}"));
            }
        }
    }
    let summary = report::summarize(&modes, &m.samples);
    let table = report::table(&summary);
    let vxlan_p50 = summary
        .iter()
        .find(|s| s.mode == Mode::REFERENCE)
        .and_then(|s| s.rtt_p50_us);
    let floor = floor::summarize(&m.floor, vxlan_p50);
    let doc = Document {
        generated_at: report::utc_timestamp(unix),
        took_s: started.elapsed().as_secs_f64(),
        machine,
        config: serde_json::json!({
            "modes": modes,
            "vxlan_added": cfg.reference_added(),
            "rounds": cfg.rounds,
            "seconds": cfg.seconds,
            "pings": cfg.pings,
            "ping_interval_s": cfg.ping_interval,
            "udp_payload_bytes": UDP_PAYLOAD.parse::<u32>().unwrap_or(64),
            "udp_rate": cfg.udp_rate,
            "phantom_routes": cfg.routes,
            "pods": cfg.pods,
            "pod_parallel": cfg.pod_parallel,
            "allocations": cfg.allocations,
            "network": NETWORK,
        }),
        reference: Mode::REFERENCE,
        summary,
        table: table.clone(),
        floor: floor.clone(),
        floor_samples: m.floor,
        routes: m.routes,
        routes_error: m.routes_error,
        routes_skipped: m.routes_skipped,
        setup: m.setup,
        pods: pod_bench,
        pods_error,
        samples: m.samples,
        teardown_errors,
    };
    println!(
        "kolach bench {}: {} rounds x {} modes, {} s iperf3 runs, {} pings at {} s; medians, (ratio to kernel vxlan)",
        doc.generated_at,
        cfg.rounds,
        modes.len(),
        cfg.seconds,
        cfg.pings,
        cfg.ping_interval
    );
    for s in doc.setup.iter().filter(|s| s.dataplane_mode.is_some()) {
        let mode = s.dataplane_mode.as_deref();
        println!("{} packet I/O mode: {}", s.mode, mode.unwrap_or("?"));
        if let Some(note) = s.mode.unconfirmed_note(mode) {
            println!("  warning: {note}");
        }
    }
    print!("{table}");
    print!("{}", floor::lines(&floor));
    match (&doc.routes, &doc.routes_error, &doc.routes_skipped) {
        (Some(r), _, _) => println!("{}", memory_line(r)),
        (None, Some(e), _) => println!("phantom routes failed: {e}"),
        (None, None, Some(why)) => println!("phantom routes skipped: {why}"),
        (None, None, None) => {}
    }
    match (&doc.pods, &doc.pods_error) {
        (Some(p), _) => println!("{}", pods_line(p)),
        (None, Some(e)) => println!("pods failed: {e}"),
        (None, None) => {}
    }
    let written = write_json(&cfg.out, &doc, unix)?;
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    println!(
        "took {:.0} s; JSON in {}",
        started.elapsed().as_secs_f64(),
        names.join(" and ")
    );
    Ok(())
}
