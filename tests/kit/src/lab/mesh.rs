//! Higher-level steps on a lab running kolach: bring up a mesh, ask the
//! daemons, wait for routes to converge, ping pod to pod.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kolach_proto::control::{ControlStatus, LeasesReply};
use kolach_proto::dataplane::DataplaneStatus;

use crate::lab::{Lab, NETWORK_CONFIG};
use crate::query::{self, RouteEntry};
use crate::traffic::{self, PingResult};

/// How long routes may take to converge after every host is ready.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(10);

impl Lab {
    /// etcd, the udp network config, `hosts` hosts with both daemons, a pod
    /// each, and every dataplane holding a route to every other host.
    pub fn mesh(&mut self, hosts: u8) -> Result<()> {
        self.mesh_with(hosts, NETWORK_CONFIG)
    }

    /// [`Lab::mesh`] with another network config (e.g. [`Backend::config`](crate::lab::backend::Backend::config)).
    pub fn mesh_with(&mut self, hosts: u8, config: &str) -> Result<()> {
        self.mesh_with_dataplaned_env(hosts, config, &[])
    }

    /// [`Lab::mesh_with`], every host's kolach-dataplaned started with the
    /// variables `env` added to its environment (e.g. `("KOLACH_BUSY_POLL", "20ms")`).
    pub fn mesh_with_dataplaned_env(
        &mut self,
        hosts: u8,
        config: &str,
        env: &[(&str, &str)],
    ) -> Result<()> {
        self.start_etcd()?;
        self.put_config(config)?;
        for _ in 0..hosts {
            let n = self.add_host()?;
            self.host_mut(n)
                .dataplaned
                .env
                .extend(env.iter().map(|&(k, v)| (k.to_string(), v.to_string())));
            self.start_host(n)?;
        }
        for n in self.host_ids() {
            self.wait_ready(n)?;
            self.add_pod(n)?;
        }
        self.wait_converged(CONVERGE_WITHIN)
    }

    /// Adds, starts and waits for one more host with a pod; returns its number.
    pub fn join_host(&mut self) -> Result<u8> {
        let n = self.add_host()?;
        self.start_host(n)?;
        self.wait_ready(n)?;
        self.add_pod(n)?;
        Ok(n)
    }

    pub fn dp_status(&self, n: u8) -> Result<DataplaneStatus> {
        let sock = self.host(n).dataplaned_socket();
        self.block_on(async move { query::dataplane_status(&sock).await })
    }

