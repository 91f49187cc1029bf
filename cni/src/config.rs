//! What the runtime hands the plugin: the network config on stdin and the
//! `CNI_*` environment, parsed and checked. A bad value gets a message naming
//! the key (or variable), the value and the rule.
//!
//! Unknown config keys (`capabilities`, `runtimeConfig`, `prevResult`, `ipam`,
//! `args`, …) are tolerated, as the spec asks of keys a plugin does not use.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::args::{self, PodArgs};
use crate::error::{CniError, DECODE_FAILURE, INVALID_CONFIG, INVALID_ENV};
use crate::version::{self, Command, Version};

/// The run dir when the config names none (DESIGN §7).
pub const DEFAULT_RUN_DIR: &str = "/run/kolach";

/// The network config, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    pub version: Version,
    pub name: String,
    pub run_dir: PathBuf,
    /// The pool for pods whose namespace has none ("" = the default pool).
    pub pool: String,
    /// Overrides controld's MTU.
    pub mtu: Option<u32>,
    /// GC's `cni.dev/valid-attachments`.
    pub valid_attachments: Vec<Attachment>,
}

/// What an address is for: (CNI_CONTAINERID, CNI_IFNAME).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

fn invalid(msg: String) -> CniError {
    CniError::new(INVALID_CONFIG, format!("network config: {msg}"))
}

/// The config as a JSON object (code 6 when it is not one).
fn object(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(DECODE_FAILURE, "cannot decode the network config on stdin")
            .with_details(e.to_string())
    })?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(CniError::new(
            DECODE_FAILURE,
            format!(
                "the network config on stdin is a JSON {}, not an object",
                json_kind(&other)
            ),
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The config's `cniVersion`, if it has a string one: the version errors are
/// written in, before the rest is known to be good.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    let m = object(stdin).ok()?;
    m.get("cniVersion")?.as_str().map(str::to_string)
}

fn string<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CniError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(invalid(format!("{key} {v} is not a string"))),
    }
}

/// The spec's rule for network names.
fn valid_network_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// DESIGN §10's rule for pool names.
fn valid_pool_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

/// Parses and checks the network config.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let m = object(stdin)?;
    let asked =
        string(&m, "cniVersion")?.ok_or_else(|| invalid("cniVersion is missing".to_string()))?;
    let version = version::negotiate(asked)?;

    let name = string(&m, "name")?
        .ok_or_else(|| invalid("name is missing".to_string()))?
        .to_string();
    if !valid_network_name(&name) {
        return Err(invalid(format!(
            "name {name:?} is not a network name (a letter or digit, then letters, digits, '_', '.' or '-')"
        )));
    }

    let run_dir = PathBuf::from(string(&m, "runDir")?.unwrap_or(DEFAULT_RUN_DIR));
    if !run_dir.is_absolute() {
        return Err(invalid(format!(
            "runDir {:?} is not an absolute path",
            run_dir.display()
        )));
    }

    let pool = string(&m, "pool")?.unwrap_or("").to_string();
    if !pool.is_empty() && !valid_pool_name(&pool) {
        return Err(invalid(format!(
            "pool {pool:?} is not a pool name (^[a-z][a-z0-9_.-]*$)"
        )));
    }

    let mtu = match m.get("mtu") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n @ 68..=65535) => Some(n as u32),
            _ => return Err(invalid(format!("mtu {v} is not an integer in 68..=65535"))),
        },
    };

    Ok(NetConf {
        version,
        name,
        run_dir,
        pool,
        mtu,
        valid_attachments: attachments(&m)?,
    })
}

/// `cni.dev/valid-attachments`; libcni also sends it as `cni.dev/attachments`
/// (the name in an early draft of the spec).
fn attachments(m: &Map<String, Value>) -> Result<Vec<Attachment>, CniError> {
    const KEYS: [&str; 2] = ["cni.dev/valid-attachments", "cni.dev/attachments"];
    let Some((key, v)) = KEYS.iter().find_map(|k| Some((*k, m.get(*k)?))) else {
        return Ok(Vec::new());
    };
    let rule = || {
        invalid(format!(
            "{key} is not a list of {{\"containerID\", \"ifname\"}}"
        ))
    };
    let list = v.as_array().ok_or_else(rule)?;
    list.iter()
        .map(|a| {
            let field = |f: &str| a.get(f).and_then(Value::as_str).map(str::to_string);
            Ok(Attachment {
                container_id: field("containerID").ok_or_else(rule)?,
                ifname: field("ifname").ok_or_else(rule)?,
            })
        })
        .collect()
}

/// The `CNI_*` environment of one call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Env {
    pub container_id: String,
    /// Empty for DEL when the runtime has no namespace any more.
    pub netns: String,
    pub ifname: String,
    pub pod: PodArgs,
}

impl Env {
    pub fn attachment(&self) -> Attachment {
        Attachment {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }
}

/// `CNI_COMMAND` (code 4 when absent or unknown).
pub fn command(get: &dyn Fn(&str) -> Option<String>) -> Result<Command, CniError> {
    let raw = get("CNI_COMMAND").filter(|s| !s.is_empty());
    let raw = raw.ok_or_else(|| CniError::missing_env("CNI_COMMAND"))?;
    Command::parse(&raw).ok_or_else(|| {
        CniError::new(
            INVALID_ENV,
            format!("CNI_COMMAND {raw:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"),
        )
    })
}

/// The variables `command` needs, all present and well formed (code 4,
/// naming every missing one).
pub fn env(command: Command, get: &dyn Fn(&str) -> Option<String>) -> Result<Env, CniError> {
    let needed: &[&str] = match command {
        Command::Add | Command::Check => {
            &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
        }
        Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
        Command::Gc | Command::Status | Command::Version => &[],
    };
    let var = |k: &str| get(k).unwrap_or_default();
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|k| var(k).is_empty())
        .collect();
    match missing.as_slice() {
        [] => {}
        [one] => return Err(CniError::missing_env(one)),
        many => {
            return Err(CniError::new(
                INVALID_ENV,
                format!(
                    "required environment variables {} are missing",
                    many.join(", ")
                ),
            ))
        }
    }
    let e = Env {
        container_id: var("CNI_CONTAINERID"),
        netns: var("CNI_NETNS"),
        ifname: var("CNI_IFNAME"),
        pod: args::parse(&var("CNI_ARGS"))?,
    };
    if needed.contains(&"CNI_CONTAINERID") {
        check_container_id(&e.container_id)?;
        check_ifname(&e.ifname)?;
    }
    Ok(e)
}

/// libcni's rule for container IDs.
pub fn check_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            INVALID_ENV,
            format!(
                "CNI_CONTAINERID {id:?} has characters other than letters, digits, '_', '.', '-'"
            ),
        ))
    }
}

/// The kernel's rule for interface names.
pub fn check_ifname(name: &str) -> Result<(), CniError> {
    let why = if name.len() > 15 {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is not a name")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        Some("holds '/', ':' or whitespace")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(CniError::new(
            INVALID_ENV,
            format!("CNI_IFNAME {name:?} {why}"),
        )),
    }
}

#[cfg(test)]
mod tests;
