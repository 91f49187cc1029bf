//! The daemons' sockets against a local user who is neither root nor the
//! controld user (uid 65534, running `kolach-intruder` under setpriv):
//!
//! - both sockets are mode 0660 or tighter, so that user cannot connect;
//! - with the dataplane's socket opened to everyone (as if the user were in
//!   group kolach), pushing a snapshot (Apply, Sync) is PERMISSION_DENIED
//!   and changes nothing, while reading (Status) works;
//! - 100 connections that never send a byte do not stall controld: over the
//!   per-user limit they are closed at once, the rest after the 5 s
//!   handshake timeout, and root is served meanwhile; idle connections on
//!   the dataplane's socket do not stall it either (snapshots keep coming);
//! - an oversized message is refused by both daemons, which go on.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ipnet::Ipv4Net;
use kolach_proto::control::ControlStatus;
use kolach_proto::dataplane::dataplane_client::DataplaneClient;
use kolach_proto::dataplane::{Route, Snapshot};
use kolach_proto::uds;
use kolach_testkit::intruder::{
    at_most_0660, mode_and_owner, parse_idle, run_as_nobody, with_mode,
};
use kolach_testkit::subnet_env::lease_key;
use kolach_testkit::{lab, run, Lab};

const T: Duration = Duration::from_secs(20);

fn big_snapshot(bytes: usize) -> Snapshot {
    Snapshot {
        routes: vec![Route {
            subnet: None,
            public_ip: None,
            vtep_mac: vec![0xab; bytes],
            blocks: vec![],
        }],
        ..Default::default()
    }
}

