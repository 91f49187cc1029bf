//! `kolachctl routes`: the table kolach-dataplaned forwards with, and what
//! it exports for a routing daemon.

use anyhow::Result;
use kolach_proto::dataplane::RoutesRequest;
use serde::Serialize;

use crate::cli::Cli;
use crate::clients::{print_json, Connect};
use crate::table;
use crate::view::{RouteRow, Version};

#[derive(Serialize)]
struct Routes {
    version: Option<Version>,
    routes: Vec<RouteRow>,
    /// Where this host's own subnet and blocks are exported (0: nowhere).
    export_table: u32,
    exported: Vec<String>,
}

pub async fn run(cli: &Cli) -> Result<bool> {
    let mut client = cli.dataplaned().await?;
    let reply = client.routes(RoutesRequest {}).await?.into_inner();
    let view = Routes {
        version: reply.version.as_ref().map(Version::from),
        routes: reply.routes.into_iter().map(RouteRow::from).collect(),
        export_table: reply.export_table,
        exported: reply
            .exported
            .into_iter()
            .map(|n| crate::view::net(&Some(n)).unwrap_or_else(|| "?".into()))
            .collect(),
    };
    if cli.json {
        print_json(&view);
        return Ok(true);
    }
    let cells: Vec<Vec<String>> = view
        .routes
        .iter()
        .map(|r| {
            vec![
                r.subnet.clone().unwrap_or_else(|| "?".into()),
                r.public_ip.clone().unwrap_or_else(|| "?".into()),
                r.vtep_mac.clone().unwrap_or_default(),
                r.blocks.join(","),
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(&["SUBNET", "VIA", "VTEP MAC", "BLOCKS"], &cells)
    );
    if view.version.is_some() {
        match view.export_table {
            0 => println!("export: off"),
            t => println!(
                "exported to table {t} (dev lo proto 107): {}",
                view.exported.join(", ")
            ),
        }
    }
    Ok(true)
}
