//! kolach first, Debian's reference `portmap` after it (a conflist as
//! containerd runs it): a host port DNAT'd to the pod reaches it from
//! another host.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kolach_testkit::cni::{self, Call};
use kolach_testkit::{netns, run, Backend};
use serde_json::json;

#[test]
fn portmap_after_kolach_reaches_the_pod() {
    run("podspm", |lab| {
        lab.mesh_for_pods(2, &Backend::Udp.config())?;
        let pod = lab.cni_add(1, "web", None)?;
        // portmap speaks cniVersion up to 1.0.0; it gets kolach's result as prevResult.
        let config = json!({
            "cniVersion": "1.0.0",
            "name": "kolach",
            "type": "portmap",
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": [
                {"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}
            ]},
            "prevResult": pod.result,
        });
        let path = pod.netns_path();
        let call = Call {
            command: "ADD",
            container_id: &pod.container_id,
            netns: &path,
            ifname: "eth0",
            args: "",
            config: &config,
        };
        cni::run_plugin(Some(&lab.host(1).ns), "portmap", &call)?.require("portmap ADD")?;

        let listener: TcpListener =
            netns::within(&pod.ns, || Ok(TcpListener::bind("0.0.0.0:8080")?))?;
        let server = std::thread::spawn(move || -> Result<String> {
            let (mut s, peer) = listener.accept()?;
            s.write_all(b"kolach pod\n")?;
            Ok(peer.to_string())
        });
        let host1 = lab.host(1).ip;
        let mut reply = String::new();
        netns::within(&lab.host(2).ns, || {
            let mut s = TcpStream::connect_timeout(&(host1, 18080).into(), Duration::from_secs(5))
                .context("connecting to host1:18080")?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.read_to_string(&mut reply)?;
            Ok(())
        })?;
        ensure!(
            reply == "kolach pod\n",
            "through the DNAT'd port: {reply:?}"
        );
        let peer = server.join().expect("no panic")?;
        eprintln!("pod saw the connection from {peer}");

        let del = Call {
            command: "DEL",
            ..call
        };
        cni::run_plugin(Some(&lab.host(1).ns), "portmap", &del)?.require("portmap DEL")?;
        lab.cni_del(&pod)
    });
}
