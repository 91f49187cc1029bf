//! The emulator's three processes (moto, the counting proxy, the metadata
//! stub) in the lab's underlay namespace, and what a test does with them:
//! seed, call EC2 as itself, read the tables and the hosts' counts, take EC2
//! away and back, switch authentication on.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::{
    http_get, script, venv, wait_listening, Instance, Route, Seed, KEY_ID, REGION, RESYNC_SECS,
    SECRET, WRITE_ACTIONS,
};
use crate::etcd::ETCD_IP;
use crate::netns;
use crate::process::Proc;

/// moto, the counting proxy and the metadata stub in namespace `ns`.
pub struct Emulator {
    pub ns: String,
    pub dir: PathBuf,
    pub base_port: u16,
    pub seed: Seed,
    python: PathBuf,
    moto: Proc,
    proxy: Proc,
    imds: Proc,
}

/// One helper call (boto3 import included).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Emulator {
    /// Starts moto on `127.0.0.1:<base_port>` in `ns` (the lab's underlay),
    /// seeds it with one instance per address of `hosts` and `spares`,
    /// then starts the proxy and the stub on the underlay address.
    pub fn start(
        ns: &str,
        dir: &Path,
        base_port: u16,
        hosts: &[Ipv4Addr],
        spares: &[Ipv4Addr],
    ) -> Result<Emulator> {
        let venv = venv()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let python = venv.join("bin/python");
        let script = script();
        let map = dir.join("instances.json");
        let mut moto = Proc::new(
            "aws/moto",
            ns,
            &venv.join("bin/moto_server"),
            vec![
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                base_port.to_string(),
            ],
            dir.join("moto.log"),
        );
        moto.start()?;
        wait_listening(ns, &format!("127.0.0.1:{base_port}"), &mut moto)?;
        let s = |v: &Path| v.display().to_string();
        let mut proxy = Proc::new(
            "aws/proxy",
            ns,
            &python,
            vec![
                s(&script),
                "proxy".into(),
                "--listen".into(),
                format!("{ETCD_IP}:{}", base_port + 1),
                "--upstream".into(),
                format!("http://127.0.0.1:{base_port}"),
            ],
            dir.join("proxy.log"),
        );
        let mut imds = Proc::new(
            "aws/imds",
            ns,
            &python,
            vec![
                s(&script),
                "imds".into(),
                "--listen".into(),
                format!("{ETCD_IP}:{}", base_port + 2),
                "--map".into(),
                s(&map),
            ],
            dir.join("imds.log"),
        );
        let mut seed_args = vec![
            s(&script),
            "seed".into(),
            "--endpoint".into(),
            format!("http://127.0.0.1:{base_port}"),
            "--map".into(),
            s(&map),
            "--hosts".into(),
        ];
        seed_args.extend(hosts.iter().map(ToString::to_string));
        seed_args.push("--spares".into());
        seed_args.extend(spares.iter().map(ToString::to_string));
        let args: Vec<&str> = seed_args.iter().map(String::as_str).collect();
        let out = netns::exec(ns, &s(&python), &args, CALL_TIMEOUT)?;
        if !out.success() {
            bail!(
                "seeding moto failed ({}): {}",
                out.status,
                out.stderr.trim()
            );
        }
        let seed: Seed = serde_json::from_str(out.stdout.trim())
            .with_context(|| format!("seed output {:?}", out.stdout))?;
        proxy.start()?;
        imds.start()?;
        wait_listening(ns, &format!("{ETCD_IP}:{}", base_port + 1), &mut proxy)?;
        wait_listening(ns, &format!("{ETCD_IP}:{}", base_port + 2), &mut imds)?;
        Ok(Emulator {
            ns: ns.to_string(),
            dir: dir.to_path_buf(),
            base_port,
            seed,
            python,
            moto,
            proxy,
            imds,
        })
    }

    /// EC2 as the hosts reach it: through the counting proxy.
    pub fn endpoint(&self) -> String {
        format!("http://{ETCD_IP}:{}", self.base_port + 1)
    }

    /// The metadata stub.
    pub fn metadata_endpoint(&self) -> String {
        format!("http://{ETCD_IP}:{}", self.base_port + 2)
    }

    /// moto itself, for the test's own calls (not counted, never blackholed).
    pub fn moto_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.base_port)
    }

    /// The environment of a host's controld: EC2 through the proxy, the
    /// stub, the lab's keys, a short resync ([`RESYNC_SECS`]); the region
    /// from the environment when `region_env`, else from the stub.
    pub fn host_env(&self, region_env: bool) -> Vec<(String, String)> {
        let mut env = vec![
            ("AWS_ENDPOINT_URL_EC2".to_string(), self.endpoint()),
            ("AWS_ENDPOINT_URL".to_string(), self.endpoint()),
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT".to_string(),
                self.metadata_endpoint(),
            ),
            ("AWS_ACCESS_KEY_ID".to_string(), KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), SECRET.to_string()),
            ("KOLACH_AWS_RESYNC".to_string(), RESYNC_SECS.to_string()),
        ];
        if region_env {
            env.push(("AWS_REGION".to_string(), REGION.to_string()));
        }
        env
    }

    /// The instance seeded for `ip`.
    pub fn instance(&self, ip: Ipv4Addr) -> Result<&Instance> {
        self.seed
            .instances
            .get(&ip)
            .ok_or_else(|| anyhow!("no instance seeded at {ip}"))
    }

    /// One EC2 call straight to moto (`ReplaceRoute`, `{"RouteTableId": ..}`);
    /// the answer as JSON.
    pub fn ec2(&self, operation: &str, params: Value) -> Result<Value> {
        self.ec2_at(&self.moto_endpoint(), operation, params)
    }

    /// [`Emulator::ec2`] against `endpoint` (the proxy, to see what hosts see).
    pub fn ec2_at(&self, endpoint: &str, operation: &str, params: Value) -> Result<Value> {
        let script = script().display().to_string();
        let params = params.to_string();
        let args = [
            script.as_str(),
            "ec2",
            "--endpoint",
            endpoint,
            operation,
            params.as_str(),
        ];
        let python = self.python.display().to_string();
        let out = netns::exec(&self.ns, &python, &args, CALL_TIMEOUT)?;
        if !out.success() {
            let last = out.stderr.trim().lines().last().unwrap_or("").to_string();
            bail!("{operation} {params}: {last}");
        }
        serde_json::from_str(out.stdout.trim()).with_context(|| format!("{operation} answer"))
    }

    /// Every route of `table` as the hosts see it (through the proxy, so a
    /// route to a deleted interface reads "blackhole"; counted under the
    /// underlay's own address, never as a host's).
    pub fn routes(&self, table: &str) -> Result<Vec<Route>> {
        let mut all = self.tables_routes(&[table.to_string()])?;
        all.remove(table)
            .ok_or_else(|| anyhow!("no route table {table}"))
    }

    /// [`Emulator::routes`] of several tables in one call (each helper call
    /// starts a Python with boto3: on two cores, polling costs).
    pub fn tables_routes(&self, tables: &[String]) -> Result<BTreeMap<String, Vec<Route>>> {
        let v = self.ec2_at(
            &self.endpoint(),
            "DescribeRouteTables",
            serde_json::json!({ "RouteTableIds": tables }),
        )?;
        let text = |r: &Value, k: &str| r[k].as_str().map(str::to_string);
        let mut out = BTreeMap::new();
        for t in v["RouteTables"].as_array().into_iter().flatten() {
            let id = text(t, "RouteTableId").unwrap_or_default();
            let routes = t["Routes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| Route {
                    destination: text(r, "DestinationCidrBlock").unwrap_or_default(),
                    eni: text(r, "NetworkInterfaceId"),
                    instance: text(r, "InstanceId"),
                    state: text(r, "State").unwrap_or_default(),
                })
                .collect();
            out.insert(id, routes);
        }
        Ok(out)
    }

    /// The route of `table` to `destination`, if any.
    pub fn route(&self, table: &str, destination: &str) -> Result<Option<Route>> {
        Ok(self
            .routes(table)?
            .into_iter()
            .find(|r| r.destination == destination))
    }

    /// Calls the proxy saw since it started, by client address and Action.
    pub fn counts(&self) -> Result<BTreeMap<Ipv4Addr, BTreeMap<String, u64>>> {
        let addr: SocketAddr = format!("{ETCD_IP}:{}", self.base_port + 1).parse()?;
        let body = netns::within(&self.ns, || http_get(addr, "/__kolach/counts"))?;
        serde_json::from_str(&body).with_context(|| format!("counts {body:?}"))
    }

    /// Write calls (see [`WRITE_ACTIONS`]) from `client` since the proxy started.
    pub fn writes(&self, client: Ipv4Addr) -> Result<u64> {
        Ok(self
            .counts()?
            .get(&client)
            .map(|per| {
                WRITE_ACTIONS
                    .iter()
                    .map(|a| per.get(*a).copied().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0))
    }

    /// Takes EC2 away from the hosts (the proxy stops: connection refused);
    /// moto and its state stay. [`Emulator::resume`] brings it back (with
    /// fresh counts).
    pub fn suspend(&mut self) {
        self.proxy.stop();
    }

    pub fn resume(&mut self) -> Result<()> {
        self.proxy.start()?;
        wait_listening(
            &self.ns,
            &format!("{ETCD_IP}:{}", self.base_port + 1),
            &mut self.proxy,
        )
    }

    /// Switches moto's authentication on: from now on only keys its IAM
    /// knows, signed right, pass (the lab's keys are not among them).
    pub fn require_auth(&self) -> Result<()> {
        let script = script().display().to_string();
        let endpoint = self.moto_endpoint();
        let python = self.python.display().to_string();
        netns::exec_ok(
            &self.ns,
            &python,
            &[&script, "auth", "--endpoint", &endpoint, "--after", "0"],
        )?;
        Ok(())
    }

    /// The last lines of moto's, the proxy's and the stub's logs.
    pub fn log_tails(&self, lines: usize) -> String {
        [&self.moto, &self.proxy, &self.imds]
            .iter()
            .map(|p| format!("----- {} -----\n{}\n", p.label, p.log_tail(lines)))
            .collect()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for p in [&mut self.imds, &mut self.proxy, &mut self.moto] {
            p.stop();
        }
    }
}
