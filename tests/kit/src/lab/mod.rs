//! A lab: an underlay namespace with etcd, hosts with their daemons, pods,
//! outsiders; everything it made is torn down when it is dropped (also while a
//! test panics), unless it was [detached](Lab::detach) for the demo.
//!
//! Its parts: [`topology`] (the underlay bridge, hosts' `eth0`, pods behind
//! `kbr0`), [`host`] (one host: run dir, both daemons, subnet.env, pod),
//! [`teardown`] (graceful stop with a deadline, namespace and dir removal),
//! [`backend`] (the backends' configs, MTUs, device names, VTEP MACs),
//! [`mesh`] (bring up a mesh, wait for convergence, ping), [`pods`] (pods
//! wired by the `kolach` CNI plugin), [`upgrade`] (hot
//! upgrades, controld restarts, snapshots pushed by hand).

pub mod backend;
pub mod host;
pub mod mesh;
pub mod pods;
pub mod teardown;
pub mod topology;
pub mod upgrade;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::etcd::tls::{self, TestCa};
use crate::etcd::{which, Etcd, Etcdctl, CLIENT_PORT};
use crate::lab::host::{DaemonOpts, Host};
use crate::lab::teardown::stop_all;
pub use crate::lab::teardown::{destroy_leftovers, destroy_namespaces};
use crate::lab::topology::Pod;
use crate::names::{self, Names};
use crate::netns;
use crate::process::{Mode, Proc};
use crate::subnet_env::SubnetEnv;

/// The etcd prefix (DESIGN §3 default).
pub const PREFIX: &str = "/coreos.com/network";
/// The network config every test and the demo use.
pub const NETWORK_CONFIG: &str = r#"{"Network":"10.50.0.0/16","Backend":{"Type":"udp"}}"#;

