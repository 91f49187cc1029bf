//! controld's `--metrics-addr`: two hosts, each controld serving on
//! 127.0.0.1 inside its own namespace. A scrape of host 1 during a ping
//! between the pods agrees with `kolachctl status --json` (lease subnet,
//! peers, packets going up), `promtool check metrics` accepts it, and the
//! snapshot apply histogram is well formed. A pod in a pool of its own makes
//! host 1 claim a block: a new snapshot is pushed and applied (the pushed
//! counter and the histogram's count go up), and the pool's addresses in use
//! and free fill its blocks exactly. `/healthz` goes 503 with a reason while
//! host 1's dataplaned is stopped and back to 200 once it runs again, and
//! controld's resend to the new process counts as a push.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kolach_testkit::{cmd, netns, run, Lab};

const ADDR: &str = "127.0.0.1:9465";
const APPLY: &str = "kolach_dataplane_snapshot_apply_duration_seconds";
const PUSHED: &str = "kolach_controld_snapshots_pushed_total";

#[test]
fn metrics_match_status_and_healthz_follows_the_dataplane() {
    run("metrics", metrics);
}

/// `curl` in host `n`'s namespace: HTTP status and body.
fn get(lab: &Lab, n: u8, path: &str) -> Result<(u16, String)> {
    let url = format!("http://{ADDR}{path}");
    let out = netns::exec(
        &lab.host(n).ns,
        "curl",
        &["-sS", "--max-time", "10", "-w", "\n%{http_code}", &url],
        Duration::from_secs(15),
    )?;
    ensure!(out.success(), "curl {url} failed: {}", out.stderr);
    let (body, code) = out
        .stdout
        .rsplit_once('\n')
        .context("curl printed no status")?;
    Ok((code.trim().parse()?, body.to_string()))
}

/// Samples by name with their labels as written (`name{a="b"}` → value).
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn value(s: &HashMap<String, f64>, key: &str) -> Result<f64> {
    s.get(key)
        .copied()
        .with_context(|| format!("no sample {key} in the scrape"))
}

/// Checks the apply histogram of a scrape (buckets cumulative, never
/// falling, ending with `+Inf` equal to `_count`; at least one apply, taking
/// some time) and returns its count and sum.
fn apply_histogram(body: &str) -> Result<(f64, f64)> {
    ensure!(
        body.contains(&format!("# TYPE {APPLY} histogram\n")),
        "no {APPLY} histogram in the scrape:\n{body}"
    );
    let prefix = format!("{APPLY}_bucket{{le=\"");
    let mut buckets = Vec::new();
    for l in body.lines() {
        if let Some(rest) = l.strip_prefix(&prefix) {
            let (le, n) = rest.split_once("\"} ").context("bucket line")?;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            buckets.push((le, n.parse::<f64>()?));
        }
    }
    ensure!(buckets.len() >= 2, "too few buckets: {buckets:?}");
    for w in buckets.windows(2) {
        ensure!(
            w[0].0 < w[1].0 && w[0].1 <= w[1].1,
            "buckets not cumulative: {buckets:?}"
        );
    }
    let s = samples(body);
    let count = value(&s, &format!("{APPLY}_count"))?;
    let sum = value(&s, &format!("{APPLY}_sum"))?;
    let (le, inf) = *buckets.last().expect("two or more");
    ensure!(
        le == f64::INFINITY && inf == count,
        "+Inf bucket {inf} (le {le}) is not the count {count}"
    );
    ensure!(
        count >= 1.0 && sum > 0.0,
        "no apply timed: count {count}, sum {sum}"
    );
    Ok((count, sum))
}

