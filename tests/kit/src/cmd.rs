//! Running external commands under a deadline: every `ip`, `etcdctl` and `ping`
//! the harness starts goes through [`run`], so a wedged tool fails the test
//! instead of hanging it.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The default deadline for one helper command (`ip`, `etcdctl`, `sysctl`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// A command line, printable for error messages.
pub fn describe<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// Runs `program args`, feeding `stdin`, and waits at most `timeout`. A command
/// still running then is killed and reported as an error. A non-zero exit is
/// not an error here; see [`run_ok`].
pub fn run_input<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output> {
    let line = describe(program, args);
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data)
            .with_context(|| format!("writing stdin of `{line}`"))?;
    }
    // Readers on their own threads so a chatty command cannot fill a pipe and stall.
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{line}` did not finish within {timeout:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// [`run_input`] without stdin.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S], timeout: Duration) -> Result<Output> {
    run_input(program, args, None, timeout)
}

/// Runs a command that must succeed within [`DEFAULT_TIMEOUT`]; returns its stdout.
pub fn run_ok<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    let out = run(program, args, DEFAULT_TIMEOUT)?;
    if !out.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(program, args),
            out.status,
            out.stderr.trim()
        );
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let out = run(
            "sh",
            &["-c", "echo hi; echo err >&2; exit 3"],
            DEFAULT_TIMEOUT,
        )
        .unwrap();
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status.code(), Some(3));
        assert!(run_ok("sh", &["-c", "exit 1"]).is_err());
    }

    #[test]
    fn kills_on_timeout() {
        let t = Instant::now();
        let err = run("sleep", &["5"], Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn feeds_stdin() {
        let out = run_input("cat", &[] as &[&str], Some(b"abc"), DEFAULT_TIMEOUT).unwrap();
        assert_eq!(out.stdout, "abc");
    }
}
