//! Hot upgrade (DESIGN §6): `kolachctl dataplane upgrade`, SIGHUP and the
//! unit's `ExecReload` all come here.
//!
//! 1. [`Upgrader::request`] runs the binary now at the path this process was
//!    started from with `--upgrade-check` (same flags and environment). If it
//!    does not answer with a handover format this image writes, the upgrade
//!    is refused, the reason logged and returned; nothing else happens.
//! 2. The daemon loop gets the [`Plan`], stops serving (the listening socket
//!    stays open, so clients wait in its backlog), pauses the packet loop and
//!    calls [`Upgrader::exec`] with the fds to keep: close-on-exec is cleared
//!    on those only and the binary is re-executed (same PID) with the
//!    handover state in [`handoff::ENV`].
//! 3. If `execve` fails, the old image restores close-on-exec, resumes the
//!    loop, serves again and records why ([`Upgrader::failed`]).

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kolach_proto::dataplane as pb;
use tokio::sync::mpsc;

use crate::handover::binary::BinaryId;
use crate::handover::handoff::{self, Handoff};
use crate::handover::inherit::Carried;

/// How long the new binary gets to answer its check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// A checked upgrade, ready to hand over.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What the binary on disk said it is.
    pub new_version: String,
    /// The file that passed the check.
    pub binary: BinaryId,
    /// The handover format it adopts (1: one TUN queue and socket).
    pub format: u32,
}

#[derive(Debug, Default)]
struct Record {
    /// Why the last attempt failed, until the next attempt.
    error: Option<String>,
    /// How long the packet loop was paused when this image took over.
    pause_us: u64,
}

pub struct Upgrader {
    /// The executable running now (path remembered at start).
    binary: BinaryId,
    /// argv of this process, argv[0] included: the new image gets the same.
    args: Vec<OsString>,
    upgraded_at: Option<SystemTime>,
    busy: AtomicBool,
    record: Mutex<Record>,
    plans: mpsc::Sender<Plan>,
}

impl Upgrader {
    /// The upgrader and the receiving end the daemon loop waits on.
    pub fn new(binary: BinaryId, carried: &Carried) -> (Upgrader, mpsc::Receiver<Plan>) {
        let (tx, rx) = mpsc::channel(1);
        let u = Upgrader {
            binary,
            args: std::env::args_os().collect(),
            upgraded_at: carried.upgraded_at,
            busy: AtomicBool::new(false),
            record: Mutex::new(Record::default()),
            plans: tx,
        };
        (u, rx)
    }

    pub fn binary(&self) -> &BinaryId {
        &self.binary
    }

    /// Notes how long forwarding paused in the handover that started this image.
    pub fn set_pause(&self, us: u64) {
        self.record.lock().expect("not poisoned").pause_us = us;
    }

