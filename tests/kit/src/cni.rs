//! Running a CNI plugin exactly as a container runtime does: a fresh process
//! in the host's namespace, the `CNI_*` variables in its environment (and
//! nothing else of ours), the network config on stdin, the result or error
//! JSON on stdout.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use crate::bins;
use crate::cmd::{self, Output};

/// The plugin binary's name (DESIGN §10).
pub const PLUGIN: &str = "kolach";
/// Where Debian's `containernetworking-plugins` puts the reference plugins.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";
/// How long one plugin call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One plugin invocation.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    /// CNI_NETNS: a path (`/run/netns/<name>`), or "dummy" for VERSION.
    pub netns: &'a str,
    pub ifname: &'a str,
    /// CNI_ARGS, e.g. `K8S_POD_NAMESPACE=blue;K8S_POD_NAME=p1`.
    pub args: &'a str,
    pub config: &'a Value,
}

/// What the plugin answered.
#[derive(Debug)]
pub struct Answer {
    pub output: Output,
    /// stdout as JSON, when it was JSON.
    pub json: Option<Value>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.output.success()
    }

    /// The error's code, when the plugin failed with a CNI error.
    pub fn code(&self) -> Option<u64> {
        self.json.as_ref()?.get("code")?.as_u64()
    }

    pub fn msg(&self) -> String {
        self.json
            .as_ref()
            .and_then(|j| j.get("msg"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// The result's first IPv4 address.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        result_ip(self.json.as_ref()?)
    }

    /// Fails with everything the plugin said unless it succeeded.
    pub fn require(self, what: &str) -> Result<Answer> {
        if self.ok() {
            Ok(self)
        } else {
            Err(anyhow!(
                "{what}: plugin failed ({}): stdout {} stderr {}",
                self.output.status,
                self.output.stdout.trim(),
                self.output.stderr.trim()
            ))
        }
    }
}

/// The directory holding the `kolach` plugin (next to the daemons).
pub fn plugin_dir() -> Result<PathBuf> {
    let p = bins::find(PLUGIN).ok_or_else(|| {
        anyhow!(
            "CNI plugin {PLUGIN} not found in {:?}: run `cargo build --workspace` first",
            bins::search_dirs()
        )
    })?;
    Ok(p.parent().expect("a file has a parent").to_path_buf())
}

/// CNI_PATH: our plugin's directory, then Debian's reference plugins.
pub fn cni_path() -> Result<String> {
    Ok(format!("{}:{REFERENCE_DIR}", plugin_dir()?.display()))
}

/// The network config of DESIGN §10 for a host whose run dir is `run_dir`.
pub fn config(version: &str, run_dir: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": "kolach",
        "type": PLUGIN,
        "runDir": run_dir.display().to_string(),
    })
}

/// Runs `plugin` (a name found on CNI_PATH) in namespace `ns` (None: here).
pub fn run_plugin(ns: Option<&str>, plugin: &str, call: &Call<'_>) -> Result<Answer> {
    let path = cni_path()?;
    let exe = path
        .split(':')
        .map(|d| Path::new(d).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("no plugin {plugin} on CNI_PATH {path}"))?;
    let stdin = serde_json::to_vec(call.config)?;
    exec(ns, &exe, &path, call, &stdin)
        .with_context(|| format!("running CNI {} {plugin}", call.command))
}

/// Runs the plugin at `exe` exactly as a runtime does: `ip netns exec <ns>`
/// (None: here) `env -i`, the `CNI_*` variables of `call` with CNI_PATH
/// `cni_path`, and `stdin` as the network config (bytes: a test may send a
/// broken one; `call.config` is not used).
pub fn exec(
    ns: Option<&str>,
    exe: &Path,
    cni_path: &str,
    call: &Call<'_>,
    stdin: &[u8],
) -> Result<Answer> {
    let env = [
        format!("CNI_COMMAND={}", call.command),
        format!("CNI_CONTAINERID={}", call.container_id),
        format!("CNI_NETNS={}", call.netns),
        format!("CNI_IFNAME={}", call.ifname),
        format!("CNI_ARGS={}", call.args),
        format!("CNI_PATH={cni_path}"),
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    ];
    let mut args: Vec<String> = Vec::new();
    if let Some(ns) = ns {
        args.extend(["netns", "exec", ns].map(String::from));
    }
    args.extend(["env".to_string(), "-i".to_string()]);
    args.extend(env);
    args.push(exe.display().to_string());
    let program = if ns.is_some() { "ip" } else { &args.remove(0) };
    let output = cmd::run_input(program, &args, Some(stdin), CALL_TIMEOUT)?;
    let json = serde_json::from_str(output.stdout.trim()).ok();
    Ok(Answer { output, json })
}

/// The first IPv4 address (without its prefix) of a CNI result.
pub fn result_ip(v: &Value) -> Option<Ipv4Addr> {
    v.get("ips")?
        .as_array()?
        .iter()
        .filter_map(|ip| ip.get("address")?.as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .next()
}

/// The veth end the plugin leaves in the host's namespace for (container,
/// ifname): `kol` + 11 hex characters (DESIGN §10). Recomputed here from the
/// plugin's own answer rather than its code: the result's first interface.
pub fn host_end(result: &Value) -> Option<String> {
    result
        .get("interfaces")?
        .as_array()?
        .iter()
        .find(|i| i.get("sandbox").is_none())?
        .get("name")?
        .as_str()
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_results() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "kol0123456789a", "mac": "aa:bb:cc:dd:ee:ff"},
                           {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.50.18.2/32", "gateway": "169.254.1.1", "interface": 1}],
        });
        assert_eq!(result_ip(&r), Some(Ipv4Addr::new(10, 50, 18, 2)));
        assert_eq!(host_end(&r).as_deref(), Some("kol0123456789a"));
    }
}
