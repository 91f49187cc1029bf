//! `kolachctl routes`: the table kolach-dataplaned forwards with.

use anyhow::Result;
use kolach_proto::dataplane::RoutesRequest;
use serde::Serialize;

use crate::cli::{print_json, Cli};
use crate::table;
use crate::view::{RouteRow, Version};

#[derive(Serialize)]
struct Routes {
    version: Option<Version>,
    routes: Vec<RouteRow>,
}

pub async fn run(cli: &Cli) -> Result<bool> {
    let mut client = cli.dataplaned().await?;
    let reply = client.routes(RoutesRequest {}).await?.into_inner();
    let view = Routes {
        version: reply.version.as_ref().map(Version::from),
        routes: reply.routes.into_iter().map(RouteRow::from).collect(),
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
    Ok(true)
}
