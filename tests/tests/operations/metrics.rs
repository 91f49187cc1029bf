//! controld's `--metrics-addr`: two hosts, each controld serving on
//! 127.0.0.1 inside its own namespace. A scrape of host 1 during a ping
//! between the pods agrees with `kolachctl status --json` (lease subnet,
//! peers, packets going up), `promtool check metrics` accepts it, and
//! `/healthz` goes 503 with a reason while host 1's dataplaned is stopped and
//! back to 200 once it runs again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kolach_testkit::{cmd, netns, run, Lab};

const ADDR: &str = "127.0.0.1:9465";

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
    Ok(())
}
