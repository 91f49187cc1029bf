//! Under systemd (simulated: a NOTIFY_SOCKET the test reads, and a restart
//! with LISTEN_FDS set by the test): READY=1 once serving, the TUN and UDP
//! fds stored with FDSTORE=1 (FDNAME=tun / udp), and a restarted daemon takes
//! them back, datagrams that arrived while it was dead included.
//! RELOADING=1 / READY=1 frame a hot upgrade.

mod common;

use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::daemon::{log, Daemon, Launch};
use common::{udp_snapshot, Netns, TempDir};
use nix::sys::signal::Signal;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// The fake systemd end of NOTIFY_SOCKET.
struct FakeSystemd {
    sock: UnixDatagram,
    path: std::path::PathBuf,
}

struct Message {
    text: String,
    fds: Vec<OwnedFd>,
}

impl FakeSystemd {
    fn bind(dir: &std::path::Path) -> FakeSystemd {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        FakeSystemd { sock, path }
    }

    fn env(&self) -> (String, String) {
        ("NOTIFY_SOCKET".into(), self.path.display().to_string())
    }

    fn recv(&self) -> Message {
        let mut buf = [0u8; 1024];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 8]);
        let msg = recvmsg::<()>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("a notification within 10 s");
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(v) = c {
                // SAFETY: the kernel just installed these fds in this process.
                fds.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        let n = msg.bytes;
        Message {
            text: String::from_utf8_lossy(&buf[..n]).into_owned(),
            fds,
        }
    }

    /// Messages until one contains `what`; returns them all.
    fn until(&self, what: &str) -> Vec<Message> {
        let mut seen = Vec::new();
        loop {
            let m = self.recv();
            let done = m.text.contains(what);
            seen.push(m);
            if done {
                return seen;
            }
        }
    }
}

#[test]
fn fd_store_keeps_tun_and_udp_across_a_crash() {
    let ns = Netns::new("fds");
    ns.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"]);
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", "u0"]);
    ns.ip(&["link", "set", "u0", "up"]);
    let dir = TempDir::new("fds-run");
    let systemd = FakeSystemd::bind(&dir.0);
    let mut launch = Launch::new(&ns, &dir.0);
    launch.env.push(systemd.env());
    let mut d = Daemon::launch(launch);
    let first = systemd.until("READY=1");
    assert!(
        first.iter().all(|m| m.fds.is_empty()),
        "nothing to store before a snapshot"
    );
    let ready = &first.last().unwrap().text;
    assert!(ready.contains(&format!("MAINPID={}", d.pid())), "{ready}");

    let peers = [("10.50.7.0/24", "198.18.0.2")];
    let r = d.apply(udp_snapshot(1, "10.50.18.0/24", "198.18.0.1", &peers));
    assert!(r.applied, "{}", r.reason);
    // Each store replaces what was stored under its name; a message holds
    // the fds of every queue, in queue order.
    let mut stored: Vec<(String, Vec<OwnedFd>)> = Vec::new();
    while stored.len() < 2 {
        let m = systemd.recv();
        if m.text.starts_with("FDSTOREREMOVE=1") {
            continue;
        }
        let name = m
            .text
            .strip_prefix("FDSTORE=1\nFDNAME=")
            .unwrap_or_else(|| panic!("unexpected {:?}", m.text))
            .to_string();
        stored.push((name, m.fds));
    }
    assert_eq!(
        stored.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["tun", "udp"]
    );
    let queues = stored[0].1.len();
    assert_eq!(
        queues,
        common::auto_queues(),
        "a TUN queue per CPU by default"
    );
    assert_eq!(stored[1].1.len(), queues, "a socket per queue");
    for fd in &stored[0].1 {
        let tun = std::fs::File::from(fd.try_clone().unwrap());
        assert_eq!(
            kolach_dataplaned::datapath::tun::attached_name(&tun).unwrap(),
            "kolach0"
        );
    }
    for fd in &stored[1].1 {
        let udp = UdpSocket::from(fd.try_clone().unwrap());
        assert_eq!(
            udp.local_addr().unwrap(),
            "198.18.0.1:8285".parse::<SocketAddr>().unwrap()
        );
    }

    // Crash. systemd (here: the test) still holds the fds, so a datagram
    // sent meanwhile waits in the socket.
    d.kill();
    let o = ns.exec(&["bash", "-c", "printf x > /dev/udp/198.18.0.1/8285"]);
    assert!(o.status.success());

    let mut launch = Launch::new(&ns, &dir.0);
    launch.env.push(systemd.env());
    // Asking for one queue now: a restart keeps the queues it is handed
    // (and says so), as with stored fds of an image from before the
    // per-CPU default.
    launch.env.push(("KOLACH_QUEUES".into(), "1".into()));
    let names: Vec<&str> = stored
        .iter()
        .flat_map(|(name, fds)| fds.iter().map(|_| name.as_str()))
        .collect();
    launch.env.push(("LISTEN_FDNAMES".into(), names.join(":")));
    launch.listen_fds = stored.into_iter().flat_map(|(_, fds)| fds).collect();
    let d = Daemon::launch(launch);
    systemd.until("READY=1");
    let st = d.wait_for("the queued datagram read", Duration::from_secs(3), |s| {
        s.counters
            .as_ref()
            .is_some_and(|c| c.dropped.get("unknown-sender") == Some(&1))
    });
    assert!(st.has_snapshot && st.route_count == 1, "{st:?}");
    let text = log(&dir.0);
    assert!(text.contains("TUN queues taken over"), "{text}");
    assert!(text.contains("UDP sockets taken over"), "{text}");
    assert!(
        text.contains(&format!("queues={queues}")),
        "all queues taken over: {text}"
    );
    assert_eq!(
        text.contains("running the queues handed over, not the 1 --queues asks for"),
        queues != 1,
        "told that --queues waits for a stop and start: {text}"
    );
    assert!(text.contains("start=\"systemd fd store\""), "{text}");

    // A hot upgrade is framed by RELOADING=1 and the new image's READY=1.
    d.signal(Signal::SIGHUP);
    let msgs = systemd.until("READY=1");
    let reloading = msgs.iter().position(|m| m.text.starts_with("RELOADING=1"));
    assert!(
        reloading.is_some(),
        "{:?}",
        msgs.iter().map(|m| &m.text).collect::<Vec<_>>()
    );
    assert!(msgs[reloading.unwrap()].text.contains("MONOTONIC_USEC="));
    let st = d.wait_for("the upgrade", Duration::from_secs(10), |s| s.upgrades == 1);
    assert_eq!(st.pid, d.pid());
    // The new image did not take fds 3.. again as if systemd had passed them.
    assert!(!log(&dir.0).contains("not needed"), "{}", log(&dir.0));
}
