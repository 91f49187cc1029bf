//! The aws-vpc harness ([`kolach_testkit::aws`]) on its own, without kolach:
//! moto starts in a lab's underlay namespace and is seeded (a VPC holding
//! the underlay, two route tables, an instance per host at the host's
//! address); from each host's namespace the metadata stub names that host's
//! instance and hands out the role's credentials, IMDSv2 and v1 alike; the
//! proxy forwards a host's calls, counts them by host and Action, and shows
//! a route to a deleted interface as a blackhole; with authentication
//! switched on, the lab's keys are refused with AuthFailure.
//!
//! Needs root and the venv with moto that `make deps` makes.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use kolach_testkit::aws::{Emulator, BASE_PORT, KEY_ID};
use kolach_testkit::{lab, netns, Lab};
use serde_json::json;

/// One HTTP request from inside `ns`; (status line, body).
fn http(ns: &str, addr: SocketAddr, request: String) -> Result<(String, String)> {
    netns::within(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no answer: {text:?}"))?;
        Ok((
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        ))
    })
}

fn get(ns: &str, addr: SocketAddr, path: &str, token: Option<&str>) -> Result<(String, String)> {
    let token = token
        .map(|t| format!("X-aws-ec2-metadata-token: {t}\r\n"))
        .unwrap_or_default();
    http(
        ns,
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{token}\r\n"),
    )
}

#[test]
fn moto_seeded_stub_and_proxy_answer_each_host() {
    lab::run("awsemu", exercise);
}

fn exercise(lab: &mut Lab) -> Result<()> {
    let hosts: Vec<Ipv4Addr> = (0..2)
        .map(|_| lab.add_host().map(|n| lab.host(n).ip))
        .collect::<Result<_>>()?;
    let t = Instant::now();
    let emu = Emulator::start(
        &lab.names.underlay(),
        &lab.dir.join("aws"),
        BASE_PORT,
        &hosts,
        &[Ipv4Addr::new(198, 18, 0, 100)],
    )?;
    eprintln!("aws emulator started and seeded in {:.1?}", t.elapsed());
    let result = checks(lab, &emu, &hosts);
    if result.is_err() {
        eprintln!("{}", emu.log_tails(30));
    }
    result
}

fn checks(lab: &Lab, emu: &Emulator, hosts: &[Ipv4Addr]) -> Result<()> {
    ensure!(emu.seed.tables.len() == 2, "{:?}", emu.seed);
    ensure!(
        emu.seed.tables.iter().all(|t| t.starts_with("rtb-")),
        "{:?}",
        emu.seed.tables
    );
    let stub: SocketAddr = emu
        .metadata_endpoint()
        .trim_start_matches("http://")
        .parse()?;
    let proxy: SocketAddr = emu.endpoint().trim_start_matches("http://").parse()?;

    for (i, ip) in hosts.iter().enumerate() {
        let ns = &lab.host(i as u8 + 1).ns;
        let me = emu.instance(*ip)?;
        // IMDSv2: a token first, then every read with it.
        let (status, token) = http(
            ns,
            stub,
            format!(
                "PUT /latest/api/token HTTP/1.0\r\nHost: {stub}\r\n\
                 X-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\r\n"
            ),
        )?;
        ensure!(status.contains(" 200"), "token: {status}");
        let (status, id) = get(ns, stub, "/latest/meta-data/instance-id", Some(&token))?;
        ensure!(
            status.contains(" 200") && id == me.instance_id,
            "host at {ip}: instance-id {status} {id:?}, want {}",
            me.instance_id
        );
        // IMDSv1 (no token) answers too.
        let (_, region) = get(ns, stub, "/latest/meta-data/placement/region", None)?;
        ensure!(region == "us-east-1", "region {region:?}");
        let (_, role) = get(
            ns,
            stub,
            "/latest/meta-data/iam/security-credentials/",
            None,
        )?;
        let (_, creds) = get(
            ns,
            stub,
            &format!("/latest/meta-data/iam/security-credentials/{role}"),
            Some(&token),
        )?;
        let creds: serde_json::Value = serde_json::from_str(&creds).context("role JSON")?;
        ensure!(
            creds["AccessKeyId"] == KEY_ID && creds["Expiration"].is_string(),
            "{creds}"
        );

        // A host's own call through the proxy is counted under its address.
        let body = "Action=DescribeRouteTables&Version=2016-11-15";
        let (status, xml) = http(
            ns,
            proxy,
            format!(
                "POST / HTTP/1.0\r\nHost: {proxy}\r\n\
                 Authorization: AWS4-HMAC-SHA256 Credential={KEY_ID}/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )?;
        ensure!(
            status.contains(" 200") && xml.contains(&emu.seed.tables[0]),
            "DescribeRouteTables through the proxy: {status} {xml}"
        );
    }
    let counts = emu.counts()?;
    for ip in hosts {
        ensure!(
            counts.get(ip).and_then(|c| c.get("DescribeRouteTables")) == Some(&1),
            "counts {counts:?}"
        );
        ensure!(emu.writes(*ip)? == 0, "counts {counts:?}");
    }

    // A route to an interface that is then deleted reads as a blackhole
    // through the proxy (EC2's behaviour; moto alone says "active").
    let table = &emu.seed.tables[1];
    let eni = emu.ec2(
        "CreateNetworkInterface",
        json!({ "SubnetId": emu.seed.subnet }),
    )?["NetworkInterface"]["NetworkInterfaceId"]
        .as_str()
        .context("new ENI")?
        .to_string();
    emu.ec2(
        "CreateRoute",
        json!({"RouteTableId": table, "DestinationCidrBlock": "10.50.250.0/24", "NetworkInterfaceId": eni}),
    )?;
    let host_eni = &emu.instance(hosts[0])?.eni;
    emu.ec2(
        "CreateRoute",
        json!({"RouteTableId": table, "DestinationCidrBlock": "10.50.1.0/24", "NetworkInterfaceId": host_eni}),
    )?;
    emu.ec2(
        "DeleteNetworkInterface",
        json!({ "NetworkInterfaceId": eni }),
    )?;
    let hole = emu
        .route(table, "10.50.250.0/24")?
        .context("no hole route")?;
    ensure!(hole.state == "blackhole", "{hole:?}");
    let live = emu.route(table, "10.50.1.0/24")?.context("no host route")?;
    ensure!(
        live.state == "active" && live.eni.as_ref() == Some(host_eni),
        "{live:?}"
    );
    // The test's writes went straight to moto; only its reads through the
    // proxy (from the underlay's own address) show, apart from the hosts'.
    let counts = emu.counts()?;
    let own: Ipv4Addr = kolach_testkit::etcd::ETCD_IP.parse()?;
    ensure!(
        counts.keys().all(|ip| hosts.contains(ip) || *ip == own) && emu.writes(own)? == 0,
        "{counts:?}"
    );

    // Authentication on: the lab's keys (unknown to moto's IAM) are refused.
    emu.require_auth()?;
    let err = emu
        .ec2("DescribeRouteTables", json!({}))
        .err()
        .context("a call passed with auth on")?;
    ensure!(format!("{err:#}").contains("AuthFailure"), "{err:#}");
    Ok(())
}
