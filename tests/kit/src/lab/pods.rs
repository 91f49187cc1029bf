//! Pods wired by the `kolach` CNI plugin: each pod is a namespace of the lab,
//! added and deleted through the plugin as a runtime would.

use std::net::Ipv4Addr;

use anyhow::{anyhow, Result};
use serde_json::Value;

use super::Lab;
use crate::cni::{self, Answer, Call};
use crate::netns;

/// A pod the plugin wired on host `host`.
#[derive(Debug, Clone)]
pub struct CniPod {
    pub host: u8,
    pub ns: String,
    pub container_id: String,
    pub ifname: String,
    pub ip: Ipv4Addr,
    /// The host end of its veth.
    pub host_end: String,
    pub result: Value,
}

impl CniPod {
    /// The pod's namespace as CNI_NETNS.
    pub fn netns_path(&self) -> String {
        netns::netns_path(&self.ns).display().to_string()
    }
}

impl Lab {
    /// `kolachctl pool create NAME SUBNET [extra...]` through host `n`'s
    /// controld; an error carries kolachctl's message.
    pub fn create_pool(&self, n: u8, name: &str, subnet: &str, extra: &[&str]) -> Result<()> {
        let mut args = vec!["pool", "create", name, subnet];
        args.extend_from_slice(extra);
        let out = self.kolachctl(n, &args)?;
        if !out.success() {
            return Err(anyhow!(
                "kolachctl {}: {}",
                args.join(" "),
                out.stderr.trim()
            ));
        }
        Ok(())
    }

    /// [`Lab::mesh_with`] without the bridge pods: hosts whose pods the
    /// plugin will wire (a bridge holding `.1/24` would shadow their /32s).
    pub fn mesh_for_pods(&mut self, hosts: u8, config: &str) -> Result<()> {
        self.start_etcd()?;
        self.put_config(config)?;
        for _ in 0..hosts {
            let n = self.add_host()?;
            self.start_host(n)?;
        }
        for n in self.host_ids() {
            self.wait_ready(n)?;
        }
        self.wait_converged(super::mesh::CONVERGE_WITHIN)
    }

    /// Host `n`'s network config (cniVersion 1.0.0, its run dir).
    pub fn cni_config(&self, n: u8) -> Value {
        cni::config("1.0.0", &self.host(n).dir)
    }

    /// The namespace name of pod `tag` on host `n` (made by [`Lab::cni_add`]).
    pub fn cni_pod_ns(&self, n: u8, tag: &str) -> String {
        format!("{}-c{n}{tag}", self.names.stem)
    }

    /// Makes a namespace for pod `tag` on host `n` and runs ADD for it;
    /// `pod_namespace` goes into CNI_ARGS as K8S_POD_NAMESPACE.
    pub fn cni_add(&mut self, n: u8, tag: &str, pod_namespace: Option<&str>) -> Result<CniPod> {
        let ns = self.cni_pod_ns(n, tag);
        if !self.namespaces.contains(&ns) {
            netns::create(&ns)?;
            self.adopt_namespace(ns);
        }
        self.cni_add_existing(n, tag, pod_namespace)
    }

    /// Records a namespace made outside the lab so teardown removes it.
    pub fn adopt_namespace(&mut self, ns: String) {
        if !self.namespaces.contains(&ns) {
            self.namespaces.push(ns);
        }
    }

    /// ADD for pod `tag` whose namespace ([`Lab::cni_pod_ns`]) exists; takes
    /// `&self`, so several can run at once from threads.
    pub fn cni_add_existing(
        &self,
        n: u8,
        tag: &str,
        pod_namespace: Option<&str>,
    ) -> Result<CniPod> {
        let answer = self
            .cni_add_answer(n, tag, pod_namespace)?
            .require(&format!("ADD of pod {tag} on host{n}"))?;
        self.cni_pod(n, tag, &answer)
    }

