//! The network config stored at `<prefix>/config` (DESIGN §4): parsing and
//! validation, pure. Every rejection is one line naming the key, the value and
//! the rule, because an operator reads it in a log and fixes the JSON by hand.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{Map, Value};

use crate::model::text::shown;

/// The smallest subnet a host may lease; a /31 or /32 leaves no room for a
/// bridge address plus pods.
pub const MAX_SUBNET_LEN: u8 = 30;

/// `ExportTable` when the config has none: coil's table 119, which BIRD's
/// kernel protocol reads (DESIGN §10).
pub const DEFAULT_EXPORT_TABLE: u32 = 119;

/// A validation failure, already worded for the log (`config: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

pub use kolach_proto::BackendKind;

/// `Backend` with defaults filled in. `port` and `vni` are 0 where the backend
/// has no such option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub kind: BackendKind,
    pub port: u16,
    pub vni: u32,
    /// aws-vpc's `RouteTableID`, a string or a list of them (empty: the
    /// table of the instance's subnet, else the VPC's main table).
    pub route_tables: Vec<String>,
}

impl BackendConfig {
    pub fn udp() -> Self {
        BackendConfig {
            kind: BackendKind::Udp,
            port: 8285,
            vni: 0,
            route_tables: Vec::new(),
        }
    }
}

/// A validated config with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub network: Ipv4Net,
    pub subnet_len: u8,
    /// First and last subnet that may be leased, both aligned to `subnet_len`.
    pub subnet_min: Ipv4Net,
    pub subnet_max: Ipv4Net,
    pub backend: BackendConfig,
    /// The routing table where dataplaned keeps this host's subnet and
    /// blocks for a routing daemon (`ExportTable`); 0: no export.
    pub export_table: u32,
}

impl NetConfig {
    /// Whether `subnet` may be leased under this config: right size, inside
    /// the Network, between SubnetMin and SubnetMax.
    pub fn allows(&self, subnet: Ipv4Net) -> bool {
        self.fits_network(subnet)
            && subnet.network() >= self.subnet_min.network()
            && subnet.network() <= self.subnet_max.network()
    }

    /// Right size and inside the Network; SubnetMin/Max do not bind
    /// reservations, which the operator made on purpose.
    pub fn fits_network(&self, subnet: Ipv4Net) -> bool {
        subnet.prefix_len() == self.subnet_len && self.network.contains(&subnet)
    }
}

/// A parsed config plus the warnings the operator should see once (legacy keys,
/// unknown keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub config: NetConfig,
    pub warnings: Vec<String>,
}

const KNOWN_KEYS: &[&str] = &[
    "Network",
    "SubnetLen",
    "SubnetMin",
    "SubnetMax",
    "Backend",
    "HostSubnet",
    "FirstIP",
    "LastIP",
    "ExportTable",
    // flannel keys kolach reads past: IPv6 and dual-stack are not supported.
    "EnableIPv4",
    "EnableIPv6",
    "IPv6Network",
    "IPv6SubnetLen",
    "IPv6SubnetMin",
    "IPv6SubnetMax",
];

