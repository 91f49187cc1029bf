//! `kolachctl blocks`: every host's pool blocks.

use anyhow::Result;
use kolach_proto::ipam::BlocksRequest;

use crate::cli::Cli;
use crate::clients::{print_json, Connect};
use crate::ipam_view::BlockRow;
use crate::table;

pub async fn run(cli: &Cli) -> Result<bool> {
    let mut client = cli.ipam().await?;
    let blocks = client.blocks(BlocksRequest {}).await?.into_inner().blocks;
    let rows: Vec<BlockRow> = blocks.into_iter().map(BlockRow::from).collect();
    if cli.json {
        print_json(&rows);
        return Ok(true);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|b| {
            vec![
                b.block.clone().unwrap_or_else(|| "?".into()),
                b.pool.clone(),
                b.public_ip.clone().unwrap_or_else(|| "?".into()),
                match b.in_use {
                    Some(n) => format!("{n}/{}", b.size),
                    None => "-".into(),
                },
                if b.is_self { "*".into() } else { String::new() },
                match b.trouble {
                    Some("lost") => "LOST: this host's pods have addresses in it".into(),
                    Some("outside_pool") => "outside its pool: given back once empty".into(),
                    Some("pool_gone") => "pool gone: given back once empty".into(),
                    _ => String::new(),
                },
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(&["BLOCK", "POOL", "HOST", "IN USE", "SELF", "NOTE"], &cells)
    );
    Ok(true)
}
