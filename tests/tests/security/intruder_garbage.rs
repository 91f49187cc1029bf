//! Garbage in etcd: network configs and lease values that are malformed,
//! of the wrong type, enormous or out of range, and lease keys that name no
//! subnet. Each gets its own log line on every host, naming what is wrong
//! (never the whole value: a line stays short); nothing crashes; no route,
//! lease or subnet.env changes; pods ping throughout.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kolach_testkit::etcd::cluster::Ctl;
use kolach_testkit::{lab, run, Lab};

/// Longest log line a garbage value may produce.
const MAX_LINE: usize = 1000;

fn logs(lab: &Lab, n: u8) -> String {
    std::fs::read_to_string(&lab.host(n).controld.log).unwrap_or_default()
}

/// Waits until every host's controld log has a new line (after `skip`
/// bytes) holding all of `needles`; returns one such line.
fn wait_line(lab: &Lab, skip: &[usize], needles: &[&str]) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut found = Vec::new();
        for (i, n) in lab.host_ids().into_iter().enumerate() {
            let text = logs(lab, n);
            let new = text.get(skip[i]..).unwrap_or("");
            if let Some(l) = new.lines().find(|l| needles.iter().all(|w| l.contains(w))) {
                found.push(l.to_string());
            }
        }
        if found.len() == lab.host_ids().len() {
            let longest = found.iter().map(String::len).max().unwrap_or(0);
            ensure!(
                longest < MAX_LINE,
                "a {longest}-byte log line: {}",
                &found[0]
            );
            return Ok(found.swap_remove(0));
        }
        if Instant::now() >= deadline {
            bail!("no host logged a line with {needles:?} within 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn marks(lab: &Lab) -> Vec<usize> {
    lab.host_ids()
        .into_iter()
        .map(|n| logs(lab, n).len())
        .collect()
}

struct Seen {
    routes: Vec<Vec<kolach_testkit::query::RouteEntry>>,
    envs: Vec<String>,
    own: Vec<kolach_testkit::etcd::Kv>,
}

/// (etcd read with a decoder that takes values that are not UTF-8.)
fn observe(lab: &Lab, ctl: &Ctl) -> Result<Seen> {
    let own = ctl
        .get_prefix(&lab::subnets_prefix())?
        .into_iter()
        .filter(|kv| {
            kv.value.contains("\"PublicIP\":\"198.18.0.1\"")
                || kv.value.contains("\"PublicIP\":\"198.18.0.2\"")
        })
        .collect();
    Ok(Seen {
        routes: lab
            .host_ids()
            .iter()
            .map(|&n| lab.dp_routes(n))
            .collect::<Result<_>>()?,
        envs: lab
            .host_ids()
            .iter()
            .map(|&n| std::fs::read_to_string(lab.host(n).subnet_file()))
            .collect::<std::io::Result<_>>()?,
        own,
    })
}

const HOSTS_BELOW_200: &str = r#"{"Network":"10.50.0.0/16","SubnetMax":"10.50.199.0"}"#;

#[test]
fn garbage_in_etcd_is_named_and_changes_nothing() {
    run("garbage", |lab| {
        // The hosts lease below 10.50.200.0/24, so the fixed keys 10.50.201-212
        // that the garbage goes into can never be a host's own lease.
        lab.mesh_with(2, HOSTS_BELOW_200)?;
        let ctl = Ctl::new(&lab.names.underlay(), vec!["http://127.0.0.1:2379".into()]);
        let before = observe(lab, &ctl)?;
        configs(lab, &ctl)?;
        leases(lab, &ctl)?;
        let after = observe(lab, &ctl)?;
        ensure!(
            after.routes == before.routes,
            "routes changed: {:?} -> {:?}",
            before.routes,
            after.routes
        );
        ensure!(after.envs == before.envs, "a subnet.env changed");
        ensure!(after.own == before.own, "a host's lease changed");
        for n in lab.host_ids() {
            let h = lab.host_mut(n);
            ensure!(
                h.controld.is_running() && h.dataplaned.is_running(),
                "host{n}: a daemon died"
            );
        }
        lab.assert_all_pairs_ping(2)
    });
}

fn configs(lab: &Lab, ctl: &Ctl) -> Result<()> {
    let key = lab::config_key();
    let nested = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let huge_network = format!(r#"{{"Network":"{}"}}"#, "9".repeat(60_000));
    let enormous = format!(
        r#"{{"Network":"10.50.0.0/16","Pad":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "malformed",
            br#"{"Network":"10.50.0.0/16","#.to_vec(),
            vec!["not valid JSON"],
        ),
        (
            "not UTF-8",
            b"{\"Network\":\"10.50.\xff\xfe\"}".to_vec(),
            vec!["not valid JSON"],
        ),
        (
            "nested 300 deep",
            nested.into_bytes(),
            vec!["not valid JSON", "recursion limit"],
        ),
        (
            "an array",
            br#"["10.50.0.0/16"]"#.to_vec(),
            vec!["expected a JSON object, got an array"],
        ),
        (
            "Network a number",
            br#"{"Network":10}"#.to_vec(),
            vec!["Network 10 must be a string"],
        ),
        (
            "SubnetLen a string",
            br#"{"Network":"10.50.0.0/16","SubnetLen":"24"}"#.to_vec(),
            vec![r#"SubnetLen "24" must be a whole number"#],
        ),
        (
            "Backend a string",
            br#"{"Network":"10.50.0.0/16","Backend":"udp"}"#.to_vec(),
            vec![r#"Backend "udp" must be an object"#],
        ),
        (
            "SubnetLen 40",
            br#"{"Network":"10.50.0.0/16","SubnetLen":40}"#.to_vec(),
            vec!["SubnetLen 40 is not in 18..=30"],
        ),
        (
            "Port 70000",
            br#"{"Network":"10.50.0.0/16","Backend":{"Type":"udp","Port":70000}}"#.to_vec(),
            vec!["Backend.Port 70000 is not in 1..=65535"],
        ),
        (
            "VNI -1",
            br#"{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan","VNI":-1}}"#.to_vec(),
            vec!["Backend.VNI -1 is not in"],
        ),
        (
            "ExportTable the main table",
            br#"{"Network":"10.50.0.0/16","ExportTable":254}"#.to_vec(),
            vec!["ExportTable 254 is the kernel's main table"],
        ),
        (
            "ExportTable a string",
            br#"{"Network":"10.50.0.0/16","ExportTable":"119"}"#.to_vec(),
            vec![r#"ExportTable "119" must be a whole number"#],
        ),
        (
            "SubnetMin outside",
            br#"{"Network":"10.50.0.0/16","SubnetMin":"10.60.0.0"}"#.to_vec(),
            vec!["SubnetMin 10.60.0.0 is not inside Network 10.50.0.0/16"],
        ),
        (
            "IPv6 Network",
            br#"{"Network":"fd00::/48"}"#.to_vec(),
            vec!["Network fd00::/48 is IPv6"],
        ),
        (
            "a 60 kB Network",
            huge_network.into_bytes(),
            vec!["Network \"99999", "(60002 bytes) is not a CIDR"],
        ),
        (
            "1 MiB",
            enormous.into_bytes(),
            vec!["bytes, more than the 65536 a network config can need"],
        ),
    ];
    for (what, value, needles) in cases {
        let skip = marks(lab);
        ctl.run_input(&["put", "--", &key], Some(&value))
            .with_context(|| format!("writing the {what} config"))?;
        let line = wait_line(lab, &skip, &needles).with_context(|| format!("config {what}"))?;
        eprintln!(
            "config {what}: {}",
            line.split_once(" ERROR ").map_or(line.as_str(), |x| x.1)
        );
        for n in lab.host_ids() {
            let s = lab.cd_status(n)?;
            ensure!(
                needles.iter().all(|w| s.config_error.contains(w)),
                "host{n} config_error {:?}",
                s.config_error
            );
        }
    }
    lab.put_config(HOSTS_BELOW_200)?;
    for n in lab.host_ids() {
        lab.wait_control(n, Duration::from_secs(5), "cleared config_error", |s| {
            s.config_error.is_empty()
        })?;
    }
    Ok(())
}

fn leases(lab: &Lab, ctl: &Ctl) -> Result<()> {
    let p = lab::subnets_prefix();
    let ok = r#"{"PublicIP":"198.18.0.9","BackendType":"udp","BackendData":null}"#;
    let host2 = lab.host(2).subnet_env().context("host2")?.lease();
    let half = format!(
        "{}-25",
        std::net::Ipv4Addr::from(u32::from(host2.network()) + 128)
    );
    let long_key = "k".repeat(2000);
    let big20k = format!(
        r#"{{"PublicIP":"198.18.0.9","Pad":"{}"}}"#,
        "x".repeat(20_000)
    );
    let big20k_msg = format!("lease value is {} bytes, more than the 16384", big20k.len());
    let big1m = format!(
        r#"{{"PublicIP":"198.18.0.9","Pad":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    let unreadable = "ignoring unreadable subnet lease";
    let out_of_range = "not routing a lease outside the Network or of another size than SubnetLen";
    let cases: Vec<(&str, String, Vec<u8>, Vec<&str>)> = vec![
        (
            "malformed",
            "10.50.201.0-24".into(),
            br#"{"PublicIP":"#.to_vec(),
            vec![unreadable, "lease value is not valid JSON"],
        ),
        (
            "not UTF-8",
            "10.50.202.0-24".into(),
            b"\xff\xfe\x00".to_vec(),
            vec![unreadable, "lease value is not valid JSON"],
        ),
        (
            "a string",
            "10.50.203.0-24".into(),
            br#""198.18.0.9""#.to_vec(),
            vec![unreadable, "lease value is not a JSON object"],
        ),
        (
            "no PublicIP",
            "10.50.204.0-24".into(),
            br#"{"BackendType":"udp"}"#.to_vec(),
            vec![unreadable, "lease value has no PublicIP"],
        ),
        (
            "PublicIP a number",
            "10.50.205.0-24".into(),
            br#"{"PublicIP":7}"#.to_vec(),
            vec![unreadable, "lease PublicIP 7 is not an IPv4 address"],
        ),
        (
            "PublicIP IPv6",
            "10.50.206.0-24".into(),
            br#"{"PublicIP":"fd00::9"}"#.to_vec(),
            vec![
                unreadable,
                r#"lease PublicIP "fd00::9" is not an IPv4 address"#,
            ],
        ),
        (
            "PublicIP broadcast",
            "10.50.207.0-24".into(),
            br#"{"PublicIP":"255.255.255.255"}"#.to_vec(),
            vec![
                unreadable,
                "lease PublicIP 255.255.255.255 is not a unicast address",
            ],
        ),
        (
            "PublicIP 0.0.0.0",
            "10.50.208.0-24".into(),
            br#"{"PublicIP":"0.0.0.0"}"#.to_vec(),
            vec![
                unreadable,
                "lease PublicIP 0.0.0.0 is not a unicast address",
            ],
        ),
        (
            "BackendType a list",
            "10.50.209.0-24".into(),
            br#"{"PublicIP":"198.18.0.9","BackendType":["udp"]}"#.to_vec(),
            vec![unreadable, r#"lease BackendType ["udp"] is not a string"#],
        ),
        (
            "20 kB",
            "10.50.210.0-24".into(),
            big20k.into_bytes(),
            vec![unreadable, &big20k_msg],
        ),
        (
            "1 MiB",
            "10.50.211.0-24".into(),
            big1m.into_bytes(),
            vec![unreadable, "bytes, more than the 16384 a lease can need"],
        ),
        (
            "key not a subnet",
            "not-a-subnet".into(),
            ok.as_bytes().to_vec(),
            vec![
                unreadable,
                r#"subnet key "not-a-subnet" is not of the form a.b.c.d-len"#,
            ],
        ),
        (
            "key with host bits",
            "10.50.212.1-24".into(),
            ok.as_bytes().to_vec(),
            vec![unreadable, "10.50.212.1-24"],
        ),
        (
            "key of 2000 bytes",
            long_key,
            ok.as_bytes().to_vec(),
            vec![unreadable, "(2000 bytes)"],
        ),
        (
            "outside the Network",
            "10.60.1.0-24".into(),
            ok.as_bytes().to_vec(),
            vec![out_of_range, "10.60.1.0/24"],
        ),
        (
            "the whole Network",
            "10.50.0.0-16".into(),
            ok.as_bytes().to_vec(),
            vec![out_of_range, "10.50.0.0/16"],
        ),
        (
            "half of host2's subnet",
            half.clone(),
            ok.as_bytes().to_vec(),
            vec![out_of_range, &half[..half.len() - 3]],
        ),
    ];
    for (what, name, value, needles) in cases {
        let skip = marks(lab);
        ctl.run_input(&["put", "--", &format!("{p}{name}")], Some(&value))
            .with_context(|| format!("writing the {what} lease"))?;
        let line = wait_line(lab, &skip, &needles).with_context(|| format!("lease {what}"))?;
        eprintln!(
            "lease {what}: {}",
            line.split_once(" WARN ").map_or(line.as_str(), |x| x.1)
        );
    }
    let st = lab.cd_status(1)?;
    let w = st
        .warnings
        .iter()
        .find(|w| w.contains("outside the Network or of another size"))
        .context("no status warning for the out-of-range leases")?;
    eprintln!("status warning: {w}");
    ensure!(w.starts_with("3 leases outside the Network"), "{w}");
    Ok(())
}
