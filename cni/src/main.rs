//! `kolach`: the CNI plugin binary. The runtime sets `CNI_*`, writes the
//! network config to stdin and reads the result (or error) from stdout.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use kolach_cni::error::{CniError, IO_FAILURE};
use kolach_cni::version::Version;

fn main() -> ExitCode {
    kolach_cni::observability::init();
    if std::env::var_os("CNI_COMMAND").is_none() {
        eprintln!(
            "kolach CNI plugin v{}; CNI protocol versions supported: {}",
            env!("CARGO_PKG_VERSION"),
            kolach_cni::version::SUPPORTED
                .map(Version::as_str)
                .join(", ")
        );
        // A person, not a runtime: say what this is and how it is run.
        if std::io::stdin().is_terminal() {
            eprintln!("\n{}", kolach_cni::doc::usage());
        }
    }
    let mut stdin = Vec::new();
    // A person trying `CNI_COMMAND=VERSION kolach` at a terminal gets an answer
    // instead of a read that waits for end of input.
    let outcome = if std::io::stdin().is_terminal() {
        kolach_cni::run(&|k| std::env::var(k).ok(), &stdin)
    } else {
        match std::io::stdin().read_to_end(&mut stdin) {
            Ok(_) => kolach_cni::run(&|k| std::env::var(k).ok(), &stdin),
            Err(e) => kolach_cni::Outcome {
                stdout: CniError::new(
                    IO_FAILURE,
                    format!("cannot read the network config from stdin: {e}"),
                )
                .to_json(Version::LATEST.as_str()),
                success: false,
            },
        }
    };
    let mut out = std::io::stdout().lock();
    if !outcome.stdout.is_empty() {
        let _ = writeln!(out, "{}", outcome.stdout);
    }
    let _ = out.flush();
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
