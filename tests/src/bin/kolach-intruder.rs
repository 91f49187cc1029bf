//! kolach-intruder: what a local user who is neither root nor the controld
//! user tries against the daemons' sockets. The tests run it with
//! `setpriv --reuid 65534 ...`; each subcommand prints one line.
//!
//! ```text
//! kolach-intruder connect SOCKET            ok | error <kind>: <message>
//! kolach-intruder apply SOCKET              code <gRPC code> [applied=<bool>]
//! kolach-intruder sync SOCKET               code <gRPC code>
//! kolach-intruder status SOCKET             code <gRPC code>
//! kolach-intruder idle SOCKET COUNT HOLD_MS {"opened":..,"failed":..,"closed_at_once":..,"closed_later":..,"open_at_end":..}
//! ```

use std::io::Read;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use kolach_proto::dataplane::dataplane_client::DataplaneClient;
use kolach_proto::dataplane::{Backend, BackendType, Snapshot, SnapshotVersion, StatusRequest};
use kolach_proto::uds;

/// A snapshot that would wipe every route if it were applied: the newest
/// version there can be, no peers.
fn hostile_snapshot() -> Snapshot {
    let net: Ipv4Net = "10.50.0.0/16".parse().expect("static");
    let local: Ipv4Net = "10.50.250.0/24".parse().expect("static");
    Snapshot {
        version: Some(SnapshotVersion {
            epoch: u64::MAX,
            generation: u64::MAX,
            etcd_revision: i64::MAX,
        }),
        backend: Some(Backend {
            r#type: BackendType::Udp as i32,
            port: 8285,
            vni: 0,
        }),
        network: Some(net.into()),
        local_subnet: Some(local.into()),
        public_ip: Some(Ipv4Addr::new(198, 18, 0, 1).into()),
        iface: "eth0".into(),
        mtu: 1472,
        routes: vec![],
        ..Default::default()
    }
}

fn code_line<T>(r: std::result::Result<T, tonic::Status>, extra: impl Fn(&T) -> String) -> String {
    match r {
        Ok(v) => format!("code Ok{}", extra(&v)),
        Err(s) => format!("code {:?} {}", s.code(), s.message()),
    }
}

async fn client(sock: &Path) -> Result<DataplaneClient<tonic::transport::Channel>> {
    Ok(DataplaneClient::new(
        uds::connect(sock, "the daemon").await?,
    ))
}

async fn grpc(what: &str, sock: &Path) -> Result<String> {
    let mut c = client(sock).await?;
    Ok(match what {
        "apply" => code_line(c.apply(hostile_snapshot()).await, |r| {
            format!(" applied={}", r.get_ref().applied)
        }),
        "sync" => {
            let out = tokio_stream::iter(vec![hostile_snapshot()]);
            match c.sync(out).await {
                Err(s) => format!("code {:?} {}", s.code(), s.message()),
                Ok(r) => {
                    let mut inbound = r.into_inner();
                    code_line(inbound.message().await, |m| {
                        format!(" applied={}", m.as_ref().is_some_and(|m| m.applied))
                    })
                }
            }
        }
        "status" => code_line(c.status(StatusRequest {}).await, |_| String::new()),
        _ => bail!("unknown call {what}"),
    })
}

/// Opens `count` connections that never send a byte, then watches for
/// `hold` which of them the server closes, and when.
fn idle(sock: &Path, count: usize, hold: Duration) -> String {
    let mut conns: Vec<(UnixStream, Instant, Option<Duration>)> = Vec::new();
    let mut failed = 0;
    for _ in 0..count {
        match UnixStream::connect(sock) {
            Ok(s) => {
                s.set_nonblocking(true).ok();
                conns.push((s, Instant::now(), None));
            }
            Err(_) => failed += 1,
        }
    }
    let end = Instant::now() + hold;
    let mut buf = [0u8; 1024];
    while Instant::now() < end {
        for (s, at, closed) in conns.iter_mut().filter(|c| c.2.is_none()) {
            match s.read(&mut buf) {
                Ok(0) => *closed = Some(at.elapsed()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *closed = Some(at.elapsed()),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let at_once = conns
        .iter()
        .filter(|c| c.2.is_some_and(|d| d < Duration::from_millis(1000)))
        .count();
    let later = conns
        .iter()
        .filter(|c| c.2.is_some_and(|d| d >= Duration::from_millis(1000)))
        .count();
    let first_later = conns
        .iter()
        .filter_map(|c| c.2)
        .filter(|d| *d >= Duration::from_millis(1000))
        .min()
        .map_or(0, |d| d.as_millis());
    format!(
        r#"{{"opened":{},"failed":{failed},"closed_at_once":{at_once},"closed_later":{later},"first_closed_later_ms":{first_later},"open_at_end":{}}}"#,
        conns.len(),
        conns.iter().filter(|c| c.2.is_none()).count()
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let line = match run(&args) {
        Ok(l) => l,
        Err(e) => format!("error {e:#}"),
    };
    println!("{line}");
}

fn run(args: &[String]) -> Result<String> {
    let (cmd, sock) = match args {
        [c, s, ..] => (c.as_str(), PathBuf::from(s)),
        _ => bail!("usage: kolach-intruder connect|apply|sync|status|idle SOCKET [COUNT HOLD_MS]"),
    };
    match cmd {
        "connect" => Ok(match UnixStream::connect(&sock) {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("error {:?}: {e}", e.kind()),
        }),
        "idle" => {
            let count: usize = args.get(2).context("COUNT")?.parse()?;
            let hold: u64 = args.get(3).context("HOLD_MS")?.parse()?;
            Ok(idle(&sock, count, Duration::from_millis(hold)))
        }
        call => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), grpc(call, &sock))
                    .await
                    .context("timed out")?
            })
        }
    }
}