    /// Polls host `n`'s dataplane status until its mode (e.g. `offload
    /// (tun-tso, ...)`) is `want`; fails after 5 s naming the mode it has.
    pub fn wait_dp_mode(&self, n: u8, want: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mode = self.dp_status(n)?.mode;
            if mode == want {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("host{n}: dataplane mode {mode:?}, expected {want:?}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn dp_routes(&self, n: u8) -> Result<Vec<RouteEntry>> {
        let sock = self.host(n).dataplaned_socket();
        let reply = self.block_on(async move { query::dataplane_routes(&sock).await })?;
        query::route_entries(&reply)
    }

    pub fn cd_status(&self, n: u8) -> Result<ControlStatus> {
        let sock = self.host(n).controld_socket();
        self.block_on(async move { query::control_status(&sock).await })
    }

    pub fn cd_leases(&self, n: u8) -> Result<LeasesReply> {
        let sock = self.host(n).controld_socket();
        self.block_on(async move { query::control_leases(&sock).await })
    }

    /// The route every other host with a subnet.env should have to host `n`.
    pub fn expected_route(&self, n: u8) -> Option<RouteEntry> {
        let h = self.host(n);
        h.subnet_env().map(|env| (env.lease(), h.ip))
    }

    /// What host `n`'s dataplane should hold: every other host with a subnet, sorted.
    pub fn expected_routes(&self, n: u8) -> Vec<RouteEntry> {
        let mut v: Vec<RouteEntry> = self
            .host_ids()
            .into_iter()
            .filter(|&m| m != n)
            .filter_map(|m| self.expected_route(m))
            .collect();
        v.sort();
        v
    }

    /// Polls host `n`'s dataplane routes until `pred` holds; returns them.
    pub fn wait_routes(
        &self,
        n: u8,
        within: Duration,
        what: &str,
        pred: impl Fn(&[RouteEntry]) -> bool,
    ) -> Result<Vec<RouteEntry>> {
        let deadline = Instant::now() + within;
        loop {
            let last = self.dp_routes(n);
            if let Ok(r) = &last {
                if pred(r) {
                    return Ok(r.clone());
                }
            }
            if Instant::now() >= deadline {
                bail!("host{n}: dataplane routes never {what} within {within:?}; last: {last:?}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Polls host `n`'s controld status until `pred` holds; returns it.
    pub fn wait_control(
        &self,
        n: u8,
        within: Duration,
        what: &str,
        pred: impl Fn(&ControlStatus) -> bool,
    ) -> Result<ControlStatus> {
        let deadline = Instant::now() + within;
        loop {
            let last = self.cd_status(n);
            if let Ok(s) = &last {
                if pred(s) {
                    return Ok(s.clone());
                }
            }
            if Instant::now() >= deadline {
                bail!("host{n}: controld status never {what} within {within:?}; last: {last:?}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Polls every host's dataplane routes until `pred` holds for each; returns
    /// how long each host took (host order).
    pub fn wait_all_routes(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&[RouteEntry]) -> bool,
    ) -> Result<Vec<Duration>> {
        poll_hosts(
            &self.host_ids(),
            within,
            "routes",
            what,
            "; ",
            |n| match self.dp_routes(n) {
                Ok(r) if pred(&r) => Ok(()),
                Ok(r) => Err(format!("{r:?}")),
                Err(e) => Err(format!("{e:#}")),
            },
        )
    }

    /// Waits until every host's dataplane routes are exactly the other hosts' leases.
    pub fn wait_converged(&self, within: Duration) -> Result<()> {
        for n in self.host_ids() {
            let want: BTreeSet<RouteEntry> = self.expected_routes(n).into_iter().collect();
            self.wait_routes(n, within, &format!("became {want:?}"), |r| {
                r.iter().copied().collect::<BTreeSet<_>>() == want
            })?;
        }
        Ok(())
    }

    /// Pings host `b`'s pod from host `a`'s pod, `count` times.
    pub fn ping_pods(&self, a: u8, b: u8, count: u32) -> Result<PingResult> {
        traffic::ping(&self.pod(a).ns, self.pod(b).ip, count, 1.0)
    }

    /// Every ordered pair of pods pings with no loss (all pairs at once);
    /// returns the failures.
    pub fn ping_all_pairs(&self, count: u32) -> Vec<String> {
        let ids = self.host_ids();
        let pairs: Vec<(u8, u8, String, std::net::Ipv4Addr)> = ids
            .iter()
            .flat_map(|&a| ids.iter().map(move |&b| (a, b)))
            .filter(|(a, b)| a != b)
            .map(|(a, b)| (a, b, self.pod(a).ns.clone(), self.pod(b).ip))
            .collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = pairs
                .into_iter()
                .map(|(a, b, ns, to)| {
                    s.spawn(move || match traffic::ping(&ns, to, count, 1.0) {
                        Ok(r) if r.lossless() => None,
                        Ok(r) => Some(format!(
                            "pod{a} -> pod{b} ({to}): {}/{} received\n{}",
                            r.received,
                            r.transmitted,
                            r.output.trim()
                        )),
                        Err(e) => Some(format!("pod{a} -> pod{b}: {e:#}")),
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Some("ping thread panicked".into()))
                })
                .collect()
        })
    }

    /// Fails unless every ordered pair pings without loss.
    pub fn assert_all_pairs_ping(&self, count: u32) -> Result<()> {
        let failures = self.ping_all_pairs(count);
        if !failures.is_empty() {
            bail!("pod-to-pod pings failed:\n{}", failures.join("\n"));
        }
        Ok(())
    }
}

/// Polls `probe` on every host of `hosts` every 10 ms until it holds on each
/// (`Ok`); returns how long each took (in `hosts` order), or fails after
/// `within` naming what each pending host showed last (the probe's `Err`).
pub fn poll_hosts(
    hosts: &[u8],
    within: Duration,
    subject: &str,
    what: &str,
    sep: &str,
    mut probe: impl FnMut(u8) -> Result<(), String>,
) -> Result<Vec<Duration>> {
    let start = Instant::now();
    let mut done: Vec<Option<Duration>> = vec![None; hosts.len()];
    let mut last = vec![String::new(); hosts.len()];
    while done.iter().any(Option::is_none) {
        for (i, &n) in hosts.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            match probe(n) {
                Ok(()) => done[i] = Some(start.elapsed()),
                Err(state) => last[i] = state,
            }
        }
        if start.elapsed() >= within && done.iter().any(Option::is_none) {
            let pending: Vec<String> = hosts
                .iter()
                .zip(&done)
                .zip(&last)
                .filter(|((_, d), _)| d.is_none())
                .map(|((n, _), l)| format!("host{n}: {l}"))
                .collect();
            bail!(
                "{subject} never {what} within {within:?} on:{}{}",
                if sep == "\n" { "\n" } else { " " },
                pending.join(sep)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(done.into_iter().map(Option::unwrap_or_default).collect())
}
