//! BIRD 2 (Debian `bird2`) inside a namespace of a lab: the routing daemon
//! that picks kolach's exported routes up from the export table and
//! advertises them by BGP (DESIGN §10), and the plain router that learns
//! them. [`Bird::start`] writes the config, checks it (`bird -p`) and runs
//! `bird -f` with its control socket in the lab's dir; [`Bird::routes`] asks
//! it with `birdc`; the process is stopped when the value is dropped (and
//! dies with the test's thread anyway).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ipnet::Ipv4Net;

use crate::cmd;
use crate::etcd::which;
use crate::process::Proc;

/// How long one `birdc` query may take.
const QUERY: Duration = Duration::from_secs(5);

/// A host's BIRD: kernel protocol on `table` (learn, scanned every second)
/// into a BIRD table of its own, exported whole to one eBGP neighbour.
/// This is the README's example, with the addresses filled in.
pub fn exporter_config(
    router_id: Ipv4Addr,
    local_as: u32,
    neighbor: Ipv4Addr,
    neighbor_as: u32,
    table: u32,
) -> String {
    format!(
        r#"# kolach exports this host's subnet and pool blocks to table {table}
# (ExportTable) as "<prefix> dev lo proto 107"; BIRD learns them there and
# advertises them to the router.
router id {router_id};
log stderr all;
protocol device {{ scan time 1; }}
ipv4 table kolach;
protocol kernel kolach_export {{
    kernel table {table};
    learn;
    scan time 1;
    ipv4 {{ table kolach; import all; export none; }};
}}
protocol bgp uplink {{
    local {router_id} as {local_as};
    neighbor {neighbor} as {neighbor_as};
{TIMERS}
    ipv4 {{ table kolach; import none; export all; next hop self; }};
}}
"#
    )
}

/// A plain router: eBGP with each of `peers` (address, AS), everything it
/// learns into its kernel's main table, nothing advertised.
pub fn router_config(router_id: Ipv4Addr, local_as: u32, peers: &[(Ipv4Addr, u32)]) -> String {
    let mut s = format!(
        r#"router id {router_id};
log stderr all;
protocol device {{ scan time 1; }}
protocol kernel {{
    scan time 1;
    ipv4 {{ import none; export all; }};
}}
"#
    );
    for (i, (ip, asn)) in peers.iter().enumerate() {
        s.push_str(&format!(
            r#"protocol bgp peer{i} {{
    local {router_id} as {local_as};
    neighbor {ip} as {asn};
{TIMERS}
    ipv4 {{ import all; export none; }};
}}
"#
        ));
    }
    s
}

/// Short retry timers: a session whose peer is not up yet retries in a
/// second, not BIRD's default two minutes.
const TIMERS: &str =
    "    connect delay time 1;\n    connect retry time 1;\n    error wait time 1, 5;";

/// A BIRD process in a namespace.
pub struct Bird {
    pub label: String,
    pub socket: PathBuf,
    proc: Proc,
}