fn promtool(body: &str) -> Result<()> {
    let out = cmd::run_input(
        "promtool",
        &["check", "metrics"],
        Some(body.as_bytes()),
        Duration::from_secs(20),
    )?;
    ensure!(
        out.success(),
        "promtool check metrics:\n{}{}\n{body}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// Scrapes host 1 until `ok` holds of the samples; returns the last body.
fn wait_scrape(
    lab: &Lab,
    what: &str,
    ok: impl Fn(&HashMap<String, f64>) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = get(lab, 1, "/metrics")?;
        if ok(&samples(&body)) {
            return Ok(body);
        }
        if Instant::now() > deadline {
            bail!("{what}: not seen in the scrape within 15 s:\n{body}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_health(lab: &Lab, want: u16, within: Duration) -> Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = get(lab, 1, "/healthz")?;
        if code == want {
            return Ok(body);
        }
        if Instant::now() > deadline {
            bail!("/healthz stayed {code} ({body:?}), wanted {want}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metrics(lab: &mut Lab) -> Result<()> {
    lab.opts
        .controld_args
        .extend(["--metrics-addr".to_string(), ADDR.to_string()]);
    lab.mesh(2)?;
    wait_health(lab, 200, Duration::from_secs(10))?;

    let (_, before) = get(lab, 1, "/metrics")?;
    let before = samples(&before);
    let ping = lab.ping_pods(1, 2, 5)?;
    ensure!(ping.received > 0, "no ping answer: {ping:?}");
    let (code, body) = get(lab, 1, "/metrics")?;
    ensure!(code == 200, "/metrics answered {code}");
    let (ok, status) = lab.kolachctl_json(1, &["status"])?;
    ensure!(ok, "kolachctl status failed: {status}");
    let after = samples(&body);

    let subnet = status["controld"]["subnet"]
        .as_str()
        .context("no subnet in status")?;
    ensure!(
        value(
            &after,
            &format!("kolach_controld_lease_held{{subnet=\"{subnet}\"}}")
        )? == 1.0,
        "lease gauge does not name {subnet}:\n{body}"
    );
    let peers = status["controld"]["peer_count"]
        .as_f64()
        .context("peer_count")?;
    ensure!(value(&after, "kolach_controld_peers")? == peers && peers == 1.0);
    ensure!(value(&after, "kolach_dataplane_up")? == 1.0);
    // Nothing changes in etcd meanwhile: the generations and etcd's state agree.
    for (metric, field) in [
        ("kolach_controld_snapshot_generation", "generation"),
        (
            "kolach_controld_dataplane_applied_generation",
            "applied_generation",
        ),
    ] {
        let want = status["controld"][field].as_f64().context(field)?;
        ensure!(
            value(&after, metric)? == want,
            "{metric} != status {field} {want}"
        );
    }
    ensure!(value(&after, "kolach_controld_etcd_reachable")? == 1.0);
    ensure!(value(&after, "kolach_controld_lease_expiry_seconds")? > 0.0);
    let rx = "kolach_dataplane_packets_total{path=\"tun_rx\"}";
    let udp_rx = "kolach_dataplane_packets_total{path=\"udp_rx\"}";
    ensure!(
        value(&after, rx)? >= value(&before, rx)? + 5.0
            && value(&after, udp_rx)? >= value(&before, udp_rx)? + 5.0,
        "packets did not go up with the ping:\nbefore {before:?}\nafter {body}"
    );
    // The status, read after the scrape, counts at least as many.
    let status_rx = status["dataplane"]["counters"]["tun_rx_packets"]
        .as_f64()
        .context("tun_rx_packets")?;
    ensure!(
        status_rx >= value(&after, rx)?,
        "status {status_rx} < scrape"
    );

    promtool(&body)?;

    // The dataplane timed its applies; the last one is among them.
    let (applies, sum) = apply_histogram(&body)?;
    let last_us = status["dataplane"]["last_apply_us"]
        .as_f64()
        .context("no last_apply_us in status")?;
    ensure!(
        last_us > 0.0 && last_us <= sum * 1e6 + 1.0,
        "last apply {last_us} us, histogram sum {sum} s"
    );
    let pushed = value(&after, PUSHED)?;
    ensure!(pushed >= 1.0, "no snapshot counted as pushed");
    ensure!(value(&after, "kolach_controld_snapshot_push_errors_total")? == 0.0);
    // The default pool is the subnet less .0, .1 and the last address.
    let prefix: u32 = subnet
        .rsplit_once('/')
        .context("subnet without a prefix")?
        .1
        .parse()?;
    let default = value(&after, "kolach_ipam_addresses_in_use{pool=\"default\"}")?
        + value(&after, "kolach_ipam_addresses_free{pool=\"default\"}")?;
    ensure!(
        default == f64::from((1u32 << (32 - prefix)) - 3),
        "default pool: in use + free = {default} in a /{prefix}"
    );

    // A pod in pool "blue" makes host 1 claim a /28 block, which goes into
    // a new snapshot: pushed, applied and timed.
    lab.create_pool(1, "blue", "203.0.113.0/24", &["--block-len", "28"])?;
    let pod = lab.cni_add(1, "m", Some("blue"))?;
    let body = wait_scrape(lab, "a push after the block claim", |s| {
        s.get(PUSHED).is_some_and(|&n| n > pushed)
            && s.get("kolach_ipam_blocks_held{pool=\"blue\"}")
                .is_some_and(|&n| n >= 1.0)
    })?;
    promtool(&body)?;
    let (applies_now, _) = apply_histogram(&body)?;
    ensure!(
        applies_now > applies,
        "the block's snapshot was not timed: {applies} -> {applies_now}"
    );
    let s = samples(&body);
    let in_use = value(&s, "kolach_ipam_addresses_in_use{pool=\"blue\"}")?;
    let free = value(&s, "kolach_ipam_addresses_free{pool=\"blue\"}")?;
    let held = value(&s, "kolach_ipam_blocks_held{pool=\"blue\"}")?;
    ensure!(
        in_use >= 1.0 && in_use + free == 16.0 * held,
        "pool blue: {in_use} in use + {free} free != 16 x {held} blocks (pod {})",
        pod.ip
    );
    let pushed = value(&s, PUSHED)?;

    let _ = lab.host_mut(1).dataplaned.stop();
    let why = wait_health(lab, 503, Duration::from_secs(10))?;
    ensure!(
        why.contains("kolach-dataplaned"),
        "503 without a reason: {why:?}"
    );
    let (_, body) = get(lab, 1, "/metrics")?;
    let down = samples(&body);
    ensure!(value(&down, "kolach_dataplane_up")? == 0.0);
    ensure!(!down.contains_key(rx), "dataplane figures while it is down");

    lab.host_mut(1).dataplaned.start()?;
    wait_health(lab, 200, Duration::from_secs(20))?;
    // controld sends its snapshot again to the new process, which restored
    // it from disk (an apply of its own, timed in its new histogram) and
    // answers "already applied": a push all the same.
    let body = wait_scrape(lab, "the resend to the restarted dataplane", |s| {
        s.get(PUSHED).is_some_and(|&n| n > pushed)
    })?;
    apply_histogram(&body)?;
    promtool(&body)?;
    Ok(())
}
