//! `kolachctl pools` and `kolachctl pool create|add-subnet|delete`.

use anyhow::Result;
use kolach_proto::ipam::{
    AddPoolSubnetRequest, CreatePoolRequest, DeletePoolRequest, PoolsRequest,
};

use crate::cli::{Cli, PoolCommand};
use crate::clients::{print_json, Connect};
use crate::ipam_view::PoolRow;
use crate::table;

pub async fn list(cli: &Cli) -> Result<bool> {
    let mut client = cli.ipam().await?;
    let pools = client.pools(PoolsRequest {}).await?.into_inner().pools;
    let rows: Vec<PoolRow> = pools.into_iter().map(PoolRow::from).collect();
    if cli.json {
        print_json(&rows);
        return Ok(true);
    }
    print_table(&rows);
    Ok(true)
}

fn print_table(rows: &[PoolRow]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|p| {
            // A pool without a usable definition has nothing to count.
            let blocks = if p.default || p.subnets.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "/{} {} of {} held ({} here, max {})",
                    p.block_len,
                    p.blocks_held,
                    p.blocks_total,
                    p.blocks_mine,
                    p.max_blocks_per_host
                )
            };
            vec![
                p.name.clone(),
                p.subnets.join(","),
                blocks,
                p.addresses_in_use.to_string(),
                p.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(&["POOL", "SUBNETS", "BLOCKS", "IN USE", "ERROR"], &cells)
    );
}

pub async fn edit(cli: &Cli, cmd: &PoolCommand) -> Result<bool> {
    let mut client = cli.ipam().await?;
    let pool = match cmd {
        PoolCommand::Create {
            name,
            subnets,
            block_len,
            max_blocks_per_host,
        } => Some(
            client
                .create_pool(CreatePoolRequest {
                    name: name.clone(),
                    subnets: subnets.iter().map(|s| (*s).into()).collect(),
                    block_len: block_len.map_or(0, u32::from),
                    max_blocks_per_host: max_blocks_per_host.unwrap_or(0),
                })
                .await
                .map_err(message)?
                .into_inner(),
        ),
        PoolCommand::AddSubnet { name, subnet } => Some(
            client
                .add_pool_subnet(AddPoolSubnetRequest {
                    name: name.clone(),
                    subnet: Some((*subnet).into()),
                })
                .await
                .map_err(message)?
                .into_inner(),
        ),
        PoolCommand::Delete { name } => {
            client
                .delete_pool(DeletePoolRequest { name: name.clone() })
                .await
                .map_err(message)?;
            None
        }
    };
    match pool.map(PoolRow::from) {
        Some(row) if cli.json => print_json(&row),
        Some(row) => print_table(&[row]),
        None if cli.json => print_json(&serde_json::json!({"deleted": true})),
        None => println!("deleted"),
    }
    Ok(true)
}

/// controld's sentence, without tonic's decoration.
fn message(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}
