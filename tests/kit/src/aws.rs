//! The AWS side of the aws-vpc tests (DESIGN §11), without AWS: the EC2
//! emulator moto, from the venv `make deps` makes, in the lab's underlay
//! namespace, with the pieces around it in `assets/aws/labaws.py`:
//!
//! ```text
//!  host n's controld ──EC2 Query API──▶ proxy 198.18.0.254:<base+1> ──▶ moto 127.0.0.1:<base>
//!        │                               counts Action= per host,           ▲
//!        │                               reports routes to gone ENIs        │ seed, checks,
//!        │                               as blackhole (moto cannot)         │ hand-made faults
//!        └──instance metadata──▶ stub 198.18.0.254:<base+2>            the test (direct)
//!                                 instance = the one whose private IP is the caller's address
//! ```
//!
//! The seed: a VPC 198.18.0.0/16 holding the lab's underlay, a subnet
//! 198.18.0.0/24, two route tables (the first associated with the subnet),
//! one instance per host whose private IP is the host's underlay address,
//! and spare instances for routes pointed elsewhere. Everything stops when
//! the [`Emulator`] is dropped; moto keeps its state in memory only.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::etcd::ETCD_IP;
use crate::netns;
use crate::process::Proc;

/// The region the stub answers and the seed uses.
pub const REGION: &str = "us-east-1";
/// The keys the hosts are given; moto takes any until auth is on.
pub const KEY_ID: &str = "AKIAKOLACHLAB0000000";
pub const SECRET: &str = "kolach-lab-secret";
/// The calls that change the VPC (what the aws-vpc backend may write).
pub const WRITE_ACTIONS: [&str; 4] = [
    "CreateRoute",
    "ReplaceRoute",
    "DeleteRoute",
    "ModifyNetworkInterfaceAttribute",
];
/// moto's port in the underlay (loopback there); the proxy and the stub
/// take the next two, on the underlay address.
pub const BASE_PORT: u16 = 4566;
/// Seconds between the backend's full checks in the lab
/// (`KOLACH_AWS_RESYNC`; 30 s by default): repairs of routes spoiled by
/// hand show within a few seconds.
pub const RESYNC_SECS: &str = "2";
/// Where the venv is looked for below a target dir.
const VENV_IN_TARGET: &str = "cache/moto-venv";

/// The environment every lab host's controld starts with: the metadata
/// service and EC2 on a closed port of the host's own loopback, so a host
/// switched to aws-vpc never reaches for the real ones. [`Emulator::host_env`]
/// replaces them.
pub fn unreachable_env() -> Vec<(String, String)> {
    let closed = "http://127.0.0.1:9".to_string();
    vec![
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), closed.clone()),
        ("AWS_ENDPOINT_URL_EC2".into(), closed.clone()),
        ("AWS_ENDPOINT_URL".into(), closed),
    ]
}

/// The venv holding moto: `$KOLACH_MOTO_VENV`, else `cache/moto-venv` in
/// the target dir the running executable lives in (`make deps` makes it
/// there), else in the workspace's `target/`.
pub fn venv() -> Result<PathBuf> {
    let has_moto = |d: &Path| d.join("bin/moto_server").is_file();
    if let Some(d) = std::env::var_os("KOLACH_MOTO_VENV") {
        let d = PathBuf::from(d);
        if has_moto(&d) {
            return Ok(d);
        }
        bail!("KOLACH_MOTO_VENV={} holds no bin/moto_server", d.display());
    }
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        tried.extend(
            exe.ancestors()
                .skip(1)
                .take(3)
                .map(|a| a.join(VENV_IN_TARGET)),
        );
    }
    tried.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target")
            .join(VENV_IN_TARGET),
    );
    tried.into_iter().find(|d| has_moto(d)).ok_or_else(|| {
        anyhow!(
            "moto (the EC2 emulator) not found: run `make deps` (it makes <target dir>/{VENV_IN_TARGET}), \
             or point KOLACH_MOTO_VENV at a venv with moto[server,ec2]"
        )
    })
}

/// The helper script (proxy, metadata stub, seed, direct calls).
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/aws/labaws.py")
}

/// One seeded instance.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Instance {
    pub instance_id: String,
    /// Its primary network interface: where the routes to its host point.
    pub eni: String,
    #[serde(default)]
    pub mac: String,
}

/// What the seed made.
#[derive(Debug, Clone, Deserialize)]
pub struct Seed {
    pub vpc: String,
    pub subnet: String,
    /// Two tables; the first is associated with the subnet.
    pub tables: Vec<String>,
    /// By private IP (hosts and spares).
    pub instances: BTreeMap<Ipv4Addr, Instance>,
}

/// One route of a table, as DescribeRouteTables shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: String,
    pub eni: Option<String>,
    pub instance: Option<String>,
    /// "active" or "blackhole" (the latter only through the proxy).
    pub state: String,
}

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

/// How long a piece may take to listen.
const START_WITHIN: Duration = Duration::from_secs(30);
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
    /// the answer as JSON. `endpoint` None: moto itself.
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

/// Waits until something accepts on `addr` inside `ns`; fails early when
/// `proc` exits.
fn wait_listening(ns: &str, addr: &str, proc: &mut Proc) -> Result<()> {
    let sa: SocketAddr = addr.parse()?;
    let deadline = Instant::now() + START_WITHIN;
    loop {
        if let Some(status) = proc.exited() {
            bail!(
                "{} exited ({status}) while starting:\n{}",
                proc.label,
                proc.log_tail(20)
            );
        }
        let up = netns::within(ns, || {
            Ok(TcpStream::connect_timeout(&sa, Duration::from_millis(200)).is_ok())
        })?;
        if up {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} not listening on {addr} after {START_WITHIN:?}:\n{}",
                proc.label,
                proc.log_tail(20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP/1.0 GET; the body of a 200 answer.
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer from {addr}: {text:?}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!(
            "GET {path} at {addr}: {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_never_reach_real_aws_by_default() {
        let env = unreachable_env();
        for key in ["AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_ENDPOINT_URL_EC2"] {
            let v = env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
            assert_eq!(v, Some("http://127.0.0.1:9"), "{key}");
        }
    }

    #[test]
    fn the_script_ships_with_the_kit() {
        assert!(script().is_file(), "{}", script().display());
    }
}
