//! `kolachctl addresses`: the pod addresses this host has given out.

use anyhow::Result;
use kolach_proto::ipam::{AddressesRequest, StatusRequest};

use crate::cli::Cli;
use crate::clients::{print_json, Connect};
use crate::ipam_view::{short_id, AddressRow, TroubledRow};
use crate::table;

pub async fn run(cli: &Cli) -> Result<bool> {
    let mut client = cli.ipam().await?;
    let all = client
        .addresses(AddressesRequest {})
        .await?
        .into_inner()
        .allocations;
    // Addresses in a block this host can no longer use are marked.
    let troubled = client
        .status(StatusRequest {})
        .await?
        .into_inner()
        .troubled_blocks;
    let mut rows: Vec<AddressRow> = all.into_iter().map(AddressRow::from).collect();
    for t in troubled.into_iter().map(TroubledRow::from) {
        for r in rows.iter_mut().filter(|r| r.block == t.block) {
            r.trouble = Some(t.trouble);
        }
    }
    if cli.json {
        print_json(&rows);
        return Ok(true);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|a| {
            vec![
                a.address.clone().unwrap_or_else(|| "?".into()),
                a.pool.clone(),
                short_id(&a.container_id),
                a.ifname.clone(),
                a.pod(),
                match a.trouble {
                    Some("lost") => "block LOST to another host".into(),
                    Some(_) => "block outside its pool".into(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(
            &["ADDRESS", "POOL", "CONTAINER", "IFNAME", "POD", "NOTE"],
            &cells
        )
    );
    Ok(true)
}
