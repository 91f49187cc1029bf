//! EC2's XML answers (API version 2016-11-15), read into the few values the
//! backend needs. Element names are matched without their namespace, and
//! only among a node's direct children where EC2 nests the same name
//! (an instance's `subnetId` and its interfaces' `subnetId`).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use roxmltree::{Document, Node};

use super::AwsError;

/// One instance, as DescribeInstances shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub instance_id: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub interfaces: Vec<Interface>,
}

/// One of the instance's network interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub interface_id: String,
    pub subnet_id: String,
    pub vpc_id: String,
    /// Every private IPv4 address on it, the primary first.
    pub private_ips: Vec<Ipv4Addr>,
    pub source_dest_check: bool,
}

/// One route table with its routes and subnet associations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    pub route_table_id: String,
    pub vpc_id: String,
    pub routes: Vec<Route>,
    pub main: bool,
}

/// One route. `destination` is None for what the backend never touches:
/// IPv6 (`destinationIpv6CidrBlock`) and prefix-list destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Option<Ipv4Net>,
    /// The destination as AWS wrote it, for log lines.
    pub destination_text: String,
    pub instance_id: Option<String>,
    pub interface_id: Option<String>,
    /// Any other target (gateway, NAT, peering, …), for log lines.
    pub other_target: Option<String>,
    /// `active` or `blackhole`.
    pub blackhole: bool,
    /// `CreateRoute` (a route someone made), `CreateRouteTable` (local),
    /// `EnableVgwRoutePropagation`: only the first can be deleted.
    pub origin: String,
}

/// An EC2 error answer:
/// `<Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub request_id: String,
}

fn parse(body: &str) -> Result<Document<'_>, AwsError> {
    Document::parse(body).map_err(|e| AwsError::Parse(format!("not XML: {e}")))
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn text(n: Node, name: &str) -> Option<String> {
    child(n, name)
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The `item`s of the set `name` under `n`.
fn items<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Vec<Node<'a, 'i>> {
    child(n, name)
        .map(|set| {
            set.children()
                .filter(|c| c.is_element() && c.tag_name().name() == "item")
                .collect()
        })
        .unwrap_or_default()
}

/// Reads an error answer; None when `body` is not one.
pub fn api_error(body: &str) -> Option<ApiError> {
    let doc = Document::parse(body).ok()?;
    let root = doc.root_element();
    let error = root
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "Error")?;
    let request_id = root
        .descendants()
        .find(|n| {
            n.is_element() && matches!(n.tag_name().name(), "RequestID" | "RequestId" | "requestId")
        })
        .and_then(|n| n.text())
        .unwrap_or_default()
        .trim()
        .to_string();
    Some(ApiError {
        code: text(error, "Code").unwrap_or_else(|| "Unknown".into()),
        message: text(error, "Message").unwrap_or_default(),
        request_id,
    })
}

/// DescribeInstancesResponse → the instances in it.
pub fn instances(body: &str) -> Result<Vec<Instance>, AwsError> {
    let doc = parse(body)?;
    let mut out = Vec::new();
    for reservation in items(doc.root_element(), "reservationSet") {
        for inst in items(reservation, "instancesSet") {
            let interfaces = items(inst, "networkInterfaceSet")
                .into_iter()
                .map(interface)
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Instance {
                instance_id: text(inst, "instanceId").unwrap_or_default(),
                vpc_id: text(inst, "vpcId").unwrap_or_default(),
                subnet_id: text(inst, "subnetId").unwrap_or_default(),
                interfaces,
            });
        }
    }
    Ok(out)
}

fn interface(n: Node) -> Result<Interface, AwsError> {
    let mut private_ips = Vec::new();
    let mut add = |s: Option<String>| {
        if let Some(ip) = s.and_then(|s| s.parse::<Ipv4Addr>().ok()) {
            if !private_ips.contains(&ip) {
                private_ips.push(ip);
            }
        }
    };
    add(text(n, "privateIpAddress"));
    for a in items(n, "privateIpAddressesSet") {
        add(text(a, "privateIpAddress"));
    }
    Ok(Interface {
        interface_id: text(n, "networkInterfaceId").ok_or_else(|| {
            AwsError::Parse("a network interface without networkInterfaceId".into())
        })?,
        subnet_id: text(n, "subnetId").unwrap_or_default(),
        vpc_id: text(n, "vpcId").unwrap_or_default(),
        private_ips,
        // Absent means AWS's default: checked.
        source_dest_check: text(n, "sourceDestCheck").is_none_or(|v| v != "false"),
    })
}

/// DescribeRouteTablesResponse → the tables in it.
pub fn route_tables(body: &str) -> Result<Vec<RouteTable>, AwsError> {
    let doc = parse(body)?;
    let mut out = Vec::new();
    for t in items(doc.root_element(), "routeTableSet") {
        let id = text(t, "routeTableId")
            .ok_or_else(|| AwsError::Parse("a route table without routeTableId".into()))?;
        out.push(RouteTable {
            route_table_id: id,
            vpc_id: text(t, "vpcId").unwrap_or_default(),
            routes: items(t, "routeSet").into_iter().map(route).collect(),
            main: items(t, "associationSet")
                .into_iter()
                .any(|a| text(a, "main").as_deref() == Some("true")),
        });
    }
    Ok(out)
}

fn route(n: Node) -> Route {
    let v4 = text(n, "destinationCidrBlock");
    let destination_text = v4
        .clone()
        .or_else(|| text(n, "destinationIpv6CidrBlock"))
        .or_else(|| text(n, "destinationPrefixListId"))
        .unwrap_or_default();
    let other_target = [
        "gatewayId",
        "natGatewayId",
        "transitGatewayId",
        "vpcPeeringConnectionId",
        "egressOnlyInternetGatewayId",
        "localGatewayId",
        "carrierGatewayId",
        "coreNetworkArn",
    ]
    .iter()
    .find_map(|k| text(n, k));
    Route {
        destination: v4.and_then(|s| s.parse().ok()),
        destination_text,
        instance_id: text(n, "instanceId"),
        interface_id: text(n, "networkInterfaceId"),
        other_target,
        blackhole: text(n, "state").as_deref() == Some("blackhole"),
        origin: text(n, "origin").unwrap_or_default(),
    }
}

/// DescribeNetworkInterfaceAttribute (Attribute=sourceDestCheck) → its value.
pub fn source_dest_check(body: &str) -> Result<bool, AwsError> {
    let doc = parse(body)?;
    let v = child(doc.root_element(), "sourceDestCheck")
        .and_then(|n| text(n, "value"))
        .ok_or_else(|| AwsError::Parse("no sourceDestCheck in the answer".into()))?;
    Ok(v == "true")
}

/// The `<return>true</return>` of a write call; false when AWS said false.
pub fn returned_true(body: &str) -> bool {
    Document::parse(body)
        .ok()
        .and_then(|d| text(d.root_element(), "return"))
        .is_none_or(|v| v == "true")
}

#[cfg(test)]
mod tests;
