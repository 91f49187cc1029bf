//! kolach chained with the reference `portmap` plugin (Debian's
//! containernetworking-plugins, which speaks up to 1.0.0): kolach's ADD
//! result goes to portmap as `prevResult` with `runtimeConfig.portMappings`,
//! and a connection to the host's port reaches a listener in the pod.
//! Skipped (with a note) where /usr/lib/cni/portmap is not installed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use kolach_testkit::netns::within;

const PORTMAP: &str = "/usr/lib/cni/portmap";
const HOST_IP: &str = "198.18.0.1";
const HOST_PORT: u16 = 18080;
const POD_PORT: u16 = 8080;
const GREETING: &str = "hello from the pod\n";

/// Accepts one connection within 10 s and greets it.
fn serve_once(listener: TcpListener) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    return s.write_all(GREETING.as_bytes()).is_ok();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => return false,
            }
        }
        false
    })
}

#[test]
fn portmap_chained_after_kolach_forwards_a_host_port_into_the_pod() {
    if !Path::new(PORTMAP).exists() {
        eprintln!(
            "skipped: {PORTMAP} is not installed (apt-get install containernetworking-plugins)"
        );
        return;
    }
    let w = World::new("pmap");
    let _ipam = w.controld();
    let pod = w.pod(1);
    // The host's own address that the mapped port is reached on.
    w.host
        .ip(&["addr", "add", &format!("{HOST_IP}/32"), "dev", "lo"]);

    let add = w.add("c1", &pod, "1.0.0");
    let result = add.ok().clone();

    let netns = netns_path(&pod);
    let call = |command| Call {
        command,
        container: "c1",
        ifname: "eth0",
        netns: &netns,
        args: "",
    };
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [
            {"hostPort": HOST_PORT, "containerPort": POD_PORT, "protocol": "tcp"}
        ]},
        "prevResult": result,
    })
    .to_string();
    let r = run_plugin(&w.host.name, PORTMAP, &call("ADD"), &conf, "/usr/lib/cni");
    assert_eq!(r.code, Some(0), "portmap ADD: {} {}", r.stdout, r.stderr);
    assert_eq!(
        r.json["ips"], result["ips"],
        "portmap passes kolach's result on"
    );

    let listener = within(&pod.name, || Ok(TcpListener::bind(("0.0.0.0", POD_PORT))?))
        .expect("listener in the pod");
    let server = serve_once(listener);

    let target: SocketAddr = format!("{HOST_IP}:{HOST_PORT}").parse().unwrap();
    let got = within(&w.host.name, move || {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf)
    })
    .expect("connect to the mapped host port");
    assert_eq!(got, GREETING);
    assert!(server.join().unwrap());

    // Teardown in the runtime's order: portmap, then kolach.
    let r = run_plugin(&w.host.name, PORTMAP, &call("DEL"), &conf, "/usr/lib/cni");
    assert_eq!(r.code, Some(0), "portmap DEL: {} {}", r.stdout, r.stderr);
    let r = w.simple("DEL", "c1", &pod, "1.0.0");
    assert_eq!(r.code, Some(0), "kolach DEL: {}", r.stdout);
}
