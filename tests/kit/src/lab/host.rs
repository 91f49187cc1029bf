//! One host of a lab: its namespace on the underlay, its run dir, its two
//! daemons and, once it has a subnet, its pod.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bins;
use crate::etcd;
use crate::etcd::tls;
use crate::lab::topology::{self, Pod};
use crate::process::{set_flag, Mode, Proc, Stopped};
use crate::subnet_env::SubnetEnv;

/// Options for a host's daemons.
#[derive(Clone, Debug, Default)]
pub struct DaemonOpts {
    /// `--subnet-lease-ttl`, e.g. "90s".
    pub lease_ttl: Option<String>,
    /// Extra flags for controld and dataplaned.
    pub controld_args: Vec<String>,
    pub dataplaned_args: Vec<String>,
    /// Adds `-v` (debug logs) to both.
    pub verbose: bool,
}

#[derive(Debug)]
pub struct Host {
    /// 1-based index; the underlay address is `198.18.0.<n>`.
    pub n: u8,
    pub ns: String,
    pub ip: Ipv4Addr,
    /// Run dir (sockets, saved snapshot, subnet.env, logs).
    pub dir: PathBuf,
    pub dataplaned: Proc,
    pub controld: Proc,
    pub pod: Option<Pod>,
}

impl Host {
    /// Points this host's controld (not started yet, or restarted after) at
    /// other etcd `endpoints`, e.g. a cluster's.
    pub fn use_etcd_endpoints(&mut self, endpoints: &[String]) {
        set_flag(
            &mut self.controld.args,
            "--etcd-endpoints",
            &endpoints.join(","),
        );
    }

    /// Points this host's controld (before it starts) at the lab's TLS etcd
    /// ([`Lab::start_tls_etcd`](crate::lab::Lab::start_tls_etcd)) with the
    /// given files; `None` leaves a flag out.
    pub fn use_etcd_tls(&mut self, ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) {
        let args = &mut self.controld.args;
        set_flag(args, "--etcd-endpoints", &tls::tls_endpoint());
        for (flag, file) in [
            ("--etcd-cafile", ca),
            ("--etcd-certfile", cert),
            ("--etcd-keyfile", key),
        ] {
            if let Some(f) = file {
                set_flag(args, flag, &f.display().to_string());
            }
        }
    }

    /// Describes host `n` (nothing is started).
    pub fn new(n: u8, ns: &str, dir: &Path, opts: &DaemonOpts, mode: Mode) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let d = dir.display().to_string();
        let mut dp_args = vec!["--run-dir".to_string(), d.clone()];
        let mut cd_args = vec![
            "--etcd-endpoints".to_string(),
            etcd::endpoint(),
            "--iface".to_string(),
            topology::ETH.to_string(),
            "--run-dir".to_string(),
            d.clone(),
            "--subnet-file".to_string(),
            dir.join("subnet.env").display().to_string(),
            "--state-dir".to_string(),
            dir.join("state").display().to_string(),
        ];
        if let Some(ttl) = &opts.lease_ttl {
            cd_args.extend(["--subnet-lease-ttl".to_string(), ttl.clone()]);
        }
        if opts.verbose {
            dp_args.push("-v".to_string());
            cd_args.push("-v".to_string());
        }
        dp_args.extend(opts.dataplaned_args.iter().cloned());
        cd_args.extend(opts.controld_args.iter().cloned());
        let mut dataplaned = Proc::new(
            &format!("host{n}/dataplaned"),
            ns,
            &bins::find_or_name(bins::DATAPLANED),
            dp_args,
            dir.join("dataplaned.log"),
        );
        let mut controld = Proc::new(
            &format!("host{n}/controld"),
            ns,
            &bins::find_or_name(bins::CONTROLD),
            cd_args,
            dir.join("controld.log"),
        );
        // A host switched to aws-vpc must never reach for the real instance
        // metadata or EC2: both point at a closed port on the host's own
        // loopback unless a test's emulator (`crate::aws`) replaces them.
        controld.env.extend(crate::aws::unreachable_env());
        if mode == Mode::Detached {
            dataplaned = dataplaned.detached(dir.join("dataplaned.pid"));
            controld = controld.detached(dir.join("controld.pid"));
        }
        Ok(Host {
            n,
            ns: ns.to_string(),
            ip: topology::host_ip(n),
            dir: dir.to_path_buf(),
            dataplaned,
            controld,
            pod: None,
        })
    }

    pub fn subnet_file(&self) -> PathBuf {
        self.dir.join("subnet.env")
    }

    pub fn dataplaned_socket(&self) -> PathBuf {
        self.dir.join(kolach_proto::DATAPLANED_SOCKET)
    }

    pub fn controld_socket(&self) -> PathBuf {
        self.dir.join(kolach_proto::CONTROLD_SOCKET)
    }

    /// Starts dataplaned, then controld (controld retries the dataplane anyway).
    pub fn start(&mut self) -> Result<()> {
        for p in [&self.dataplaned, &self.controld] {
            if !p.program.is_file() {
                bins::require(&p.program.to_string_lossy());
            }
        }
        self.dataplaned.start()?;
        self.controld.start()
    }

    /// SIGTERM to both, controld first; returns how each went.
    pub fn stop(&mut self) -> (Stopped, Stopped) {
        let c = self.controld.stop();
        let d = self.dataplaned.stop();
        (c, d)
    }

    /// subnet.env as it is now, if it exists and parses.
    pub fn subnet_env(&self) -> Option<SubnetEnv> {
        let text = std::fs::read_to_string(self.subnet_file()).ok()?;
        SubnetEnv::parse(&text).ok()
    }

    /// Waits for subnet.env to exist and parse; fails early when a daemon dies.
    pub fn wait_subnet_env(&mut self, within: Duration) -> Result<SubnetEnv> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(env) = self.subnet_env() {
                return Ok(env);
            }
            for p in [&mut self.dataplaned, &mut self.controld] {
                if let Some(status) = p.exited() {
                    bail!("{} exited ({status}) before subnet.env appeared", p.label);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "host{}: no valid {} after {within:?}",
                    self.n,
                    self.subnet_file().display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The tails of both daemon logs, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut s = String::new();
        for p in [&self.dataplaned, &self.controld] {
            if !p.log.exists() {
                continue;
            }
            s.push_str(&format!(
                "----- {} ({}) -----\n{}\n",
                p.label,
                p.log.display(),
                p.log_tail(lines)
            ));
        }
        s
    }
}
