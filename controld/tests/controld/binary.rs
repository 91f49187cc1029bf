//! The built binary: environment flags, SIGTERM, fatal errors with a hint.

use std::time::Duration;

use crate::common::{self, wait_for, Etcd, TempDir};
use crate::NET16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_until_sigterm_and_keeps_its_lease() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let dir = TempDir::new("bin");
    let dp = common::FakeDataplane::start(dir.path()).await;
    let env_file = dir.path().join("subnet.env");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kolach-controld"))
        .env("KOLACH_ETCD_ENDPOINTS", &etcd.url)
        .env("KOLACH_IFACE", "lo")
        .env("KOLACH_PUBLIC_IP", "198.18.0.1")
        .env("KOLACH_RUN_DIR", dir.path())
        .env("KOLACH_SUBNET_FILE", &env_file)
        .env("KOLACH_SUBNET_LEASE_TTL", "60s")
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        Duration::from_secs(15),
        "subnet.env from the binary",
        || {
            let f = env_file.clone();
            async move { f.exists() }
        },
    )
    .await;
    assert!(dp.rec.count() >= 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("kolach-controld did not exit on SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert!(!dir.path().join("controld.sock").exists(), "socket removed");
    assert_eq!(
        etcd.subnets().await.len(),
        1,
        "the lease stays for the next start"
    );
    dp.stop().await;
}

#[test]
fn the_binary_exits_1_with_a_hint_when_the_interface_is_missing() {
    let dir = TempDir::new("bin-bad");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kolach-controld"))
        .args(["--iface", "eth9nope", "--run-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no interface named eth9nope"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn a_bad_endpoint_is_fatal_with_a_hint() {
    let dir = TempDir::new("bin-ep");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kolach-controld"))
        .args([
            "--iface",
            "lo",
            "--etcd-endpoints",
            "http://[bad",
            "--run-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad --etcd-endpoints http://[bad"), "{err}");
    assert!(err.contains("hint: check --etcd-endpoints"), "{err}");
}
