//! The demo lab behind `kolach-lab`: fixed names (`kdemo-*`), daemons left
//! running in their own sessions, state in `<dir>/lab.json` so later commands
//! (`ping-matrix`, `down`) find the hosts again. Also the sweep of stale test
//! labs.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::lab::{self, Lab};
use crate::names::{self, Names};
use crate::netns;
use crate::process::Mode;
use crate::traffic::{self, PingResult};

/// Stem of the demo's namespaces.
pub const STEM: &str = "kdemo";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostState {
    pub n: u8,
    pub ns: String,
    pub underlay_ip: Ipv4Addr,
    pub run_dir: PathBuf,
    pub subnet: String,
    pub pod_ns: String,
    pub pod_ip: Ipv4Addr,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub stem: String,
    pub underlay_ns: String,
    pub etcd_endpoint: String,
    pub hosts: Vec<HostState>,
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

/// Starts etcd and `hosts` hosts with pods, waits for the mesh, records the
/// state and leaves everything running.
pub fn up(
    dir: &Path,
    hosts: u8,
    backend: Backend,
    dataplaned_env: &[(String, String)],
) -> Result<State> {
    let mut lab = Lab::create(STEM, dir, Mode::Detached)?;
    let env: Vec<(&str, &str)> = dataplaned_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Err(e) = lab.mesh_with_dataplaned_env(hosts, &backend.config(), &env) {
        lab.dump_logs();
        return Err(e); // dropping the lab tears it down
    }
    let state = State {
        stem: STEM.to_string(),
        underlay_ns: lab.names.underlay(),
        etcd_endpoint: crate::etcd::endpoint(),
        hosts: lab
            .hosts
            .iter()
            .map(|h| {
                let pod = h.pod.as_ref().expect("mesh makes pods");
                HostState {
                    n: h.n,
                    ns: h.ns.clone(),
                    underlay_ip: h.ip,
                    run_dir: h.dir.clone(),
                    subnet: pod.subnet.to_string(),
                    pod_ns: pod.ns.clone(),
                    pod_ip: pod.ip,
                }
            })
            .collect(),
    };
    std::fs::write(state_path(dir), serde_json::to_string_pretty(&state)?)?;
    lab.detach();
    Ok(state)
}

pub fn load(dir: &Path) -> Result<State> {
    let path = state_path(dir);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no demo state at {} (run `kolach-lab up`)", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Stops every demo process, deletes the demo namespaces and `dir`.
pub fn down(dir: &Path) -> Result<Vec<String>> {
    let names = Names::new(STEM);
    let found: Vec<String> = netns::list()?
        .into_iter()
        .filter(|ns| names.owns(ns))
        .collect();
    lab::destroy_leftovers(&names, dir)?;
    Ok(found)
}

/// Pings every ordered pair of pods; `results[i][j]` is host i+1 → host j+1.
pub fn ping_matrix(state: &State, count: u32) -> Vec<Vec<Option<PingResult>>> {
    state
        .hosts
        .iter()
        .map(|a| {
            state
                .hosts
                .iter()
                .map(|b| {
                    (a.n != b.n).then(|| {
                        traffic::ping(&a.pod_ns, b.pod_ip, count, 1.0)
                            .unwrap_or_else(|e| traffic::parse_ping(&format!("{e:#}")))
                    })
                })
                .collect()
        })
        .collect()
}

/// The matrix as a table: rows are sources, columns destinations.
pub fn format_matrix(state: &State, results: &[Vec<Option<PingResult>>]) -> String {
    let w = 22;
    let mut s = format!("{:<w$}", "from \\ to");
    for h in &state.hosts {
        s.push_str(&format!("{:<w$}", format!("host{} {}", h.n, h.pod_ip)));
    }
    s.push('\n');
    for (h, row) in state.hosts.iter().zip(results) {
        s.push_str(&format!("{:<w$}", format!("host{} {}", h.n, h.pod_ip)));
        for cell in row {
            let text = match cell {
                None => "-".to_string(),
                Some(r) if r.lossless() => match r.avg_rtt_ms {
                    Some(ms) => format!("ok {ms:.3} ms"),
                    None => "ok".to_string(),
                },
                Some(r) => format!("FAIL {}/{}", r.received, r.transmitted),
            };
            s.push_str(&format!("{text:<w$}"));
        }
        s.push('\n');
    }
    s
}

/// Removes test labs whose process is gone: `kt<pid>-*` namespaces (and the
/// processes in them), their temp dirs and etcd data. Returns the namespaces removed.
pub fn sweep() -> Result<Vec<String>> {
    let stale: Vec<String> = netns::list()?
        .into_iter()
        .filter(|ns| names::stale_owner(ns, names::pid_alive))
        .collect();
    lab::destroy_namespaces(&stale)?;
    let base = std::env::var_os("KOLACH_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    for dir in [base, PathBuf::from("/dev/shm")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if names::stale_owner(&name, names::pid_alive) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let host = |n: u8, c: u8| HostState {
            n,
            ns: format!("kdemo-h{n}"),
            underlay_ip: Ipv4Addr::new(198, 18, 0, n),
            run_dir: PathBuf::from(format!(".demo/host{n}")),
            subnet: format!("10.50.{c}.0/24"),
            pod_ns: format!("kdemo-p{n}"),
            pod_ip: Ipv4Addr::new(10, 50, c, 2),
        };
        State {
            stem: STEM.into(),
            underlay_ns: "kdemo-u".into(),
            etcd_endpoint: "http://198.18.0.254:2379".into(),
            hosts: vec![host(1, 18), host(2, 7)],
        }
    }

    #[test]
    fn state_roundtrips_as_json() {
        let s = state();
        let back: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn matrix_shows_rtt_and_failures() {
        let ok = traffic::parse_ping(
            "3 packets transmitted, 3 received, 0% packet loss\nrtt min/avg/max/mdev = 0.1/0.250/0.3/0.1 ms\n",
        );
        let bad = traffic::parse_ping("3 packets transmitted, 0 received, 100% packet loss\n");
        let table = format_matrix(&state(), &[vec![None, Some(ok)], vec![Some(bad), None]]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("host2 10.50.7.2"));
        assert!(lines[1].starts_with("host1 10.50.18.2"));
        assert!(lines[1].contains("ok 0.250 ms"));
        assert!(lines[2].contains("FAIL 0/3"));
    }
}