/// The largest config read; a real one is a few hundred bytes.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Parses and validates the JSON stored at `<prefix>/config`.
pub fn parse(bytes: &[u8]) -> Result<Parsed, ConfigError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return err(format!(
            "the value is {} bytes, more than the {MAX_CONFIG_BYTES} a network config can need",
            bytes.len()
        ));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ConfigError(format!("not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return err(format!("expected a JSON object, got {}", type_name(&value)));
    };
    let mut warnings = Vec::new();
    let unknown: Vec<String> = obj
        .keys()
        .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
        .map(shown)
        .collect();
    if !unknown.is_empty() {
        // One line however many there are (a config can hold thousands).
        let mut named = unknown
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if unknown.len() > 5 {
            named.push_str(&format!(" and {} more", unknown.len() - 5));
        }
        let s = if unknown.len() == 1 { "" } else { "s" };
        warnings.push(format!("config: ignoring unknown key{s} {named}"));
    }
    if obj.get("EnableIPv6") == Some(&Value::Bool(true)) {
        warnings.push("config: EnableIPv6 is not supported; only the IPv4 Network is used".into());
    }

    let network = parse_network(&obj)?;
    let len_key = pick_key(&obj, "SubnetLen", "HostSubnet", &mut warnings);
    let subnet_len = parse_subnet_len(&obj, len_key, network)?;
    let min_key = pick_key(&obj, "SubnetMin", "FirstIP", &mut warnings);
    let max_key = pick_key(&obj, "SubnetMax", "LastIP", &mut warnings);
    let first = subnet_at(network, subnet_len, 1);
    let last = subnet_at(network, subnet_len, subnet_count(network, subnet_len) - 1);
    let subnet_min = parse_bound(&obj, min_key, network, subnet_len)?.unwrap_or(first);
    let subnet_max = parse_bound(&obj, max_key, network, subnet_len)?.unwrap_or(last);
    if subnet_min.network() > subnet_max.network() {
        return err(format!(
            "{min_key} {} is after {max_key} {}",
            subnet_min.network(),
            subnet_max.network()
        ));
    }
    let backend = parse_backend(obj.get("Backend"))?;
    let export_table = parse_export_table(obj.get("ExportTable"))?;
    Ok(Parsed {
        config: NetConfig {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            backend,
            export_table,
        },
        warnings,
    })
}

/// Resolves a key that has a legacy kolach spelling: warns about the legacy
/// one, and says which wins when both are given. Returns the key to read.
fn pick_key(
    obj: &Map<String, Value>,
    new: &'static str,
    old: &'static str,
    warnings: &mut Vec<String>,
) -> &'static str {
    match (obj.contains_key(new), obj.contains_key(old)) {
        (true, true) => {
            warnings.push(format!(
                "config: both {old} and {new} are set; {new} wins ({old} is kolach's old name for it)"
            ));
            new
        }
        (false, true) => {
            warnings.push(format!(
                "config: {old} is kolach's old name for {new}; it still works, but please rename it"
            ));
            old
        }
        _ => new,
    }
}

fn parse_network(obj: &Map<String, Value>) -> Result<Ipv4Net, ConfigError> {
    let Some(v) = obj.get("Network") else {
        return err("Network is missing (an IPv4 CIDR such as \"10.50.0.0/16\" is required)");
    };
    let Value::String(s) = v else {
        return err(format!(
            "Network {} must be a string such as \"10.50.0.0/16\", not {}",
            shown(v.to_string()),
            type_name(v)
        ));
    };
    let net: ipnet::IpNet = match s.parse() {
        Ok(n) => n,
        Err(_) => {
            return err(format!(
                "Network {} is not a CIDR such as \"10.50.0.0/16\"",
                shown(format!("{s:?}"))
            ))
        }
    };
    let ipnet::IpNet::V4(net) = net else {
        return err(format!("Network {s} is IPv6; kolach supports IPv4 only"));
    };
    if net.addr() != net.network() {
        return err(format!(
            "Network {s} has host bits set (did you mean {}?)",
            net.trunc()
        ));
    }
    if net.prefix_len() + 2 > MAX_SUBNET_LEN {
        return err(format!(
            "Network {net} is too small: it needs a prefix of /{} or shorter to hold at least 4 subnets of /{MAX_SUBNET_LEN} or larger",
            MAX_SUBNET_LEN - 2
        ));
    }
    Ok(net)
}