    /// ADD for pod `tag` as [`Lab::cni_add_existing`] runs it, returning
    /// what the plugin answered, success or not (a test of failures reads
    /// the CNI error's code and msg).
    pub fn cni_add_answer(&self, n: u8, tag: &str, pod_namespace: Option<&str>) -> Result<Answer> {
        let ns = self.cni_pod_ns(n, tag);
        let container_id = self.cni_container_id(n, tag);
        let args = match pod_namespace {
            Some(p) => format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={p};K8S_POD_NAME={tag}"),
            None => String::new(),
        };
        let config = self.cni_config(n);
        let path = netns::netns_path(&ns).display().to_string();
        self.cni(
            n,
            &Call {
                command: "ADD",
                container_id: &container_id,
                netns: &path,
                ifname: "eth0",
                args: &args,
                config: &config,
            },
        )
    }

    /// The container ID [`Lab::cni_add`] gives pod `tag` on host `n`.
    pub fn cni_container_id(&self, n: u8, tag: &str) -> String {
        format!("{}-{n}-{tag}", self.names.stem)
    }

    /// The pod a successful ADD `answer` for pod `tag` on host `n` made.
    pub fn cni_pod(&self, n: u8, tag: &str, answer: &Answer) -> Result<CniPod> {
        let result = answer
            .json
            .clone()
            .ok_or_else(|| anyhow!("ADD printed no JSON"))?;
        Ok(CniPod {
            host: n,
            ns: self.cni_pod_ns(n, tag),
            container_id: self.cni_container_id(n, tag),
            ifname: "eth0".into(),
            ip: answer
                .ip()
                .ok_or_else(|| anyhow!("ADD result has no address: {result}"))?,
            host_end: cni::host_end(&result).unwrap_or_default(),
            result,
        })
    }

    /// DEL of `pod`, which must succeed; its namespace stays (the runtime's).
    pub fn cni_del(&self, pod: &CniPod) -> Result<()> {
        let config = self.cni_config(pod.host);
        let path = pod.netns_path();
        self.cni(
            pod.host,
            &Call {
                command: "DEL",
                container_id: &pod.container_id,
                netns: &path,
                ifname: &pod.ifname,
                args: "",
                config: &config,
            },
        )?
        .require("DEL")?;
        Ok(())
    }

    /// Any plugin call, run in host `n`'s namespace.
    pub fn cni(&self, n: u8, call: &Call<'_>) -> Result<Answer> {
        cni::run_plugin(Some(&self.host(n).ns), cni::PLUGIN, call)
    }

    /// Waits until host `n`'s dataplane routes at least `count` peer blocks.
    pub fn wait_dp_blocks(&self, n: u8, count: usize) -> Result<()> {
        let deadline = std::time::Instant::now() + super::mesh::CONVERGE_WITHIN;
        loop {
            let sock = self.host(n).dataplaned_socket();
            let routes = self.block_on(crate::query::dataplane_routes(&sock));
            let got = routes
                .as_ref()
                .map_or(0, |r| r.routes.iter().map(|r| r.blocks.len()).sum());
            if got >= count {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(anyhow!(
                    "host{n}: dataplane routes {got} blocks, not {count}: {routes:?}"
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Sends pings from pod `from` with source `spoofed` (an address it does
    /// not hold, added to its interface for the purpose) to `to`; they must
    /// get no answer.
    pub fn spoof_ping(&self, from: &CniPod, spoofed: Ipv4Addr, to: Ipv4Addr) -> Result<()> {
        let src = spoofed.to_string();
        netns::ip(
            &from.ns,
            &["addr", "add", &format!("{src}/32"), "dev", &from.ifname],
        )?;
        let out = netns::exec(
            &from.ns,
            "ping",
            &["-c3", "-i0.2", "-W1", "-I", &src, &to.to_string()],
            std::time::Duration::from_secs(5),
        );
        netns::ip(
            &from.ns,
            &["addr", "del", &format!("{src}/32"), "dev", &from.ifname],
        )?;
        match out {
            Ok(o) if o.success() => Err(anyhow!("a ping from spoofed {src} to {to} was answered")),
            _ => Ok(()),
        }
    }

    /// Pings `to` from pod `from` (one reply within a second or three tries).
    pub fn pod_pings(&self, from: &CniPod, to: Ipv4Addr) -> bool {
        let to = to.to_string();
        (0..3).any(|_| {
            netns::exec(
                &from.ns,
                "ping",
                &["-c1", "-W1", &to],
                std::time::Duration::from_secs(3),
            )
            .is_ok_and(|o| o.success())
        })
    }
}
