//! The real binary in a namespace: served over its socket, Sync/Apply/Status/
//! Routes, SIGTERM leaves the device, a restart restores the saved snapshot
//! before controld is back, and --cleanup removes everything.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{udp_snapshot, Netns, TempDir};
use kolach_proto::dataplane::dataplane_client::DataplaneClient;
use kolach_proto::dataplane::{RoutesRequest, StatusRequest};
use kolach_proto::uds;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_kolach-dataplaned");

/// The daemon process; killed on drop if still running.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(ns: &Netns, dir: &Path) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dataplaned.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, BIN, "--run-dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let sock = dir.join(kolach_proto::DATAPLANED_SOCKET);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Until it answers: after a restart the previous run's socket file
        // is still there (refusing) until the new process binds its own.
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                Instant::now() < deadline,
                "no socket; log:\n{}",
                read_log(dir)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child }
    }

    /// SIGTERM, then the exit status within `within`.
    fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "did not stop within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("dataplaned.log")).unwrap_or_default()
}

async fn client(dir: &Path) -> DataplaneClient<Channel> {
    let ch = uds::connect(
        &dir.join(kolach_proto::DATAPLANED_SOCKET),
        "kolach-dataplaned",
    )
    .await
    .unwrap();
    DataplaneClient::new(ch)
}

/// From a thread running as uid 65534 (per-thread setresuid, so the rest of
/// the test stays root): whether Status works, and Apply's status code.
fn unprivileged_calls(dir: &Path) -> (bool, tonic::Code) {
    use std::os::unix::fs::PermissionsExt;
    let sock = dir.join(kolach_proto::DATAPLANED_SOCKET);
    // Let the other uid open the socket at all; the gate is what is tested.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    kolach_testkit::process::as_uid(65534, || async {
        let mut c = client(dir).await;
        let status_ok = c.status(StatusRequest {}).await.is_ok();
        let code = c
            .apply(udp_snapshot(9, "10.50.18.0/24", "198.18.0.1", &[]))
            .await
            .unwrap_err()
            .code();
        (status_ok, code)
    })
}

