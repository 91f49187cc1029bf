//! `kolachctl addresses`: the pod addresses this host has given out.

use anyhow::Result;
use kolach_proto::ipam::AddressesRequest;

use crate::cli::{print_json, Cli};
use crate::ipam_view::{short_id, AddressRow};
use crate::table;

pub async fn run(cli: &Cli) -> Result<bool> {
    let mut client = cli.ipam().await?;
    let all = client
        .addresses(AddressesRequest {})
        .await?
        .into_inner()
        .allocations;
    let rows: Vec<AddressRow> = all.into_iter().map(AddressRow::from).collect();
    if cli.json {
        print_json(&rows);
        return Ok(true);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|a| {
            let pod = match (a.pod_namespace.as_str(), a.pod_name.as_str()) {
                ("", "") => "-".to_string(),
                ("", name) => name.to_string(),
                (ns, name) => format!("{ns}/{name}"),
            };
            vec![
                a.address.clone().unwrap_or_else(|| "?".into()),
                a.pool.clone(),
                short_id(&a.container_id),
                a.ifname.clone(),
                pod,
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(&["ADDRESS", "POOL", "CONTAINER", "IFNAME", "POD"], &cells)
    );
    Ok(true)
}