fn parse_subnet_len(
    obj: &Map<String, Value>,
    key: &str,
    network: Ipv4Net,
) -> Result<u8, ConfigError> {
    let lo = network.prefix_len() + 2;
    let Some(v) = obj.get(key) else {
        return Ok(if network.prefix_len() <= 22 { 24 } else { lo });
    };
    let Some(n) = v.as_i64() else {
        return err(format!(
            "{key} {} must be a whole number (a prefix length such as 24), not {}",
            shown(v.to_string()),
            type_name(v)
        ));
    };
    if n < i64::from(lo) || n > i64::from(MAX_SUBNET_LEN) {
        return err(format!(
            "{key} {n} is not in {lo}..={MAX_SUBNET_LEN} for Network {network}"
        ));
    }
    Ok(n as u8)
}

/// SubnetMin/SubnetMax: an IPv4 address that starts a subnet (flannel style),
/// or that subnet written as a CIDR.
fn parse_bound(
    obj: &Map<String, Value>,
    key: &str,
    network: Ipv4Net,
    len: u8,
) -> Result<Option<Ipv4Net>, ConfigError> {
    let Some(v) = obj.get(key) else {
        return Ok(None);
    };
    let Value::String(s) = v else {
        return err(format!(
            "{key} {} must be a string such as \"{}\", not {}",
            shown(v.to_string()),
            subnet_at(network, len, 1).addr(),
            type_name(v)
        ));
    };
    let addr: Ipv4Addr = match s.split_once('/') {
        None => s.parse().ok(),
        Some((a, l)) => match (a.parse::<Ipv4Addr>(), l.parse::<u8>()) {
            (Ok(a), Ok(l)) if l == len => Some(a),
            (Ok(_), Ok(l)) => {
                return err(format!(
                    "{key} {} has prefix length /{l} but SubnetLen is {len}",
                    shown(s)
                ))
            }
            _ => None,
        },
    }
    .ok_or_else(|| {
        ConfigError(format!(
            "{key} {} is not an IPv4 address",
            shown(format!("{s:?}"))
        ))
    })?;
    if !network.contains(&addr) {
        return err(format!("{key} {addr} is not inside Network {network}"));
    }
    let subnet = Ipv4Net::new(addr, len).expect("len validated").trunc();
    if subnet.addr() != addr {
        return err(format!(
            "{key} {addr} is not aligned to SubnetLen {len} (the subnet containing it starts at {})",
            subnet.addr()
        ));
    }
    Ok(Some(subnet))
}

fn parse_backend(v: Option<&Value>) -> Result<BackendConfig, ConfigError> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(BackendConfig::udp()),
        Some(Value::Object(o)) => o,
        Some(v) => {
            return err(format!(
                "Backend {} must be an object such as {{\"Type\": \"udp\"}}, not {}",
                shown(v.to_string()),
                type_name(v)
            ))
        }
    };
    let kind = match obj.get("Type") {
        None | Some(Value::Null) => BackendKind::Udp,
        Some(Value::String(s)) => BackendKind::parse(s).ok_or_else(|| {
            ConfigError(format!(
                "Backend.Type {} is not one of udp, vxlan, host-gw, alloc, aws-vpc",
                shown(format!("{s:?}"))
            ))
        })?,
        Some(v) => {
            return err(format!(
                "Backend.Type {} must be a string (udp, vxlan, host-gw, alloc or aws-vpc), not {}",
                shown(v.to_string()),
                type_name(v)
            ))
        }
    };
    let number = |key: &str, default: u32, lo: u32, hi: u32| -> Result<u32, ConfigError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => match v.as_i64() {
                Some(n) if n >= i64::from(lo) && n <= i64::from(hi) => Ok(n as u32),
                Some(n) => err(format!("Backend.{key} {n} is not in {lo}..={hi}")),
                None => err(format!(
                    "Backend.{key} {} must be a whole number, not {}",
                    shown(v.to_string()),
                    type_name(v)
                )),
            },
        }
    };
    Ok(match kind {
        BackendKind::Udp => BackendConfig {
            kind,
            port: number("Port", 8285, 1, 65535)? as u16,
            vni: 0,
            route_tables: Vec::new(),
        },
        BackendKind::Vxlan => BackendConfig {
            kind,
            port: number("Port", 8472, 1, 65535)? as u16,
            vni: number("VNI", 1, 0, 16_777_215)?,
            route_tables: Vec::new(),
        },
        BackendKind::HostGw | BackendKind::Alloc => BackendConfig {
            kind,
            port: 0,
            vni: 0,
            route_tables: Vec::new(),
        },
        BackendKind::AwsVpc => BackendConfig {
            kind,
            port: 0,
            vni: 0,
            route_tables: parse_route_tables(obj.get("RouteTableID"))?,
        },
    })
}