/// Root's slowest answer to `query` over `for_`.
fn slowest(for_: Duration, query: impl Fn() -> Result<()>) -> Result<Duration> {
    let end = Instant::now() + for_;
    let mut worst = Duration::ZERO;
    while Instant::now() < end {
        let t = Instant::now();
        query()?;
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(worst)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn sockets_refuse_intruders_and_stay_responsive() {
    run("sockets", |lab| {
        lab.mesh(1)?;
        let (dps, cds) = (
            lab.host(1).dataplaned_socket(),
            lab.host(1).controld_socket(),
        );
        modes_keep_others_out(lab, &[&dps, &cds])?;
        pushing_is_refused(lab, &dps)?;
        idle_clients_stall_nobody(lab, &dps, &cds)?;
        oversized_messages_are_refused(lab, &dps, &cds)
    });
}

fn modes_keep_others_out(lab: &Lab, socks: &[&Path]) -> Result<()> {
    for sock in socks {
        let (mode, uid, gid) = mode_and_owner(sock)?;
        eprintln!("{}: mode {mode:04o}, owner {uid}:{gid}", sock.display());
        ensure!(at_most_0660(mode), "{} has mode {mode:04o}", sock.display());
        let line = run_as_nobody(&lab.dir, &["connect", &s(sock)], T)?;
        eprintln!("uid 65534 connecting: {line}");
        ensure!(line.starts_with("error PermissionDenied"), "{line}");
    }
    Ok(())
}

fn pushing_is_refused(lab: &Lab, dps: &Path) -> Result<()> {
    let before = (lab.dp_status(1)?.applied_version, lab.dp_routes(1)?);
    let lines = with_mode(dps, 0o666, || -> Result<Vec<String>> {
        ["apply", "sync", "status"]
            .iter()
            .map(|c| run_as_nobody(&lab.dir, &[c, &s(dps)], T))
            .collect()
    })??;
    for (what, line) in ["Apply", "Sync", "Status"].iter().zip(&lines) {
        eprintln!("uid 65534 {what} on a 0666 dataplaned.sock: {line}");
    }
    ensure!(
        lines[0].starts_with("code PermissionDenied"),
        "Apply: {}",
        lines[0]
    );
    ensure!(
        lines[1].starts_with("code PermissionDenied"),
        "Sync: {}",
        lines[1]
    );
    ensure!(lines[2].starts_with("code Ok"), "Status: {}", lines[2]);
    let after = (lab.dp_status(1)?.applied_version, lab.dp_routes(1)?);
    ensure!(
        after == before,
        "the dataplane changed: {before:?} -> {after:?}"
    );
    Ok(())
}

fn idle_clients_stall_nobody(lab: &Lab, dps: &Path, cds: &Path) -> Result<()> {
    // controld: 100 silent connections from one unprivileged user.
    let (report, worst) = with_mode(cds, 0o666, || -> Result<_> {
        std::thread::scope(|sc| {
            let flood = sc.spawn(|| run_as_nobody(&lab.dir, &["idle", &s(cds), "100", "7000"], T));
            std::thread::sleep(Duration::from_millis(300));
            let worst = slowest(Duration::from_secs(6), || lab.cd_status(1).map(drop));
            let line = flood.join().map_err(|_| anyhow::anyhow!("panicked"))??;
            Ok((parse_idle(&line)?, worst?))
        })
    })??;
    eprintln!(
        "controld.sock, 100 silent connections of uid 65534: {report:?}; root's slowest status meanwhile {worst:?}"
    );
    ensure!(report.opened == 100, "{report:?}");
    ensure!(
        report.closed_at_once >= 84,
        "over the per-user limit: {report:?}"
    );
    ensure!(
        report.closed_at_once + report.closed_later == 100 && report.open_at_end == 0,
        "every silent connection must be closed: {report:?}"
    );
    ensure!(
        (4000..7000).contains(&report.first_closed_later_ms),
        "handshake timeout: {report:?}"
    );
    ensure!(worst < Duration::from_secs(1), "root waited {worst:?}");

    // dataplaned: 50 silent connections; status answers and snapshots flow.
    let subnet: Ipv4Net = "10.50.250.0/24".parse()?;
    let ip = Ipv4Addr::new(198, 18, 0, 77);
    let (report, worst, took) = with_mode(dps, 0o666, || -> Result<_> {
        std::thread::scope(|sc| {
            let flood = sc.spawn(|| run_as_nobody(&lab.dir, &["idle", &s(dps), "50", "3000"], T));
            std::thread::sleep(Duration::from_millis(300));
            let t = Instant::now();
            let key = format!("{}{}", lab::subnets_prefix(), lease_key(subnet));
            lab.etcdctl().put(
                &key,
                &format!(r#"{{"PublicIP":"{ip}","BackendType":"udp"}}"#),
            )?;
            lab.wait_routes(1, Duration::from_secs(2), "got the new lease", |r| {
                r.contains(&(subnet, ip))
            })?;
            let took = t.elapsed();
            let worst = slowest(Duration::from_secs(2), || lab.dp_status(1).map(drop));
            lab.etcdctl().del(&key)?;
            let line = flood.join().map_err(|_| anyhow::anyhow!("panicked"))??;
            Ok((parse_idle(&line)?, worst?, took))
        })
    })??;
    eprintln!(
        "dataplaned.sock, 50 silent connections of uid 65534: {report:?}; a new lease applied {took:?} after its write, root's slowest status {worst:?}"
    );
    ensure!(worst < Duration::from_secs(1), "root waited {worst:?}");
    Ok(())
}

fn oversized_messages_are_refused(lab: &Lab, dps: &Path, cds: &Path) -> Result<()> {
    let (dps, cds) = (dps.to_path_buf(), cds.to_path_buf());
    let dp = lab.block_on(async move {
        let ch = uds::connect(&dps, "kolach-dataplaned").await?;
        match DataplaneClient::new(ch)
            .max_encoding_message_size(64 << 20)
            .apply(big_snapshot(5 << 20))
            .await
        {
            Ok(r) => bail!("a 5 MiB snapshot was accepted: {:?}", r.into_inner()),
            Err(s) => Ok(s),
        }
    })?;
    eprintln!(
        "dataplaned, 5 MiB Apply from root: {:?} {}",
        dp.code(),
        dp.message()
    );
    ensure!(
        matches!(
            dp.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{dp:?}"
    );
    let cd = lab.block_on(async move {
        let ch = uds::connect(&cds, "kolach-controld").await?;
        let mut g = tonic::client::Grpc::new(ch).max_encoding_message_size(64 << 20);
        g.ready().await.context("ready")?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/kolach.control.v1.Control/Status",
        );
        let codec = tonic_prost::ProstCodec::<Snapshot, ControlStatus>::default();
        match g
            .unary(tonic::Request::new(big_snapshot(1 << 20)), path, codec)
            .await
        {
            Ok(_) => bail!("a 1 MiB status request was accepted"),
            Err(s) => Ok(s),
        }
    })?;
    eprintln!(
        "controld, 1 MiB Status request from root: {:?} {}",
        cd.code(),
        cd.message()
    );
    ensure!(
        matches!(
            cd.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{cd:?}"
    );
    ensure!(lab.dp_status(1)?.pid > 0 && lab.cd_status(1)?.pid > 0);
    Ok(())
}