    /// Checks the binary on disk and hands the plan to the daemon loop.
    /// Err says why there will be no upgrade (also logged and kept for Status).
    pub async fn request(&self, trigger: &'static str) -> Result<Plan, String> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err("an upgrade is already in progress".into());
        }
        self.record.lock().expect("not poisoned").error = None;
        let path = &self.binary.path;
        tracing::info!(trigger, binary = %path.display(), "hot upgrade requested; checking the binary on disk");
        let result: Result<Plan, String> = async {
            let on_disk =
                BinaryId::at(path).map_err(|e| format!("cannot use {}: {e}", path.display()))?;
            let report = check(&self.args, path)
                .await
                .map_err(|e| format!("{} cannot take over: {e}", path.display()))?;
            let plan = Plan {
                new_version: report.version,
                binary: on_disk,
                format: report.format,
            };
            self.plans
                .send(plan.clone())
                .await
                .map_err(|_| "the daemon is stopping".to_string())?;
            Ok(plan)
        }
        .await;
        match &result {
            Ok(plan) => tracing::info!(
                binary = %path.display(),
                new_version = %plan.new_version,
                inode = plan.binary.inode,
                "the binary on disk passed its check; handing over"
            ),
            Err(e) => self.failed(e.clone()),
        }
        result
    }

    /// The attempt failed (refused, or the exec failed): the old image runs on.
    pub fn failed(&self, why: String) {
        tracing::error!(error = %why, "hot upgrade failed; this image keeps running");
        self.record.lock().expect("not poisoned").error = Some(why);
        self.busy.store(false, Ordering::Release);
    }

    /// Re-executes the binary with `h`'s fds kept open and `h` in the
    /// environment. Returns only when `execve` failed.
    pub fn exec(&self, h: &Handoff) -> std::io::Error {
        let fds = h.fds();
        for fd in &fds {
            set_cloexec(*fd, false);
        }
        let err = match exec_args(&self.binary.path, &self.args, h) {
            Ok((path, argv, env)) => match nix::unistd::execve(&path, &argv, &env) {
                Err(e) => std::io::Error::from(e),
                Ok(never) => match never {},
            },
            Err(e) => e,
        };
        for fd in &fds {
            set_cloexec(*fd, true);
        }
        err
    }

    /// Fills the process fields of a status.
    pub fn annotate(&self, st: &mut pb::DataplaneStatus) {
        st.binary = Some(self.binary.to_pb(self.binary.changed_on_disk()));
        st.upgraded_at_unix = self
            .upgraded_at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        let r = self.record.lock().expect("not poisoned");
        st.handover_pause_us = r.pause_us;
        st.upgrade_error = r.error.clone().unwrap_or_default();
    }
}

fn set_cloexec(fd: i32, on: bool) {
    // SAFETY: only the flags of an fd this process owns change.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            let flags = if on {
                flags | libc::FD_CLOEXEC
            } else {
                flags & !libc::FD_CLOEXEC
            };
            libc::fcntl(fd, libc::F_SETFD, flags);
        }
    }
}

/// Variables a new image must not inherit: ours (replaced) and systemd's
/// socket activation (fds 3.. mean something else by then).
fn inherited_env(k: &std::ffi::OsStr) -> bool {
    k != handoff::ENV && k != "LISTEN_PID" && k != "LISTEN_FDS" && k != "LISTEN_FDNAMES"
}

type ExecArgs = (CString, Vec<CString>, Vec<CString>);

