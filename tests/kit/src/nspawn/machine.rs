//! One booted container: its systemd, commands run inside it with `nsenter`,
//! and its shutdown.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, Output};
use crate::netns;

/// How long a container may take to reach `running` (a minbase tree boots
/// in about a second).
const BOOT_WITHIN: Duration = Duration::from_secs(60);
/// How long a poweroff may take before the container is killed.
const POWEROFF_WITHIN: Duration = Duration::from_secs(15);

pub struct MachineSpec<'a> {
    pub name: &'a str,
    /// The lab namespace it runs in.
    pub netns: &'a str,
    pub tree: &'a Path,
    /// Host paths bound read-only into the container, with their paths there.
    pub bind_ro: Vec<(PathBuf, String)>,
    /// Host paths bound read-write (e.g. a lab namespace's file, so a pod
    /// namespace is `/run/netns/<name>` on both sides).
    pub bind: Vec<(PathBuf, String)>,
    /// The console's output (the boot's messages).
    pub log: PathBuf,
}

pub struct Machine {
    pub name: String,
    pub log: PathBuf,
    nspawn: Child,
    /// The container's PID 1 (its systemd) as seen from here.
    pub leader: u32,
}

impl Machine {
    /// Boots the container and waits until its systemd reports `running`.
    pub fn boot(spec: &MachineSpec<'_>) -> Result<Machine> {
        let ns_path = netns::netns_path(spec.netns);
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args(["--boot", "--register=no", "--keep-unit", "--quiet"])
            .arg(format!("--network-namespace-path={}", ns_path.display()))
            // Given with --network-veth; asked for here: the dataplane's own.
            .arg("--capability=CAP_NET_ADMIN,CAP_BPF")
            // nspawn's own seccomp filter keeps bpf(2) for CAP_SYS_ADMIN;
            // the unit's filter is what is under test.
            .arg("--system-call-filter=bpf")
            .arg("--volatile=overlay")
            .arg("--console=passive")
            .arg(format!("--machine={}", spec.name))
            .arg("--directory")
            .arg(spec.tree);
        for (from, to) in &spec.bind_ro {
            cmd.arg(format!("--bind-ro={}:{to}", from.display()));
        }
        for (from, to) in &spec.bind {
            cmd.arg(format!("--bind={}:{to}", from.display()));
        }
        let log = std::fs::File::create(&spec.log)
            .with_context(|| format!("creating {}", spec.log.display()))?;
        // /proc/sys/net writable, as nspawn leaves it with a network of its
        // own (--network-veth); the rest of /proc/sys stays read-only.
        cmd.env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: only async-signal-safe calls between fork and exec. A test
        // that dies takes its containers down: nspawn powers off on SIGTERM.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let nspawn = cmd
            .spawn()
            .context("starting systemd-nspawn (Debian package systemd-container; `make deps`)")?;
        let mut m = Machine {
            name: spec.name.to_string(),
            log: spec.log.clone(),
            leader: 0,
            nspawn,
        };
        m.leader = m.find_leader()?;
        m.wait_running()?;
        Ok(m)
    }

    /// nspawn's child that runs /lib/systemd/systemd.
    fn find_leader(&mut self) -> Result<u32> {
        let deadline = Instant::now() + BOOT_WITHIN;
        let parent = self.nspawn.id();
        loop {
            if let Some(status) = self.nspawn.try_wait()? {
                bail!(
                    "systemd-nspawn for {} exited ({status}):\n{}",
                    self.name,
                    crate::process::tail(&self.log, 20)
                );
            }
            let children =
                std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().find_map(|p| {
                let exe = std::fs::read_link(format!("/proc/{p}/exe")).ok()?;
                exe.ends_with("systemd").then(|| p.parse().ok())?
            }) {
                return Ok(pid);
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: no systemd in the container after {BOOT_WITHIN:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_running(&self) -> Result<()> {
        let deadline = Instant::now() + BOOT_WITHIN;
        loop {
            // `--wait` needs dbus up; polling needs nothing.
            let out = self.exec(&["systemctl", "is-system-running"], Duration::from_secs(10))?;
            match out.stdout.trim() {
                "running" => return Ok(()),
                "degraded" => {
                    let failed = self.exec(
                        &["systemctl", "--failed", "--no-legend", "--plain"],
                        Duration::from_secs(10),
                    )?;
                    bail!("{} booted degraded: {}", self.name, failed.stdout.trim());
                }
                _ if Instant::now() > deadline => {
                    bail!(
                        "{} not running after {BOOT_WITHIN:?}: {}",
                        self.name,
                        out.stdout.trim()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `nsenter -t <leader> -a -- args`: inside every namespace of the container.
    pub fn command(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            "-t".to_string(),
            self.leader.to_string(),
            "-a".to_string(),
            "--".to_string(),
        ];
        v.extend(args.iter().map(|a| a.to_string()));
        v
    }

    pub fn exec(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        cmd::run("nsenter", &self.command(args), timeout)
    }

    /// `sh -c script` inside; its stdout, or an error with its output.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.sh_with(script, None)
    }

    /// `sh -c script` inside with `input` on its stdin.
    pub fn sh_input(&self, script: &str, input: &str) -> Result<String> {
        self.sh_with(script, Some(input.as_bytes()))
    }

    fn sh_with(&self, script: &str, input: Option<&[u8]>) -> Result<String> {
        let args = self.command(&["sh", "-c", script]);
        let out = cmd::run_input("nsenter", &args, input, Duration::from_secs(120))?;
        if !out.success() {
            bail!(
                "{}: `{script}` failed ({}):\n{}{}",
                self.name,
                out.status,
                out.stdout,
                out.stderr
            );
        }
        Ok(out.stdout)
    }

    /// `systemctl show -p <prop> --value <unit>`.
    pub fn unit_property(&self, unit: &str, prop: &str) -> Result<String> {
        Ok(self
            .sh(&format!("systemctl show -p {prop} --value {unit}"))?
            .trim()
            .to_string())
    }

    /// The unit's journal, for a failure report.
    pub fn journal(&self, unit: &str, lines: usize) -> String {
        self.sh(&format!(
            "journalctl --no-pager -o short-monotonic -n {lines} -u {unit}"
        ))
        .unwrap_or_else(|e| format!("(no journal: {e:#})"))
    }

    /// Powers the container off (nspawn turns SIGTERM into a clean
    /// shutdown), killing it if that takes too long.
    pub fn poweroff(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.nspawn.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + POWEROFF_WITHIN;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "kolach-tests: container {} still up {POWEROFF_WITHIN:?} after SIGTERM; killed",
            self.name
        );
        // SAFETY: SIGKILL to the container's PID 1 ends its PID namespace.
        unsafe { libc::kill(self.leader as i32, libc::SIGKILL) };
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Ok(None) = self.nspawn.try_wait() {
            self.poweroff();
        }
    }
}
