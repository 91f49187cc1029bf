//! The real binary as a child process inside a test namespace, started the
//! ways systemd and a hot upgrade start it: from any path, with extra
//! environment, and with fds placed at 3.. plus `LISTEN_PID` set to its own
//! PID (socket activation). Every call to it has its own short-lived runtime.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kolach_proto::dataplane::dataplane_admin_client::DataplaneAdminClient;
use kolach_proto::dataplane::dataplane_client::DataplaneClient;
use kolach_proto::dataplane::{
    ApplyReply, DataplaneStatus, RoutesReply, RoutesRequest, Snapshot, StatusRequest, UpgradeReply,
    UpgradeRequest,
};
use kolach_proto::uds;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Netns;

pub const BIN: &str = env!("CARGO_BIN_EXE_kolach-dataplaned");

/// How to start the daemon.
pub struct Launch<'a> {
    pub ns: &'a Netns,
    pub run_dir: &'a Path,
    pub program: PathBuf,
    pub env: Vec<(String, String)>,
    /// Placed at fds 3, 4, ... with `LISTEN_FDS`/`LISTEN_PID` set (names in env).
    pub listen_fds: Vec<OwnedFd>,
}

impl<'a> Launch<'a> {
    pub fn new(ns: &'a Netns, run_dir: &'a Path) -> Self {
        Launch {
            ns,
            run_dir,
            program: PathBuf::from(BIN),
            env: Vec::new(),
            listen_fds: Vec::new(),
        }
    }
}

pub struct Daemon {
    pub child: Child,
    pub run_dir: PathBuf,
}

pub fn log(run_dir: &Path) -> String {
    std::fs::read_to_string(run_dir.join("dataplaned.log")).unwrap_or_default()
}

impl Daemon {
    /// Starts it and waits until Status answers.
    pub fn launch(l: Launch<'_>) -> Daemon {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(l.run_dir.join("dataplaned.log"))
            .unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &l.ns.name]);
        // Nothing of the test's own environment that the daemon reads.
        for k in [
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
        ] {
            cmd.env_remove(k);
        }
        if l.listen_fds.is_empty() {
            cmd.arg(&l.program);
        } else {
            // The shell's PID is the daemon's after `exec`: that is LISTEN_PID.
            cmd.args(["sh", "-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""])
                .arg(&l.program)
                .env("LISTEN_FDS", l.listen_fds.len().to_string());
        }
        cmd.arg("--run-dir")
            .arg(l.run_dir)
            .envs(l.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf);
        let raw: Vec<i32> = l.listen_fds.iter().map(AsRawFd::as_raw_fd).collect();
        // SAFETY: only fcntl/dup2 (async-signal-safe) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way first, so that moving one to 3.. cannot
                // overwrite another still to be moved.
                let high: Vec<i32> = raw
                    .iter()
                    .map(|fd| libc::fcntl(*fd, libc::F_DUPFD, 100))
                    .collect();
                for (i, fd) in high.iter().enumerate() {
                    if *fd < 0 || libc::dup2(*fd, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(l.listen_fds);
        let d = Daemon {
            child,
            run_dir: l.run_dir.to_path_buf(),
        };
        d.wait_for("Status to answer", Duration::from_secs(10), |_| true);
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, s: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), s).unwrap();
    }

    /// SIGTERM, then the exit status within `within`.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "did not stop within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn status(&self) -> Result<DataplaneStatus, String> {
        let sock = self.run_dir.join(kolach_proto::DATAPLANED_SOCKET);
        block_on(async move {
            let ch = uds::connect(&sock, "kolach-dataplaned")
                .await
                .map_err(|e| e.to_string())?;
            DataplaneClient::new(ch)
                .status(StatusRequest {})
                .await
                .map(|r| r.into_inner())
                .map_err(|e| e.to_string())
        })
    }

    pub fn apply(&self, s: Snapshot) -> ApplyReply {
        let sock = self.run_dir.join(kolach_proto::DATAPLANED_SOCKET);
        block_on(async move {
            let ch = uds::connect(&sock, "kolach-dataplaned").await.unwrap();
            DataplaneClient::new(ch)
                .apply(s)
                .await
                .unwrap()
                .into_inner()
        })
    }

    pub fn routes(&self) -> RoutesReply {
        let sock = self.run_dir.join(kolach_proto::DATAPLANED_SOCKET);
        block_on(async move {
            let ch = uds::connect(&sock, "kolach-dataplaned").await.unwrap();
            DataplaneClient::new(ch)
                .routes(RoutesRequest {})
                .await
                .unwrap()
                .into_inner()
        })
    }

    pub fn upgrade(&self) -> UpgradeReply {
        let sock = self.run_dir.join(kolach_proto::DATAPLANED_SOCKET);
        block_on(async move {
            let ch = uds::connect(&sock, "kolach-dataplaned").await.unwrap();
            DataplaneAdminClient::new(ch)
                .upgrade(UpgradeRequest {})
                .await
                .unwrap()
                .into_inner()
        })
    }

    /// Polls Status until `ok` holds (or panics with the log after `within`).
    pub fn wait_for(
        &self,
        what: &str,
        within: Duration,
        ok: impl Fn(&DataplaneStatus) -> bool,
    ) -> DataplaneStatus {
        let deadline = Instant::now() + within;
        let mut last = Err(String::new());
        while Instant::now() < deadline {
            last = self.status();
            if let Ok(st) = &last {
                if ok(st) {
                    return st.clone();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no {what} within {within:?}; last status {last:?}; log:\n{}",
            log(&self.run_dir)
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(10), f)
                .await
                .expect("daemon call timed out")
        })
}
