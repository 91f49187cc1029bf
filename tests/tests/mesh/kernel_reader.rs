//! The harness's kernel reader without kolach: objects made by hand with `ip`
//! and `bridge` exactly as ISSUE3 describes them are read back as exactly what
//! the harness expects of each backend, so a kernel-backend test that fails
//! points at the daemons, not at the reader.

use std::net::Ipv4Addr;

use anyhow::{ensure, Context};
use ipnet::Ipv4Net;
use kolach_testkit::kernel::expected::{diff, expected};
use kolach_testkit::lab::backend::vtep_mac;
use kolach_testkit::{kernel, kernel::objects, netns, run, Backend};

#[test]
fn hand_made_objects_read_back_as_the_backend_expectations() {
    run("kreader", |lab| {
        let n = lab.add_host()?;
        let ns = lab.host(n).ns.clone();
        let peers: Vec<(Ipv4Net, Ipv4Addr)> = vec![
            ("10.50.7.0/24".parse()?, Ipv4Addr::new(198, 18, 0, 2)),
            ("10.50.9.0/24".parse()?, Ipv4Addr::new(198, 18, 0, 3)),
        ];
        let empty = objects::read(&ns)?;
        ensure!(
            empty.same_as(&expected(Backend::Alloc, &peers)),
            "{empty:#?}"
        );

        // host-gw: routes via the peers' PublicIPs.
        for (subnet, ip) in &peers {
            let (s, i) = (subnet.to_string(), ip.to_string());
            netns::ip(
                &ns,
                &["route", "add", &s, "via", &i, "dev", "eth0", "proto", "107"],
            )?;
        }
        let got = objects::read(&ns)?;
        let want = expected(Backend::HostGw, &peers);
        ensure!(got.same_as(&want), "host-gw:\n{}", diff(&got, &want));
        for (subnet, _) in &peers {
            netns::ip(&ns, &["route", "del", &subnet.to_string(), "proto", "107"])?;
        }

        // vxlan: the device, then per peer route, neighbour and FDB entry.
        let mac = vtep_mac(lab.host(n).ip);
        for args in [
            &[
                "link",
                "add",
                "kolach.1",
                "type",
                "vxlan",
                "id",
                "1",
                "dstport",
                "8472",
                "local",
                "198.18.0.1",
                "dev",
                "eth0",
                "nolearning",
            ][..],
            &[
                "link", "set", "kolach.1", "address", &mac, "mtu", "1450", "up",
            ],
            &["addr", "add", "10.50.3.0/32", "dev", "kolach.1"],
        ] {
            netns::ip(&ns, args)?;
        }
        for (subnet, ip) in &peers {
            let (s, zero, i) = (
                subnet.to_string(),
                subnet.network().to_string(),
                ip.to_string(),
            );
            let pmac = vtep_mac(*ip);
            netns::ip(
                &ns,
                &[
                    "route", "add", &s, "via", &zero, "dev", "kolach.1", "onlink", "proto", "107",
                ],
            )?;
            netns::ip(
                &ns,
                &[
                    "neigh",
                    "add",
                    &zero,
                    "lladdr",
                    &pmac,
                    "dev",
                    "kolach.1",
                    "nud",
                    "permanent",
                ],
            )?;
            let out = kolach_testkit::cmd::run_ok(
                "bridge",
                &[
                    "-n",
                    &ns,
                    "fdb",
                    "append",
                    &pmac,
                    "dev",
                    "kolach.1",
                    "dst",
                    &i,
                    "self",
                    "permanent",
                ],
            )?;
            ensure!(out.trim().is_empty(), "bridge fdb: {out}");
        }
        let got = objects::read(&ns)?;
        let want = expected(Backend::Vxlan, &peers);
        ensure!(got.same_as(&want), "vxlan:\n{}", diff(&got, &want));
        let (subnet, ip) = peers[0];
        ensure!(
            got.mentions(subnet, ip, &vtep_mac(ip)).len() == 3,
            "route, neighbour and fdb entry of {subnet}: {got:#?}"
        );
        let v = kernel::vxlan(&ns, "kolach.1")?.context("kolach.1")?;
        ensure!(
            v.kind == "vxlan" && v.vni == 1 && v.port == 8472 && !v.learning && v.mac == mac,
            "{v:?}"
        );
        ensure!(
            v.link.as_deref() == Some("eth0") && v.mtu == 1450 && v.up,
            "{v:?}"
        );

        // The monitor sees a change to a kolach object, and nothing else.
        let mon = kolach_testkit::kernel::monitor::KernelMonitor::start(&ns, &lab.dir, "reader")?;
        netns::ip(&ns, &["route", "del", &subnet.to_string(), "proto", "107"])?;
        netns::ip(&ns, &["route", "add", "10.60.0.0/24", "via", "198.18.0.9"])?;
        let events = mon.stop()?;
        ensure!(
            events.len() == 1 && events[0].starts_with(&format!("Deleted {subnet}")),
            "monitor events: {events:?}"
        );

        // A TUN is the udp backend's only object.
        netns::ip(&ns, &["link", "del", "kolach.1"])?;
        netns::ip(&ns, &["tuntap", "add", "dev", "kolach0", "mode", "tun"])?;
        let got = objects::read(&ns)?;
        let want = expected(Backend::Udp, &peers);
        ensure!(got.same_as(&want), "udp:\n{}", diff(&got, &want));
        Ok(())
    });
}
