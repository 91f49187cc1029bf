//! Hot upgrade of the real binary in a namespace: the binary now on disk
//! takes over the same PID, the TUN fd, the UDP socket (its queued datagrams
//! included), the listening socket, the snapshot (pool blocks included) and
//! the counters; a binary
//! that fails its check is refused and the old one keeps running; a failed
//! exec leaves the old image forwarding.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::{log, Daemon, Launch, BIN};
use common::{kolach_routes, udp_snapshot, with_blocks, Netns, TempDir};
use kolach_proto::dataplane::DataplaneStatus;
use nix::sys::signal::Signal;

const PEERS: [(&str, &str); 1] = [("10.50.7.0/24", "198.18.0.2")];

fn underlay(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"]);
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", "u0"]);
    ns.ip(&["addr", "add", "198.18.0.9/24", "dev", "u1"]);
    ns.ip(&["link", "set", "u0", "up"]);
    ns.ip(&["link", "set", "u1", "up"]);
    ns
}

/// Installs `content` at `path` the way a package manager does: a new file
/// renamed over the old one (the running binary's inode stays untouched).
fn install(path: &Path, from: &Path, extra: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    if !extra.is_empty() {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&tmp).unwrap();
        f.write_all(extra).unwrap();
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn install_script(path: &Path, body: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The inode of the UDP socket bound to port 8285 in the namespace
/// (`/proc/net/udp`, seen from inside it).
fn udp_socket_inode(ns: &Netns) -> String {
    let out = ns.exec(&["cat", "/proc/net/udp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(":205D"))
        })
        .and_then(|l| l.split_whitespace().nth(9))
        .unwrap_or_else(|| panic!("no socket on port 8285:\n{text}"))
        .to_string()
}

/// A datagram to the dataplane's port from an address that is no lease's.
fn send_stranger_datagram(ns: &Netns) {
    let o = ns.exec(&["bash", "-c", "printf x > /dev/udp/198.18.0.1/8285"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn unknown_sender(st: &DataplaneStatus) -> u64 {
    st.counters
        .as_ref()
        .and_then(|c| c.dropped.get("unknown-sender").copied())
        .unwrap_or(0)
}

fn upgraded(d: &Daemon, to: u32) -> DataplaneStatus {
    d.wait_for(
        &format!("upgrade number {to}"),
        Duration::from_secs(15),
        |s| s.upgrades >= to || !s.upgrade_error.is_empty(),
    )
}

#[test]
fn hot_upgrade_runs_the_new_binary_with_the_same_pid_fds_and_table() {
    let ns = underlay("upg");
    let dir = TempDir::new("upg-run");
    let bin_dir = TempDir::new("upg-bin");
    let program: PathBuf = bin_dir.0.join("kolach-dataplaned");
    install(&program, Path::new(BIN), b"");
    let mut launch = Launch::new(&ns, &dir.0);
    launch.program = program.clone();
    let mut d = Daemon::launch(launch);
    let snapshot = with_blocks(
        udp_snapshot(1, "10.50.18.0/24", "198.18.0.1", &PEERS),
        &["203.0.113.0/28"],
        &[&["203.0.113.16/28"]],
    );
    let r = d.apply(snapshot.clone());
    assert!(r.applied, "{}", r.reason);
    assert_eq!(
        d.routes().routes,
        snapshot.routes,
        "Routes shows the blocks"
    );
    let block_routes = ["203.0.113.16/28 via - dev kolach0"];
    assert_eq!(kolach_routes(&ns), block_routes);
    let before = d.status().unwrap();
    let b0 = before.binary.clone().expect("binary in status");
    assert_eq!(
        (b0.path.as_str(), b0.changed_on_disk, before.upgrades),
        (program.to_str().unwrap(), false, 0)
    );
    let sock_inode = udp_socket_inode(&ns);
    let tun_index = ns.ip_json(&["link", "show", "kolach0"])[0]["ifindex"].clone();
    send_stranger_datagram(&ns);
    d.wait_for("the stranger counted", Duration::from_secs(3), |s| {
        unknown_sender(s) == 1
    });

    // A new build is installed: status says the file changed.
    install(&program, Path::new(BIN), b"\0kolach-test-new-build");
    let new_inode = std::fs::metadata(&program).unwrap().ino();
    assert!(d.status().unwrap().binary.unwrap().changed_on_disk);

    let reply = d.upgrade();
    assert!(reply.started, "{}", reply.reason);
    assert_eq!((reply.pid, reply.upgrades), (d.pid(), 0));
    assert_eq!(reply.binary.as_ref().unwrap().inode, new_inode);
    let after = upgraded(&d, 1);
    assert_eq!(after.upgrade_error, "", "log:\n{}", log(&dir.0));
    assert_eq!(after.pid, d.pid(), "same PID");
    assert_eq!(after.upgrades, 1);
    let b1 = after.binary.clone().unwrap();
    assert_eq!((b1.inode, b1.changed_on_disk), (new_inode, false));
    assert_eq!(b1.size, b0.size + 22);
    assert_eq!(after.start_time_unix, before.start_time_unix);
    assert!(after.upgraded_at_unix > 0 && after.handover_pause_us > 0);
    assert_eq!(after.applied_version, before.applied_version);
    assert_eq!(after.route_count, 1);
    assert_eq!(unknown_sender(&after), 1, "counters carried over");
    assert_eq!(d.routes().routes, snapshot.routes, "blocks carried over");
    assert_eq!(kolach_routes(&ns), block_routes);
    assert_eq!(udp_socket_inode(&ns), sock_inode, "the same UDP socket");
    assert_eq!(
        ns.ip_json(&["link", "show", "kolach0"])[0]["ifindex"],
        tun_index
    );
    // The loop of the new image reads the socket.
    send_stranger_datagram(&ns);
    d.wait_for("the new image counting", Duration::from_secs(3), |s| {
        unknown_sender(s) == 2
    });

    // SIGHUP does the same.
    d.signal(Signal::SIGHUP);
    let st = upgraded(&d, 2);
    assert_eq!(
        (st.pid, st.upgrades, st.upgrade_error.as_str()),
        (d.pid(), 2, "")
    );

    // A binary that fails its check is refused; nothing changes.
    install_script(&program, "echo 'cannot start: broken build' >&2; exit 3");
    let reply = d.upgrade();
    assert!(!reply.started);
    assert!(
        reply.reason.contains("exit status: 3") && reply.reason.contains("broken build"),
        "{}",
        reply.reason
    );
    let st = d.status().unwrap();
    assert_eq!((st.pid, st.upgrades), (d.pid(), 2));
    assert_eq!(st.upgrade_error, reply.reason);
    assert!(log(&dir.0).contains("hot upgrade failed; this image keeps running"));

    // One that passes the check but is gone when exec comes: the old image
    // resumes forwarding and says why.
    install_script(
        &program,
        "echo 'kolach-dataplaned 9.9.9 handoff=1'; rm -f \"$0\"",
    );
    let reply = d.upgrade();
    assert!(reply.started, "{}", reply.reason);
    let st = upgraded(&d, 3);
    assert_eq!((st.pid, st.upgrades), (d.pid(), 2));
    assert!(
        st.upgrade_error.starts_with("cannot execute") && st.upgrade_error.contains("No such file"),
        "{}",
        st.upgrade_error
    );
    send_stranger_datagram(&ns);
    d.wait_for(
        "the old image forwarding again",
        Duration::from_secs(3),
        |s| unknown_sender(s) == 3,
    );

    // And a good binary again: upgrades resume.
    install(&program, Path::new(BIN), b"");
    let reply = d.upgrade();
    assert!(reply.started, "{}", reply.reason);
    let st = upgraded(&d, 3);
    assert_eq!(
        (st.pid, st.upgrades, st.upgrade_error.as_str()),
        (d.pid(), 3, "")
    );
    let exit = d.terminate(Duration::from_secs(5));
    assert!(
        exit.success(),
        "{exit} after SIGTERM; log:\n{}",
        log(&dir.0)
    );
    assert!(ns.has_link("kolach0"));
}