#[test]
fn daemon_serves_stops_restores_and_cleans_up() {
    let ns = Netns::new("bin");
    ns.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"]);
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", "u0"]);
    ns.ip(&["link", "set", "u0", "up"]);
    let dir = TempDir::new("bin-run");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let peers = [
        ("10.50.7.0/24", "198.18.0.2"),
        ("10.50.9.0/24", "198.18.0.3"),
    ];

    let mut d = Daemon::start(&ns, &dir.0);
    rt.block_on(async {
        let mut c = client(&dir.0).await;
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert!(!st.has_snapshot);
        assert_eq!(st.pid, d.child.id());
        assert_eq!(st.version, env!("CARGO_PKG_VERSION"));

        // Sync: every message a full snapshot, every one answered.
        let snaps = vec![
            udp_snapshot(1, "10.50.18.0/24", "198.18.0.1", &peers[..1]),
            udp_snapshot(2, "10.50.18.0/24", "198.18.0.1", &peers),
        ];
        let mut replies = c
            .sync(tokio_stream::iter(snaps))
            .await
            .unwrap()
            .into_inner();
        for generation in [1, 2] {
            let r = replies
                .message()
                .await
                .unwrap()
                .expect("a reply per snapshot");
            assert!(r.applied, "{}", r.reason);
            assert_eq!(r.applied_version.unwrap().generation, generation);
        }
        // Apply: same rules; an older generation is refused.
        let r = c
            .apply(udp_snapshot(1, "10.50.18.0/24", "198.18.0.1", &peers))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.applied);
        assert!(r.reason.contains("older"), "{}", r.reason);

        let routes = c.routes(RoutesRequest {}).await.unwrap().into_inner();
        assert_eq!(routes.version.unwrap().generation, 2);
        assert_eq!(routes.routes.len(), 2);
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert!(st.has_snapshot);
        assert_eq!(
            (st.route_count, st.mtu, st.device.as_str()),
            (2, 1472, "kolach0")
        );
        assert_eq!(st.mode, common::default_mode(common::OFFLOAD));
        assert!(st.counters.unwrap().dropped.contains_key("unknown-sender"));
    });
    assert_eq!(
        unprivileged_calls(&dir.0),
        (true, tonic::Code::PermissionDenied)
    );
    assert!(d.terminate(Duration::from_secs(5)).success());
    assert!(ns.has_link("kolach0"), "SIGTERM must leave the TUN device");
    assert_eq!(common::addresses(&ns, "kolach0"), ["10.50.18.0/16"]);
    assert!(!dir.0.join(kolach_proto::DATAPLANED_SOCKET).exists());

    // Restart: the saved snapshot is applied before the socket answers.
    let mut d = Daemon::start(&ns, &dir.0);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _open_stream = rt.block_on(async {
        let mut c = client(&dir.0).await;
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert!(st.has_snapshot, "restored before serving");
        assert_eq!(st.applied_version.unwrap().generation, 2);
        assert_eq!(st.route_count, 2);
        // Keep a Sync stream open (as controld does) across the next SIGTERM.
        tx.send(udp_snapshot(2, "10.50.18.0/24", "198.18.0.1", &peers))
            .await
            .unwrap();
        let mut replies = c.sync(ReceiverStream::new(rx)).await.unwrap().into_inner();
        let r = replies.message().await.unwrap().unwrap();
        assert_eq!((r.applied, r.reason.as_str()), (true, "already applied"));
        (replies, tx)
    });
    let log = read_log(&dir.0);
    assert!(log.contains("restored snapshot"), "{log}");
    // An open Sync stream must not hold up a graceful stop.
    assert!(d.terminate(Duration::from_secs(3)).success());
    assert!(ns.has_link("kolach0"));

    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, BIN, "--cleanup", "--run-dir"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ns.has_link("kolach0"));
    assert!(!kolach_dataplaned::engine::store::path(&dir.0).exists());
}

#[test]
fn vxlan_daemon_keeps_kernel_state_on_sigterm_and_cleanup_removes_it() {
    use kolach_proto::dataplane::BackendType;
    let ns = Netns::new("binvx");
    ns.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"]);
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", "u0"]);
    ns.ip(&["link", "set", "u0", "up"]);
    let dir = TempDir::new("binvx-run");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let peers = [("10.50.7.0/24", "198.18.0.2")];
    let snap = |generation| {
        common::snapshot(
            BackendType::Vxlan,
            generation,
            "10.50.18.0/24",
            "198.18.0.1",
            &peers,
        )
    };

    let mut d = Daemon::start(&ns, &dir.0);
    rt.block_on(async {
        let mut c = client(&dir.0).await;
        let r = c.apply(snap(1)).await.unwrap().into_inner();
        assert!(r.applied, "{}", r.reason);
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(
            (st.device.as_str(), st.mode.as_str(), st.route_count),
            ("kolach.1", "kernel", 1)
        );
        let b = st.backend.unwrap();
        assert_eq!((b.port, b.vni), (8472, 1));
    });
    assert!(d.terminate(Duration::from_secs(5)).success());
    let routes = common::kolach_routes(&ns);
    assert_eq!(routes, ["10.50.7.0/24 via 10.50.7.0 dev kolach.1 onlink"]);

    // A restarted daemon restores and serves the same state.
    let mut d = Daemon::start(&ns, &dir.0);
    rt.block_on(async {
        let mut c = client(&dir.0).await;
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert!(st.has_snapshot && st.errors.is_empty(), "{st:?}");
        assert_eq!(st.device, "kolach.1");
    });
    assert!(d.terminate(Duration::from_secs(5)).success());
    assert_eq!(common::kolach_routes(&ns), routes);

    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, BIN, "--cleanup", "--run-dir"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(common::vxlan_devices(&ns).is_empty());
    assert!(common::kolach_routes(&ns).is_empty());
    assert!(!kolach_dataplaned::engine::store::path(&dir.0).exists());
}