/// The longest route table ID AWS hands out: `rtb-` and 17 hex digits
/// (older accounts have 8).
const MAX_RTB_HEX: usize = 17;

/// `Backend.RouteTableID`: one ID or a list of them, each `rtb-` and hex
/// digits; absent, null or `[]`: none named (the backend finds the table).
fn parse_route_tables(v: Option<&Value>) -> Result<Vec<String>, ConfigError> {
    let one = |v: &Value| -> Result<String, ConfigError> {
        let Value::String(id) = v else {
            return err(format!(
                "Backend.RouteTableID {} must be a string such as \"rtb-0a1b2c3d\" or a list of them, not {}",
                shown(v.to_string()),
                type_name(v)
            ));
        };
        let hex = id.strip_prefix("rtb-").unwrap_or("");
        let valid = (1..=MAX_RTB_HEX).contains(&hex.len())
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return err(format!(
                "Backend.RouteTableID {} is not a route table ID: \"rtb-\" and 1 to {MAX_RTB_HEX} lowercase hex digits (rtb-0a1b2c3d)",
                shown(format!("{id:?}"))
            ));
        }
        Ok(id.clone())
    };
    let ids = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        Some(v) => vec![one(v)?],
    };
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return err(format!(
                "Backend.RouteTableID {} lists {id:?} twice; name each table once",
                shown(v.map(Value::to_string).unwrap_or_default())
            ));
        }
    }
    Ok(ids)
}

/// `ExportTable`: a routing table number (a u32, as `ip route ... table N`
/// takes it), 0 for no export; never one of the tables the kernel itself
/// uses for every lookup (default 253, main 254, local 255), where the
/// exported `dev lo` routes would capture the host's traffic.
fn parse_export_table(v: Option<&Value>) -> Result<u32, ConfigError> {
    let v = match v {
        None | Some(Value::Null) => return Ok(DEFAULT_EXPORT_TABLE),
        Some(v) => v,
    };
    // A negative whole number is out of range, not of the wrong type.
    let Some(n) = v.as_u64().or_else(|| v.as_i64().map(|_| u64::MAX)) else {
        return err(format!(
            "ExportTable {} must be a whole number (a routing table such as {DEFAULT_EXPORT_TABLE}, or 0 for none), not {}",
            shown(v.to_string()),
            type_name(v)
        ));
    };
    let max = u64::from(u32::MAX);
    if n > max {
        return err(format!(
            "ExportTable {} is not in 0..={max} (0 turns export off)",
            shown(v.to_string())
        ));
    }
    let reserved = match n {
        253 => Some("default"),
        254 => Some("main"),
        255 => Some("local"),
        _ => None,
    };
    if let Some(name) = reserved {
        return err(format!(
            "ExportTable {n} is the kernel's {name} table; use another table (default {DEFAULT_EXPORT_TABLE}) or 0 for none"
        ));
    }
    Ok(n as u32)
}

fn subnet_count(network: Ipv4Net, len: u8) -> u64 {
    1u64 << (len - network.prefix_len())
}

/// The `index`-th subnet of size `len` in `network`.
pub fn subnet_at(network: Ipv4Net, len: u8, index: u64) -> Ipv4Net {
    let base = u32::from(network.network()) as u64;
    let addr = base + (index << (32 - u32::from(len)));
    Ipv4Net::new(Ipv4Addr::from(addr as u32), len).expect("len <= 32")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