impl Bird {
    /// Writes `config` to `<dir>/bird-<tag>.conf`, checks it and starts
    /// `bird -f` in `ns`; returns once `birdc` gets an answer.
    pub fn start(ns: &str, dir: &Path, tag: &str, config: &str) -> Result<Bird> {
        let bird = which("bird").ok_or_else(|| anyhow!("bird not found (`make deps`: bird2)"))?;
        let conf = dir.join(format!("bird-{tag}.conf"));
        std::fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
        let conf_s = conf.display().to_string();
        let check = cmd::run(
            &bird.display().to_string(),
            &["-p", "-c", &conf_s],
            cmd::DEFAULT_TIMEOUT,
        )?;
        if !check.success() {
            bail!("bird -p -c {conf_s}: {}{}", check.stdout, check.stderr);
        }
        let socket = dir.join(format!("bird-{tag}.ctl"));
        let _ = std::fs::remove_file(&socket);
        let label = format!("bird/{tag}");
        let mut proc = Proc::new(
            &label,
            ns,
            &bird,
            vec![
                "-f".into(),
                "-c".into(),
                conf_s,
                "-s".into(),
                socket.display().to_string(),
            ],
            dir.join(format!("bird-{tag}.log")),
        );
        proc.start()?;
        let b = Bird {
            label,
            socket,
            proc,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match b.birdc(&["show", "status"]) {
                Ok(out) if out.contains("Daemon is up and running") => return Ok(b),
                _ if Instant::now() > deadline => {
                    bail!("{} not answering after 10 s: {}", b.label, b.log_tail(20))
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `birdc -s <socket> args...`; its output.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let socket = self.socket.display().to_string();
        let mut full = vec!["-s", &socket];
        full.extend_from_slice(args);
        let birdc =
            which("birdc").ok_or_else(|| anyhow!("birdc not found (`make deps`: bird2)"))?;
        let out = cmd::run(&birdc.display().to_string(), &full, QUERY)?;
        if !out.success() {
            bail!("birdc {}: {}{}", args.join(" "), out.stdout, out.stderr);
        }
        Ok(out.stdout)
    }

    /// The prefixes in BIRD table `table` (`master4` is the default one),
    /// each with the address it goes via (None for a device route).
    pub fn routes(&self, table: &str) -> Result<Vec<(Ipv4Net, Option<Ipv4Addr>)>> {
        Ok(parse_routes(
            &self.birdc(&["show", "route", "table", table])?,
        ))
    }

    /// Waits until BGP protocol `name` is Established.
    pub fn wait_established(&self, name: &str, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let out = self.birdc(&["show", "protocols", name])?;
            if out.contains("Established") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: BGP {name} not established within {within:?}: {out}{}",
                    self.label,
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.proc.stop_within(Duration::from_secs(2));
    }
}

/// `show route` output as (prefix, via): a route line starts with the
/// prefix, its next hop follows on an indented `via <ip> on <dev>` line.
pub fn parse_routes(text: &str) -> Vec<(Ipv4Net, Option<Ipv4Addr>)> {
    let mut out: Vec<(Ipv4Net, Option<Ipv4Addr>)> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if !line.starts_with(char::is_whitespace) {
            if let Ok(net) = first.parse::<Ipv4Net>() {
                out.push((net, None));
            }
        } else if first == "via" {
            if let (Some(last), Some(ip)) = (
                out.last_mut(),
                words.next().and_then(|w| w.parse::<Ipv4Addr>().ok()),
            ) {
                last.1.get_or_insert(ip);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_show_route() {
        let text = "BIRD 2.0.12 ready.\nTable master4:\n\
            10.50.18.0/24        unicast [peer0 22:43:39.585] * (100) [AS65001i]\n\
            \tvia 198.18.0.1 on eth0\n\
            203.0.113.0/28       unicast [peer1 22:43:40.001] * (100) [AS65002i]\n\
            \tvia 198.18.0.2 on eth0\n\
            10.50.7.0/24         unicast [kolach_export 22:43:41] * (10)\n\
            \tdev lo\n";
        let r = parse_routes(text);
        assert_eq!(
            r,
            vec![
                (
                    "10.50.18.0/24".parse().unwrap(),
                    Some("198.18.0.1".parse().unwrap())
                ),
                (
                    "203.0.113.0/28".parse().unwrap(),
                    Some("198.18.0.2".parse().unwrap())
                ),
                ("10.50.7.0/24".parse().unwrap(), None),
            ]
        );
        assert!(parse_routes("BIRD 2.0.12 ready.\nNetwork not found\n").is_empty());
    }

    #[test]
    fn configs_name_the_table_and_peers() {
        let c = exporter_config(
            "198.18.0.1".parse().unwrap(),
            65001,
            "198.18.0.100".parse().unwrap(),
            65000,
            119,
        );
        assert!(c.contains("kernel table 119;") && c.contains("learn;"));
        assert!(c.contains("neighbor 198.18.0.100 as 65000;"));
        let r = router_config(
            "198.18.0.100".parse().unwrap(),
            65000,
            &[
                ("198.18.0.1".parse().unwrap(), 65001),
                ("198.18.0.2".parse().unwrap(), 65002),
            ],
        );
        assert!(r.contains("protocol bgp peer1") && r.contains("neighbor 198.18.0.2 as 65002;"));
    }
}
