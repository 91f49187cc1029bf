//! The demo lab behind `kolach-lab`: fixed names (`kdemo-*`), daemons left
//! running in their own sessions, state in `<dir>/lab.json` so later commands
//! (`ping-matrix`, `restart`, `down`) find the hosts and their daemons again.
//! Also the sweep of stale test labs.

use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use kolach_testkit::lab::backend::Backend;
use kolach_testkit::lab::{self, Lab};
use kolach_testkit::names::{self, Names};
use kolach_testkit::netns;
use kolach_testkit::process::{Mode, PidStop, ProcSpec, STOP_GRACE};
use kolach_testkit::traffic::{self, PingResult};

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
    /// controld's and dataplaned's command lines, for `restart` (absent in
    /// the lab.json of an older kolach-lab).
    #[serde(default)]
    pub controld: Option<ProcSpec>,
    #[serde(default)]
    pub dataplaned: Option<ProcSpec>,
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
    up_named(STEM, dir, hosts, backend, dataplaned_env)
}

/// [`up`] with namespaces named after `stem` (a test's own).
pub fn up_named(
    stem: &str,
    dir: &Path,
    hosts: u8,
    backend: Backend,
    dataplaned_env: &[(String, String)],
) -> Result<State> {
    let mut lab = Lab::create(stem, dir, Mode::Detached)?;
    let env: Vec<(&str, &str)> = dataplaned_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Err(e) = lab.mesh_with_dataplaned_env(hosts, &backend.config(), &env) {
        lab.dump_logs();
        return Err(e); // dropping the lab tears it down
    }
    let state = State {
        stem: stem.to_string(),
        underlay_ns: lab.names.underlay(),
        etcd_endpoint: kolach_testkit::etcd::endpoint(),
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
                    controld: h.controld.spec(),
                    dataplaned: h.dataplaned.spec(),
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
    down_named(STEM, dir)
}

/// [`down`] for the lab of namespaces named after `stem`.
pub fn down_named(stem: &str, dir: &Path) -> Result<Vec<String>> {
    let names = Names::new(stem);
    let found: Vec<String> = netns::list()?
        .into_iter()
        .filter(|ns| names.owns(ns))
        .collect();
    lab::destroy_leftovers(&names, dir)?;
    Ok(found)
}

/// The daemons `restart` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Daemon {
    Controld,
    Dataplaned,
}

impl Daemon {
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Controld => "controld",
            Daemon::Dataplaned => "dataplaned",
        }
    }

    fn socket(self) -> &'static str {
        match self {
            Daemon::Controld => kolach_proto::CONTROLD_SOCKET,
            Daemon::Dataplaned => kolach_proto::DATAPLANED_SOCKET,
        }
    }
}

/// How a `restart` went.
#[derive(Debug)]
pub struct Restarted {
    pub stopped: PidStop,
    pub pid: u32,
    /// Where the new process listens, and how long after its start it did.
    pub socket: PathBuf,
    pub listening_after: Duration,
}

/// How long a restarted daemon gets to listen on its socket.
const LISTEN_WITHIN: Duration = Duration::from_secs(10);

/// Stops host `n`'s `daemon` if it runs (SIGTERM, then SIGKILL after the
/// grace period) and starts it again with the command line `up` gave it,
/// as systemd's `Restart=` would after a crash; waits until it listens on
/// its socket.
pub fn restart(state: &State, n: u8, daemon: Daemon) -> Result<Restarted> {
    let host = state.hosts.iter().find(|h| h.n == n).with_context(|| {
        let ids: Vec<String> = state.hosts.iter().map(|h| h.n.to_string()).collect();
        format!("no host {n} in the demo (hosts: {})", ids.join(", "))
    })?;
    let spec = match daemon {
        Daemon::Controld => host.controld.as_ref(),
        Daemon::Dataplaned => host.dataplaned.as_ref(),
    };
    let spec = spec.with_context(|| {
        format!(
            "the demo state has no command line for host{n}'s {} (written by an older \
                 kolach-lab: run `make demo-down` and `make demo` again)",
            daemon.name()
        )
    })?;
    let stopped = spec.stop(STOP_GRACE);
    let started = Instant::now();
    let pid = spec.start()?;
    let socket = host.run_dir.join(daemon.socket());
    loop {
        if UnixStream::connect(&socket).is_ok() {
            break;
        }
        // Not running_pid(): until `ip netns exec` execs the daemon, argv[0] is `ip`.
        if !names::pid_alive(pid) {
            bail!(
                "{} exited right after its start; its log: {}\n{}",
                spec.label,
                spec.log.display(),
                kolach_testkit::process::tail(&spec.log, 10)
            );
        }
        if started.elapsed() > LISTEN_WITHIN {
            bail!(
                "{} (pid {pid}) does not listen on {} {LISTEN_WITHIN:?} after its start; see {}",
                spec.label,
                socket.display(),
                spec.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Restarted {
        stopped,
        pid,
        socket,
        listening_after: started.elapsed(),
    })
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
/// processes in them: a host's dockerd holder, and with it its containers),
/// their temp dirs, etcd data and (empty) Docker cgroups. Returns the
/// namespaces removed.
pub fn sweep() -> Result<Vec<String>> {
    let stale: Vec<String> = netns::list()?
        .into_iter()
        .filter(|ns| names::stale_owner(ns, names::pid_alive))
        .collect();
    lab::destroy_namespaces(&stale)?;
    if let Ok(cgroups) = kolach_testkit::podman::cgroup_mounts() {
        kolach_testkit::docker::sweep_stale_cgroups(&cgroups);
    }
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
            controld: None,
            dataplaned: None,
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
