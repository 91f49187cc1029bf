//! One file per CNI command. Each takes the checked config and environment
//! and returns what goes to stdout (ADD's result; nothing for the others) or
//! the CNI error.

use crate::client::{ClientError, Ipam};
use crate::config::{Env, NetConf};
use crate::error::CniError;
use crate::version::Command;

mod add;
mod check;
mod del;
mod gc;
mod status;

/// Runs `command` (not VERSION, which needs no runtime).
pub async fn run(command: Command, conf: &NetConf, env: &Env) -> Result<Option<String>, CniError> {
    match command {
        Command::Add => add::run(conf, env).await.map(Some),
        Command::Del => del::run(conf, env).await.map(|()| None),
        Command::Check => check::run(conf, env).await.map(|()| None),
        Command::Gc => gc::run(conf).await.map(|()| None),
        Command::Status => status::run(conf).await.map(|()| None),
        Command::Version => Ok(Some(crate::version::version_answer(Some(
            conf.version.as_str(),
        )))),
    }
}

/// controld's IPAM client, or the CNI error for why there is none.
async fn ipam(conf: &NetConf) -> Result<Ipam, CniError> {
    Ipam::connect(&conf.run_dir).await.map_err(|e| cni(&e))
}

fn cni(e: &ClientError) -> CniError {
    CniError::from(e)
}
