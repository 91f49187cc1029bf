//! `kolachctl leases`: every lease and reservation under the etcd prefix.

use anyhow::Result;
use kolach_proto::control::LeasesRequest;

use crate::cli::Cli;
use crate::clients::{print_json, Connect};
use crate::table;
use crate::view::{duration, LeaseRow};

pub async fn run(cli: &Cli) -> Result<bool> {
    let mut client = cli.controld().await?;
    let reply = client.leases(LeasesRequest {}).await?.into_inner();
    let rows: Vec<LeaseRow> = reply.leases.into_iter().map(LeaseRow::from).collect();
    if cli.json {
        print_json(&rows);
        return Ok(true);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|l| {
            vec![
                l.subnet.clone().unwrap_or_else(|| "?".into()),
                l.public_ip.clone().unwrap_or_else(|| "?".into()),
                l.backend.clone(),
                match l.expires_in_seconds {
                    Some(s) => duration(s),
                    None => "reserved".into(),
                },
                if l.is_self { "*".into() } else { String::new() },
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(
            &["SUBNET", "PUBLIC IP", "BACKEND", "EXPIRES", "SELF"],
            &cells
        )
    );
    Ok(true)
}
