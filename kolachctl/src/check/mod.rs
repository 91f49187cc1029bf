//! `kolachctl ipam check [--release]`: this host's allocations whose pod is
//! gone (DESIGN §10), and with `--release` those freed; and what the host
//! holds that no allocation explains ([`orphans`]: host ends and /32 routes).
//!
//! A pod is taken to be gone when its host end (`kol…`, computed from container
//! ID and ifname) is not in this network namespace, or when the netns path the
//! runtime gave at ADD no longer exists. [`judge`] decides from those two
//! answers alone; [`run`] asks the kernel and controld. An allocation younger
//! than `--min-age` ([`IN_FLIGHT`](crate::cli::IN_FLIGHT) by default) is left alone: its ADD may not have made the veth yet.
//!
//! [`blocks`] holds the allocations against the blocks in etcd and the host's
//! subnet: addresses in blocks this host does not hold are reported, never
//! released (their pods may be running).

pub mod blocks;
pub mod orphans;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use ipnet::Ipv4Net;
use kolach_proto::ipam::{
    AddressesRequest, Allocation, Attachment, BlocksRequest, ReleaseRequest, StatusRequest,
};
use kolach_proto::pod;
use serde::Serialize;

use crate::cli::Cli;
use crate::clients::{print_json, Connect};
use crate::ipam_view::{short_id, AddressRow};
use crate::table;

/// What this host shows of one allocation's pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub host_end: bool,
    /// `None` when the allocation records no netns path.
    pub netns: Option<bool>,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    HostEndGone,
    NetnsGone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Live,
    /// Too young to judge (`--min-age`, [`IN_FLIGHT`](crate::cli::IN_FLIGHT) by default).
    InFlight,
    Stale(Vec<Reason>),
}

/// Whether an allocation made at `allocated_at_unix` (0: unknown) is stale,
/// given what the host shows at `now_unix`.
pub fn judge(allocated_at_unix: i64, now_unix: i64, seen: Seen, min_age_s: i64) -> Verdict {
    let mut why = Vec::new();
    if !seen.host_end {
        why.push(Reason::HostEndGone);
    }
    if seen.netns == Some(false) {
        why.push(Reason::NetnsGone);
    }
    if why.is_empty() {
        Verdict::Live
    } else if allocated_at_unix != 0 && now_unix.saturating_sub(allocated_at_unix) < min_age_s {
        Verdict::InFlight
    } else {
        Verdict::Stale(why)
    }
}

/// One stale allocation, as the table and `--json` show it.
#[derive(Serialize, Debug)]
pub struct StaleRow {
    #[serde(flatten)]
    pub allocation: AddressRow,
    pub host_end: String,
    pub why: Vec<Reason>,
    /// With `--release`: whether controld freed it (false: it was already free).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StaleRow {
    /// The WHY column: what is missing, and a host end left behind.
    pub fn why_text(&self) -> String {
        let netns = || match self.allocation.netns.as_str() {
            "" => "netns gone".to_string(),
            path => format!("netns {path} gone"),
        };
        match self.why.as_slice() {
            [Reason::HostEndGone] => format!("host end {} gone", self.host_end),
            [Reason::NetnsGone] => format!("{} (host end {} remains)", netns(), self.host_end),
            _ => format!("host end {} gone, {}", self.host_end, netns()),
        }
    }
}

#[derive(Serialize, Debug, Default)]
pub struct Report {
    /// Allocations looked at.
    pub checked: usize,
    /// Left alone: made less than a minute ago.
    pub in_flight: usize,
    pub stale: Vec<StaleRow>,
    /// Host ends and /32 routes no allocation explains (reported only:
    /// `ip link del <host end>` removes one, and its routes with it).
    pub orphans: orphans::Orphans,
    /// Addresses in blocks etcd does not give to this host (reported only).
    pub blocks: Vec<blocks::BlockIssue>,
}

