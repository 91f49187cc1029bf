//! kolach's CNI plugin (DESIGN §10): a main plugin that asks kolach-controld
//! for a pod address and wires the pod with a veth pair and /32 routes. It
//! keeps no state of its own.
//!
//! - [`config`]: the network config on stdin and the `CNI_*` environment;
//!   [`args`]: `CNI_ARGS`.
//! - [`version`]: the spec versions, which commands each has, VERSION;
//!   [`result`]: ADD's result in each version.
//! - [`error`]: the CNI error object and every code, controld's statuses mapped.
//! - [`client`]: the `kolach.ipam.v1` calls over controld's socket.
//! - [`wire`]: veth, addresses, routes, neighbours, sysctls (rtnetlink).
//! - [`commands`]: ADD, DEL, CHECK, GC, STATUS.
//! - [`observability`]: debug logs to stderr on request (stdout is the protocol).
//! - [`doc`]: what the plugin says about itself, for kolach(8) and a terminal.

#![forbid(unsafe_code)]

pub mod args;
pub mod client;
pub mod commands;
pub mod config;
pub mod doc;
pub mod error;
pub mod observability;
pub mod result;
pub mod version;
pub mod wire;

use error::CniError;
use version::{Command, Version};

/// What the plugin prints on stdout, and whether it succeeded (exit 0) or
/// printed an error object (exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub success: bool,
}

/// One invocation: `get` reads the environment, `stdin` is the network config.
pub fn run(get: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    match execute(get, stdin) {
        Ok(stdout) => Outcome {
            stdout: stdout.unwrap_or_default(),
            success: true,
        },
        Err(e) => {
            // Errors speak the version asked when the plugin speaks it.
            let v = config::peek_version(stdin)
                .and_then(|v| Version::parse(&v))
                .unwrap_or(Version::LATEST);
            tracing::debug!(code = e.code, msg = %e.msg, details = %e.details, "failed");
            Outcome {
                stdout: e.to_json(v.as_str()),
                success: false,
            }
        }
    }
}

fn execute(get: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Option<String>, CniError> {
    let command = config::command(get)?;
    if command == Command::Version {
        // Whatever else is wrong, VERSION answers.
        let asked = config::peek_version(stdin);
        return Ok(Some(version::version_answer(asked.as_deref())));
    }
    let env = config::env(command, get)?;
    let conf = config::parse(stdin)?;
    conf.version.allows(command)?;
    tracing::debug!(command = command.as_str(), version = %conf.version, network = %conf.name, "start");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(
                error::IO_FAILURE,
                format!("cannot start a tokio runtime: {e}"),
            )
        })?;
    rt.block_on(commands::run(command, &conf, &env))
}

#[cfg(test)]
mod tests;