/// The udp dataplane's status mode with the default flags (`--queues
/// auto`) on this machine: `io` (the offloads) and, where there are several
/// CPUs, a TUN queue per CPU (at most 8) steered by CPU.
pub fn default_udp_mode(io: &str) -> String {
    match cpus().min(8) {
        1 => io.to_string(),
        n => format!("{io}, {n} queues by cpu"),
    }
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
/// How long a host may take from start to subnet.env.
pub const READY_WITHIN: Duration = Duration::from_secs(20);

pub fn config_key() -> String {
    format!("{PREFIX}/config")
}

pub fn subnets_prefix() -> String {
    format!("{PREFIX}/subnets/")
}

pub struct Lab {
    pub names: Names,
    /// Run dirs, logs, etcd data.
    pub dir: PathBuf,
    pub mode: Mode,
    pub opts: DaemonOpts,
    pub etcd: Option<Etcd>,
    pub hosts: Vec<Host>,
    /// Every namespace made, in creation order.
    namespaces: Vec<String>,
    detached: bool,
    logs_dumped: bool,
}

impl Lab {
    /// A test lab: unique stem from `short`, files under the temp dir.
    pub fn new(short: &str) -> Result<Lab> {
        let stem = names::test_stem(short);
        let base = std::env::var_os("KOLACH_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        Lab::create(&stem, &base.join(&stem), Mode::Attached)
    }

    /// A lab named `stem` with its files in `dir`. Leftovers of the same name
    /// (namespaces, the dir) are removed first. Creates the underlay.
    pub fn create(stem: &str, dir: &Path, mode: Mode) -> Result<Lab> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            anyhow::bail!(
                "labs need root: they create network namespaces (run `sudo make test`, or as root)"
            );
        }
        let names = Names::new(stem);
        destroy_leftovers(&names, dir)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut lab = Lab {
            names,
            dir: dir.to_path_buf(),
            mode,
            opts: DaemonOpts::default(),
            etcd: None,
            hosts: Vec::new(),
            namespaces: Vec::new(),
            detached: false,
            logs_dumped: false,
        };
        let u = lab.names.underlay();
        lab.namespaces.push(u.clone());
        topology::create_underlay(&u)?;
        Ok(lab)
    }

    /// Starts etcd in the underlay (data on /dev/shm when there is one).
    pub fn start_etcd(&mut self) -> Result<Etcdctl> {
        let shm = Path::new("/dev/shm");
        let data = if shm.is_dir() && self.mode == Mode::Attached {
            shm.join(format!("{}-etcd", self.names.stem))
        } else {
            self.dir.join("etcd-data")
        };
        let _ = std::fs::remove_dir_all(&data);
        let mut etcd = Etcd::new(&self.names.underlay(), &data, self.dir.join("etcd.log"))?;
        if self.mode == Mode::Detached {
            etcd.proc = etcd.proc.detached(self.dir.join("etcd.pid"));
        }
        etcd.start(Duration::from_secs(20))?;
        let ctl = etcd.ctl();
        self.etcd = Some(etcd);
        Ok(ctl)
    }

    /// Starts the lab's etcd serving TLS with client certificate authentication
    /// on the underlay address, plain HTTP on loopback only.
    pub fn start_tls_etcd(&mut self, ca: &TestCa) -> Result<()> {
        let bin = which("etcd").ok_or_else(|| anyhow!("etcd not found (`make deps`)"))?;
        let data = self.dir.join("etcd-tls-data");
        let _ = std::fs::remove_dir_all(&data);
        let args = vec![
            "--name=kolach-lab".to_string(),
            format!("--data-dir={}", data.display()),
            format!(
                "--listen-client-urls={},http://127.0.0.1:{CLIENT_PORT}",
                tls::tls_endpoint()
            ),
            format!("--advertise-client-urls={}", tls::tls_endpoint()),
            "--listen-peer-urls=http://127.0.0.1:2380".to_string(),
            "--initial-advertise-peer-urls=http://127.0.0.1:2380".to_string(),
            "--initial-cluster=kolach-lab=http://127.0.0.1:2380".to_string(),
            "--initial-cluster-state=new".to_string(),
            format!("--cert-file={}", ca.server_cert.display()),
            format!("--key-file={}", ca.server_key.display()),
            format!("--trusted-ca-file={}", ca.ca.display()),
            "--client-cert-auth".to_string(),
            "--logger=zap".to_string(),
            "--log-outputs=stderr".to_string(),
            "--log-level=warn".to_string(),
        ];
        let ns = self.names.underlay();
        let mut etcd = Etcd {
            proc: Proc::new("etcd", &ns, &bin, args, self.dir.join("etcd.log")),
            ns,
            data_dir: data,
        };
        etcd.start(Duration::from_secs(20))
            .context("etcd with TLS")?;
        self.etcd = Some(etcd);
        Ok(())
    }

    pub fn etcdctl(&self) -> Etcdctl {
        Etcdctl {
            ns: self.names.underlay(),
        }
    }

    pub fn put_config(&self, json: &str) -> Result<()> {
        self.etcdctl().put(&config_key(), json)
    }

    /// Adds host n = count + 1 on the underlay (daemons not started).
    pub fn add_host(&mut self) -> Result<u8> {
        let n = u8::try_from(self.hosts.len() + 1)
            .ok()
            .filter(|n| *n < 200)
            .ok_or_else(|| anyhow!("too many hosts"))?;
        let ns = self.names.host(n);
        self.namespaces.push(ns.clone());
        topology::create_host(&self.names.underlay(), &ns, n)?;
        let dir = self.dir.join(format!("host{n}"));
        self.hosts
            .push(Host::new(n, &ns, &dir, &self.opts, self.mode)?);
        Ok(n)
    }

    /// Adds a machine on the underlay at 198.18.0.<last_octet> that is no
    /// member of the mesh; returns its namespace.
    pub fn add_outsider(&mut self, tag: &str, last_octet: u8) -> Result<String> {
        let ns = self.names.outsider(tag);
        self.namespaces.push(ns.clone());
        let uplink = format!("x{tag}");
        topology::create_machine(
            &self.names.underlay(),
            &ns,
            &uplink,
            topology::host_ip(last_octet),
        )?;
        Ok(ns)
    }

    /// Adds an empty namespace of the lab (`<stem>-x<tag>`, loopback up),
    /// removed with it; e.g. a pod that a CNI plugin wires.
    pub fn add_namespace(&mut self, tag: &str) -> Result<String> {
        let ns = self.names.outsider(tag);
        self.namespaces.push(ns.clone());
        netns::create(&ns)?;
        Ok(ns)
    }

    pub fn host(&self, n: u8) -> &Host {
        &self.hosts[usize::from(n) - 1]
    }

    pub fn host_mut(&mut self, n: u8) -> &mut Host {
        &mut self.hosts[usize::from(n) - 1]
    }

    /// Host numbers, 1..=count.
    pub fn host_ids(&self) -> Vec<u8> {
        self.hosts.iter().map(|h| h.n).collect()
    }

    /// Starts both daemons of host `n`.
    pub fn start_host(&mut self, n: u8) -> Result<()> {
        self.host_mut(n).start()
    }

    /// Waits for host `n`'s subnet.env.
    pub fn wait_ready(&mut self, n: u8) -> Result<SubnetEnv> {
        self.host_mut(n).wait_subnet_env(READY_WITHIN)
    }

    /// Builds host `n`'s bridge and pod from its subnet.env.
    pub fn add_pod(&mut self, n: u8) -> Result<Pod> {
        let env = self
            .host(n)
            .subnet_env()
            .ok_or_else(|| anyhow!("host{n} has no subnet.env yet"))?;
        self.add_pod_with(n, env.subnet, env.pod_ip(), env.mtu)
    }

    /// Builds host `n`'s bridge holding `bip` and a pod at `pod_ip`.
    pub fn add_pod_with(
        &mut self,
        n: u8,
        bip: ipnet::Ipv4Net,
        pod_ip: Ipv4Addr,
        mtu: u32,
    ) -> Result<Pod> {
        let pod_ns = self.names.pod(n);
        if !self.namespaces.contains(&pod_ns) {
            self.namespaces.push(pod_ns.clone());
        }
        let pod = topology::create_pod(&self.host(n).ns, &pod_ns, bip, pod_ip, mtu)?;
        self.host_mut(n).pod = Some(pod.clone());
        Ok(pod)
    }

    pub fn pod(&self, n: u8) -> &Pod {
        self.host(n)
            .pod
            .as_ref()
            .unwrap_or_else(|| panic!("host{n} has no pod"))
    }

    /// Runs a future (a daemon query) on a runtime of its own, bounded by 5 s.
    /// The runtime goes with the call: a client connection left behind on a
    /// runtime nobody polls stays open, and an open connection can hold up a
    /// daemon's graceful stop (controld waits for it without limit).
    pub fn block_on<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), f)
                .await
                .map_err(|_| anyhow!("daemon query timed out after 5s"))?
        })
    }

    /// Every daemon log's tail plus each host's addresses and routes.
    pub fn diagnostics(&self) -> String {
        let mut s = format!(
            "===== lab {} ({}) =====\n",
            self.names.stem,
            self.dir.display()
        );
        if let Some(e) = &self.etcd {
            s.push_str(&format!("----- etcd -----\n{}\n", e.proc.log_tail(15)));
        }
        for h in &self.hosts {
            s.push_str(&h.log_tails(40));
            // Neighbours and TCP sockets show a host that cannot reach etcd
            // (an incomplete ARP entry, a connect stuck in SYN-SENT).
            for args in [&["-br", "addr"][..], &["route"][..], &["neigh"][..]] {
                let out = netns::ip(&h.ns, args).unwrap_or_else(|e| format!("{e:#}\n"));
                s.push_str(&format!(
                    "----- host{}: ip {} -----\n{out}",
                    h.n,
                    args.join(" ")
                ));
            }
            let ss = netns::exec(&h.ns, "ss", &["-tn"], Duration::from_secs(5))
                .map_or_else(|e| format!("{e:#}\n"), |o| o.stdout);
            s.push_str(&format!("----- host{}: ss -tn -----\n{ss}", h.n));
        }
        let u = self.names.underlay();
        for args in [&["-s", "-br", "link"][..], &["neigh"][..]] {
            let out = netns::ip(&u, args).unwrap_or_else(|e| format!("{e:#}\n"));
            s.push_str(&format!(
                "----- underlay: ip {} -----\n{out}",
                args.join(" ")
            ));
        }
        s
    }

    /// Prints [`Lab::diagnostics`] to stderr (once).
    pub fn dump_logs(&mut self) {
        if !self.logs_dumped {
            self.logs_dumped = true;
            eprintln!("{}", self.diagnostics());
        }
    }

    /// Leaves everything running (the demo); pid files stay in the lab dir.
    pub fn detach(mut self) {
        self.detached = true;
        for h in &mut self.hosts {
            h.dataplaned.forget();
            h.controld.forget();
        }
        if let Some(e) = &mut self.etcd {
            e.proc.forget();
        }
    }

    /// Stops every process (SIGTERM, 5 s, SIGKILL), deletes every namespace,
    /// removes the dir (kept when KOLACH_TEST_KEEP is set). Goes on past
    /// failures and returns them all.
    pub fn teardown(&mut self) -> Vec<anyhow::Error> {
        let mut errors = Vec::new();
        let mut procs: Vec<&mut Proc> = Vec::new();
        for h in &mut self.hosts {
            procs.push(&mut h.controld);
            procs.push(&mut h.dataplaned);
        }
        stop_all(procs);
        if let Some(e) = &mut self.etcd {
            stop_all(vec![&mut e.proc]);
            let data = e.data_dir.clone();
            let _ = std::fs::remove_dir_all(data);
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = netns::delete(&ns) {
                errors.push(e);
            }
        }
        if std::env::var_os("KOLACH_TEST_KEEP").is_some() {
            eprintln!("kolach-tests: keeping {}", self.dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                errors.push(anyhow!("removing {}: {e}", self.dir.display()));
            }
        }
        errors
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
        for e in self.teardown() {
            eprintln!("kolach-tests: teardown of {}: {e:#}", self.names.stem);
        }
    }
}

/// Runs a test body against a fresh lab; on error prints the error and every
/// log, tears the lab down, then fails the test.
pub fn run(short: &str, body: impl FnOnce(&mut Lab) -> Result<()>) {
    let started = Instant::now();
    let mut lab = Lab::new(short).unwrap_or_else(|e| panic!("creating lab {short}: {e:#}"));
    let result = body(&mut lab);
    if let Err(e) = &result {
        eprintln!("kolach-tests: {short} failed: {e:#}");
        lab.dump_logs();
    }
    drop(lab);
    eprintln!("kolach-tests: {short} took {:.1?}", started.elapsed());
    if let Err(e) = result {
        panic!("{short}: {e:#}");
    }
}