/// Sorts `allocations` by [`judge`], with `link_exists` and `path_exists`
/// answering for this host.
pub fn sort(
    allocations: Vec<Allocation>,
    now_unix: i64,
    min_age_s: i64,
    link_exists: impl Fn(&str) -> bool,
    path_exists: impl Fn(&str) -> bool,
) -> Report {
    let mut report = Report {
        checked: allocations.len(),
        ..Report::default()
    };
    for a in allocations {
        let row = AddressRow::from(a);
        let host_end = pod::host_end(&row.container_id, &row.ifname);
        let seen = Seen {
            host_end: link_exists(&host_end),
            netns: (!row.netns.is_empty()).then(|| path_exists(&row.netns)),
        };
        match judge(row.allocated_at_unix, now_unix, seen, min_age_s) {
            Verdict::Live => {}
            Verdict::InFlight => report.in_flight += 1,
            Verdict::Stale(why) => report.stale.push(StaleRow {
                allocation: row,
                host_end,
                why,
                released: None,
                error: None,
            }),
        }
    }
    report
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Only a definite "not there" counts; a path we cannot look at is kept.
fn path_exists(path: &str) -> bool {
    !matches!(Path::new(path).try_exists(), Ok(false))
}

pub async fn run(cli: &Cli, release: bool, min_age: Duration) -> Result<bool> {
    // Without sysfs every host end would look gone.
    if !link_exists("lo") {
        bail!("/sys/class/net/lo is missing: mount sysfs, and run this in the host's network namespace");
    }
    let mut client = cli.ipam().await?;
    let allocations = client
        .addresses(AddressesRequest {})
        .await?
        .into_inner()
        .allocations;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let min_age_s = min_age.as_secs() as i64;
    let held: Vec<(Ipv4Addr, String, String)> = allocations
        .iter()
        .filter_map(|a| {
            let ip = Ipv4Addr::try_from(a.address.as_ref()?).ok()?;
            let att = a.attachment.as_ref()?;
            Some((ip, att.container_id.clone(), att.ifname.clone()))
        })
        .collect();
    let links: Vec<String> = std::fs::read_dir("/sys/class/net")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let routes = orphans::parse_proc_route(&std::fs::read_to_string("/proc/net/route")?);
    let etcd_blocks = client.blocks(BlocksRequest {}).await?.into_inner().blocks;
    let subnet = client
        .status(StatusRequest {})
        .await?
        .into_inner()
        .default_pool
        .and_then(|n| Ipv4Net::try_from(&n).ok());
    let block_issues = blocks::compare(&in_blocks(&allocations), &from_etcd(&etcd_blocks), subnet);
    let mut report = sort(allocations, now, min_age_s, link_exists, path_exists);
    report.orphans = orphans::find(&held, &links, &routes);
    report.blocks = block_issues;
    if release {
        for s in &mut report.stale {
            let attachment = Attachment {
                container_id: s.allocation.container_id.clone(),
                ifname: s.allocation.ifname.clone(),
            };
            let req = ReleaseRequest {
                attachment: Some(attachment),
            };
            match client.release(req).await {
                Ok(reply) => s.released = Some(reply.into_inner().released),
                Err(e) => s.error = Some(e.message().to_string()),
            }
        }
    }
    let ok = report.orphans.is_empty()
        && report.blocks.is_empty()
        && if release {
            report.stale.iter().all(|s| s.error.is_none())
        } else {
            report.stale.is_empty()
        };
    if cli.json {
        print_json(&report);
    } else {
        print_table(&report, release, min_age_s);
    }
    Ok(ok)
}

/// The allocations as [`blocks::compare`] takes them (those with an address
/// and a block).
fn in_blocks(allocations: &[Allocation]) -> Vec<blocks::Held> {
    allocations
        .iter()
        .filter_map(|a| {
            let att = a.attachment.as_ref()?;
            Some(blocks::Held {
                address: Ipv4Addr::try_from(a.address.as_ref()?).ok()?,
                pool: a.pool.clone(),
                block: Ipv4Net::try_from(a.block.as_ref()?).ok()?,
                pod: format!("{}/{}", short_id(&att.container_id), att.ifname),
            })
        })
        .collect()
}

fn from_etcd(reply: &[kolach_proto::ipam::Block]) -> Vec<blocks::EtcdBlock> {
    reply
        .iter()
        .filter_map(|b| {
            Some(blocks::EtcdBlock {
                block: Ipv4Net::try_from(b.block.as_ref()?).ok()?,
                pool: b.pool.clone(),
                holder: Ipv4Addr::try_from(b.public_ip.as_ref()?).ok()?,
                is_self: b.is_self,
            })
        })
        .collect()
}

fn print_table(report: &Report, release: bool, min_age_s: i64) {
    if report.in_flight > 0 {
        eprintln!(
            "{} allocations made in the last {}s not judged (ADD may be in flight)",
            report.in_flight, min_age_s
        );
    }
    for l in &report.orphans.links {
        println!("host end {l} has no allocation (remove it: ip link del {l})");
    }
    for r in &report.orphans.routes {
        println!(
            "route {}/32 dev {} has no allocation of that host end",
            r.address, r.dev
        );
    }
    for b in &report.blocks {
        println!("{}", b.text());
    }
    if report.stale.is_empty() {
        println!("no stale allocations ({} checked)", report.checked);
        return;
    }
    let mut header = vec!["ADDRESS", "POOL", "CONTAINER", "IFNAME", "WHY"];
    if release {
        header.push("RELEASED");
    }
    let cells: Vec<Vec<String>> = report
        .stale
        .iter()
        .map(|s| {
            let a = &s.allocation;
            let mut row = vec![
                a.address.clone().unwrap_or_else(|| "?".into()),
                a.pool.clone(),
                short_id(&a.container_id),
                a.ifname.clone(),
                s.why_text(),
            ];
            if release {
                row.push(match (&s.error, s.released) {
                    (Some(e), _) => format!("no: {e}"),
                    (None, Some(false)) => "already free".into(),
                    (None, _) => "yes".into(),
                });
            }
            row
        })
        .collect();
    println!("{}", table::render(&header, &cells));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const NOW: i64 = 1_700_000_000;
    const OLD: i64 = NOW - 3600;

    fn seen(host_end: bool, netns: Option<bool>) -> Seen {
        Seen { host_end, netns }
    }

    #[test]
    fn live_pods_are_not_stale() {
        assert_eq!(judge(OLD, NOW, seen(true, Some(true)), 60), Verdict::Live);
        assert_eq!(judge(OLD, NOW, seen(true, None), 60), Verdict::Live);
    }

    #[test]
    fn either_missing_part_makes_it_stale() {
        use Reason::*;
        let stale = |s| judge(OLD, NOW, s, 60);
        assert_eq!(stale(seen(false, None)), Verdict::Stale(vec![HostEndGone]));
        assert_eq!(
            stale(seen(false, Some(true))),
            Verdict::Stale(vec![HostEndGone])
        );
        assert_eq!(
            stale(seen(true, Some(false))),
            Verdict::Stale(vec![NetnsGone])
        );
        assert_eq!(
            stale(seen(false, Some(false))),
            Verdict::Stale(vec![HostEndGone, NetnsGone])
        );
    }

    #[test]
    fn young_allocations_wait_for_their_add() {
        let gone = seen(false, Some(false));
        assert_eq!(judge(NOW - 5, NOW, gone, 60), Verdict::InFlight);
        assert_eq!(
            judge(NOW + 5, NOW, gone, 60),
            Verdict::InFlight,
            "clock skew"
        );
        assert!(matches!(judge(NOW - 60, NOW, gone, 60), Verdict::Stale(_)));
        assert!(
            matches!(judge(0, NOW, gone, 60), Verdict::Stale(_)),
            "unknown age"
        );
        assert_eq!(judge(NOW, NOW, seen(true, None), 60), Verdict::Live);
    }

    fn alloc(cid: &str, netns: &str, at: i64) -> Allocation {
        Allocation {
            attachment: Some(Attachment {
                container_id: cid.into(),
                ifname: "eth0".into(),
            }),
            address: Some("10.50.18.7".parse::<IpAddr>().unwrap().into()),
            pool: "default".into(),
            netns: netns.into(),
            allocated_at_unix: at,
            ..Default::default()
        }
    }

    #[test]
    fn sort_asks_for_the_computed_host_end_and_the_recorded_netns() {
        let live = pod::host_end("live", "eth0");
        let report = sort(
            vec![
                alloc("live", "/run/netns/a", OLD),
                alloc("gone", "/run/netns/b", OLD),
                alloc("nons", "", OLD),
                alloc("young", "/run/netns/b", NOW - 1),
            ],
            NOW,
            60,
            |name| name == live,
            |path| path == "/run/netns/a",
        );
        assert_eq!(report.checked, 4);
        assert_eq!(report.in_flight, 1);
        let ids: Vec<&str> = report
            .stale
            .iter()
            .map(|s| s.allocation.container_id.as_str())
            .collect();
        assert_eq!(ids, ["gone", "nons"]);
        let gone = &report.stale[0];
        assert_eq!(gone.host_end, pod::host_end("gone", "eth0"));
        assert_eq!(gone.why, [Reason::HostEndGone, Reason::NetnsGone]);
        assert_eq!(
            gone.why_text(),
            format!("host end {} gone, netns /run/netns/b gone", gone.host_end)
        );
        assert_eq!(report.stale[1].why, [Reason::HostEndGone]);
    }

    #[test]
    fn json_rows_carry_the_allocation_and_the_reasons() {
        let mut report = sort(vec![alloc("c1", "/x", OLD)], NOW, 60, |_| true, |_| false);
        report.stale[0].released = Some(true);
        let v = serde_json::to_value(&report).unwrap();
        let row = &v["stale"][0];
        assert_eq!(row["address"], "10.50.18.7");
        assert_eq!(row["container_id"], "c1");
        assert_eq!(row["why"], serde_json::json!(["netns_gone"]));
        assert_eq!(row["released"], true);
        assert!(row.get("error").is_none());
        let s = &report.stale[0];
        assert_eq!(
            s.why_text(),
            format!("netns /x gone (host end {} remains)", s.host_end)
        );
    }
}