/// The path, argv and environment for `execve`.
fn exec_args(path: &std::path::Path, args: &[OsString], h: &Handoff) -> std::io::Result<ExecArgs> {
    let c = |b: &[u8]| CString::new(b).map_err(std::io::Error::other);
    let path = c(path.as_os_str().as_bytes())?;
    let argv = args
        .iter()
        .map(|a| c(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os().filter(|(k, _)| inherited_env(k)) {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        env.push(c(&kv)?);
    }
    env.push(c(format!("{}={}", handoff::ENV, h.encode()).as_bytes())?);
    Ok((path, argv, env))
}

/// Runs `path <our flags> --upgrade-check` and reads its answer.
async fn check(args: &[OsString], path: &std::path::Path) -> Result<handoff::CheckReport, String> {
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(args.iter().skip(1))
        .arg("--upgrade-check")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, _) in std::env::vars_os().filter(|(k, _)| !inherited_env(k)) {
        cmd.env_remove(k);
    }
    let run = async {
        // "Text file busy": someone (an installer) still has it open for
        // writing. Give them a moment.
        for _ in 0..5 {
            match cmd.output().await {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                r => return r,
            }
        }
        cmd.output().await
    };
    let out = tokio::time::timeout(CHECK_TIMEOUT, run)
        .await
        .map_err(|_| format!("its check did not finish within {CHECK_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot run it: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = stderr
            .lines()
            .chain(stdout.lines())
            .take(3)
            .collect::<Vec<_>>()
            .join(" / ");
        return Err(format!("its check exited with {} ({said})", out.status));
    }
    handoff::parse_check(&stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kdp-upgrade-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn script(path: &Path, body: &str) {
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn upgrader(path: &Path) -> (Upgrader, mpsc::Receiver<Plan>) {
        let (mut u, rx) = Upgrader::new(BinaryId::at(path).unwrap(), &Carried::default());
        u.args = vec!["prog".into(), "--run-dir".into(), "/x".into()];
        (u, rx)
    }

    #[tokio::test]
    async fn a_binary_that_answers_the_check_is_planned() {
        let d = dir("ok");
        let p = d.join("new");
        // Echoes its flags to prove it got ours plus --upgrade-check.
        script(&p, "echo \"kolach-dataplaned 9.9.9 handoff=1 args=$*\"");
        let (u, mut rx) = upgrader(&p);
        let plan = u.request("test").await.unwrap();
        assert_eq!(plan.new_version, "9.9.9");
        assert_eq!(rx.recv().await.unwrap().binary, BinaryId::at(&p).unwrap());
        // Busy until the daemon loop reports back.
        assert!(u.request("test").await.unwrap_err().contains("in progress"));
        u.failed("exec failed: test".into());
        let mut st = pb::DataplaneStatus::default();
        u.annotate(&mut st);
        assert_eq!(st.upgrade_error, "exec failed: test");
        assert!(u.request("test").await.is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn refusals_say_why_and_leave_it_idle() {
        let d = dir("refuse");
        let p = d.join("new");
        for (body, expect) in [
            (
                "echo 'error: unexpected argument' >&2; exit 2",
                "exited with exit status: 2",
            ),
            ("echo 'kolach-dataplaned 9.9.9 handoff=7'", "cannot adopt"),
            ("echo hello", "did not answer the check"),
        ] {
            script(&p, body);
            let (u, _rx) = upgrader(&p);
            let e = u.request("test").await.unwrap_err();
            assert!(e.contains(expect), "{body}: {e}");
            let mut st = pb::DataplaneStatus::default();
            u.annotate(&mut st);
            assert_eq!(st.upgrade_error, e);
            assert!(!u.busy.load(Ordering::Acquire));
        }
        // Not executable at all.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (u, _rx) = upgrader(&p);
        assert!(u
            .request("test")
            .await
            .unwrap_err()
            .contains("cannot run it"));
        // Gone.
        let gone = d.join("gone");
        std::fs::copy(&p, &gone).unwrap();
        let (u, _rx) = upgrader(&gone);
        std::fs::remove_file(&gone).unwrap();
        assert!(u.request("test").await.unwrap_err().contains("cannot use"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn exec_environment_replaces_our_variables() {
        let h = Handoff {
            listener: 9,
            format: 1,
            ..Default::default()
        };
        let (path, argv, env) =
            exec_args(Path::new("/usr/bin/x"), &["x".into(), "-v".into()], &h).unwrap();
        assert_eq!(path.to_str().unwrap(), "/usr/bin/x");
        assert_eq!(argv.len(), 2);
        let ours: Vec<_> = env
            .iter()
            .filter(|e| e.to_bytes().starts_with(handoff::ENV.as_bytes()))
            .collect();
        assert_eq!(ours.len(), 1);
        assert!(ours[0]
            .to_str()
            .unwrap()
            .ends_with("v=1 listen=9 upgrades=0 started_ms=0 paused_us=0"));
        assert!(env.iter().all(|e| !e.to_bytes().starts_with(b"LISTEN_")));
        assert!(!inherited_env(std::ffi::OsStr::new("LISTEN_FDS")));
        assert!(inherited_env(std::ffi::OsStr::new("NOTIFY_SOCKET")));
    }

    #[test]
    fn exec_failure_comes_back_with_cloexec_restored() {
        let d = dir("exec");
        let l = std::os::unix::net::UnixListener::bind(d.join("s.sock")).unwrap();
        use std::os::fd::AsRawFd;
        let fd = l.as_raw_fd();
        let (mut u, _rx) = upgrader(&std::env::current_exe().unwrap());
        u.binary.path = d.join("no-such-binary");
        let h = Handoff {
            listener: fd,
            ..Default::default()
        };
        let e = u.exec(&h);
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        // SAFETY: reading the flags of an fd this test owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
