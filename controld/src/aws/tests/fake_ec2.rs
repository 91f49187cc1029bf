//! The fake's EC2 side: the signature checked as AWS checks it, the calls
//! the backend makes, answers in EC2's XML.

use std::collections::BTreeMap;
use std::time::SystemTime;

use ipnet::Ipv4Net;

use super::fake::{FakeRoute, FakeTable, Req, State, ENI, INSTANCE, REGION};
use crate::aws::sigv4;

pub(super) fn error(status: u16, code: &str, message: &str) -> (u16, String) {
    (
        status,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
             <Message>{message}</Message></Error></Errors><RequestID>req-1</RequestID></Response>"
        ),
    )
}

fn form(body: &[u8]) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// Recomputes the signature from what arrived, with the key the fake
/// expects: what AWS does.
fn signature_ok(req: &Req, s: &State) -> Result<(), String> {
    let auth = req.header("authorization").ok_or("no Authorization")?;
    let signed = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .ok_or("no SignedHeaders")?;
    let credential = auth
        .split("Credential=")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .ok_or("no Credential")?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5
        || scope[0] != s.key.access_key_id
        || scope[2] != REGION
        || scope[3] != "ec2"
    {
        return Err(format!("credential scope {credential}"));
    }
    let headers: Vec<(String, String)> = signed
        .split(';')
        .map(|h| (h.to_string(), req.header(h).unwrap_or_default().to_string()))
        .collect();
    if s.key.session_token.is_some()
        && req.header("x-amz-security-token") != s.key.session_token.as_deref()
    {
        return Err("session token missing or wrong".into());
    }
    let date = req.header("x-amz-date").ok_or("no x-amz-date")?;
    let when = parse_amz_date(date).ok_or("bad x-amz-date")?;
    let got = sigv4::sign(
        &s.key,
        REGION,
        "ec2",
        when,
        &sigv4::Request {
            method: &req.method,
            path: &req.path,
            query: "",
            headers,
            body: &req.body,
        },
    );
    if got.authorization == auth {
        Ok(())
    } else {
        Err(format!(
            "signature: sent {auth}, expected {}",
            got.authorization
        ))
    }
}

fn parse_amz_date(d: &str) -> Option<SystemTime> {
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        d.get(0..4)?,
        d.get(4..6)?,
        d.get(6..8)?,
        d.get(9..11)?,
        d.get(11..13)?,
        d.get(13..15)?
    );
    crate::aws::creds::parse_utc(&iso)
}

pub(super) fn ec2(req: &Req, s: &mut State) -> (u16, String) {
    let f = form(&req.body);
    let action = f.get("Action").cloned().unwrap_or_default();
    s.calls.push(action.clone());
    if f.get("Version").map(String::as_str) != Some("2016-11-15") {
        return error(400, "InvalidParameterValue", "Version");
    }
    if let Err(e) = signature_ok(req, s) {
        s.refused.push(e);
        return error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match",
        );
    }
    if s.throttle > 0 {
        s.throttle -= 1;
        return error(503, "RequestLimitExceeded", "Request limit exceeded.");
    }
    let ok = |a: &str| {
        (
            200,
            format!("<{a}Response><requestId>r</requestId><return>true</return></{a}Response>"),
        )
    };
    match action.as_str() {
        "DescribeInstances" => {
            if f.get("InstanceId.1").map(String::as_str) != Some(INSTANCE) {
                return error(400, "InvalidInstanceID.NotFound", "no such instance");
            }
            (200, describe_instances(s))
        }
        "DescribeRouteTables" => {
            let ids: Vec<&String> = f
                .iter()
                .filter(|(k, _)| k.starts_with("RouteTableId."))
                .map(|(_, v)| v)
                .collect();
            for id in &ids {
                if !s.tables.iter().any(|t| &t.id == *id) {
                    return error(
                        400,
                        "InvalidRouteTableID.NotFound",
                        &format!("The routeTable ID '{id}' does not exist"),
                    );
                }
            }
            let filter = |n: u32| {
                f.get(&format!("Filter.{n}.Name")).map(|name| {
                    (
                        name.clone(),
                        f.get(&format!("Filter.{n}.Value.1"))
                            .cloned()
                            .unwrap_or_default(),
                    )
                })
            };
            let filters: Vec<(String, String)> = (1..=3).filter_map(filter).collect();
            let chosen: Vec<&FakeTable> = s
                .tables
                .iter()
                .filter(|t| ids.is_empty() || ids.contains(&&t.id))
                .filter(|t| {
                    filters.iter().all(|(name, value)| match name.as_str() {
                        "association.subnet-id" => t.subnet.as_deref() == Some(value),
                        "association.main" => t.main == (value == "true"),
                        "vpc-id" => value == "vpc-1",
                        _ => false,
                    })
                })
                .collect();
            (200, describe_route_tables(&chosen))
        }
        "ModifyNetworkInterfaceAttribute" => {
            if f.get("NetworkInterfaceId").map(String::as_str) != Some(ENI)
                || f.get("SourceDestCheck.Value").map(String::as_str) != Some("false")
            {
                return error(400, "InvalidParameterValue", "bad modify");
            }
            s.source_dest_check = false;
            ok(&action)
        }
        "CreateRoute" | "ReplaceRoute" | "DeleteRoute" => {
            let tid = f.get("RouteTableId").cloned().unwrap_or_default();
            let dest = f.get("DestinationCidrBlock").cloned().unwrap_or_default();
            let eni = f.get("NetworkInterfaceId").cloned();
            let Some(t) = s.tables.iter_mut().find(|t| t.id == tid) else {
                return error(400, "InvalidRouteTableID.NotFound", "no table");
            };
            let at = t.routes.iter().position(|r| r.dest == dest);
            match (action.as_str(), at) {
                ("CreateRoute", Some(_)) => return error(400, "RouteAlreadyExists", "exists"),
                ("CreateRoute", None) if t.routes.len() >= t.limit => {
                    return error(400, "RouteLimitExceeded", &format!("The maximum number of routes has been reached for the route table '{tid}'."))
                }
                ("CreateRoute", None) => t.routes.push(FakeRoute { dest, eni, blackhole: false }),
                ("ReplaceRoute", Some(i)) => t.routes[i] = FakeRoute { dest, eni, blackhole: false },
                ("DeleteRoute", Some(i)) => {
                    t.routes.remove(i);
                }
                _ => return error(400, "InvalidRoute.NotFound", "no route"),
            }
            ok(&action)
        }
        _ => error(400, "InvalidAction", "unknown action"),
    }
}

fn describe_instances(s: &State) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
<requestId>r</requestId><reservationSet><item><reservationId>r-1</reservationId><instancesSet><item>
<instanceId>{INSTANCE}</instanceId><subnetId>subnet-1</subnetId><vpcId>vpc-1</vpcId>
<privateIpAddress>10.0.0.9</privateIpAddress><sourceDestCheck>true</sourceDestCheck>
<networkInterfaceSet>
<item><networkInterfaceId>eni-0primary</networkInterfaceId><subnetId>subnet-0</subnetId><vpcId>vpc-1</vpcId>
<privateIpAddress>10.0.0.9</privateIpAddress><sourceDestCheck>true</sourceDestCheck></item>
<item><networkInterfaceId>{ENI}</networkInterfaceId><subnetId>subnet-1</subnetId><vpcId>vpc-1</vpcId>
<privateIpAddress>{}</privateIpAddress><sourceDestCheck>{}</sourceDestCheck>
<privateIpAddressesSet><item><privateIpAddress>{}</privateIpAddress><primary>true</primary></item></privateIpAddressesSet></item>
</networkInterfaceSet></item></instancesSet></item></reservationSet></DescribeInstancesResponse>"#,
        s.private_ip, s.source_dest_check, s.private_ip
    )
}

fn describe_route_tables(tables: &[&FakeTable]) -> String {
    let mut out = String::from(
        "<DescribeRouteTablesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r</requestId><routeTableSet>",
    );
    for t in tables {
        out += &format!(
            "<item><routeTableId>{}</routeTableId><vpcId>vpc-1</vpcId><routeSet>",
            t.id
        );
        out += "<item><destinationCidrBlock>10.0.0.0/16</destinationCidrBlock><gatewayId>local</gatewayId><state>active</state><origin>CreateRouteTable</origin></item>";
        out += "<item><destinationIpv6CidrBlock>2001:db8::/56</destinationIpv6CidrBlock><networkInterfaceId>eni-gone6</networkInterfaceId><state>blackhole</state><origin>CreateRoute</origin></item>";
        for r in &t.routes {
            let dest: Option<Ipv4Net> = r.dest.parse().ok();
            assert!(dest.is_some(), "fake routes are IPv4");
            out += &format!(
                "<item><destinationCidrBlock>{}</destinationCidrBlock>{}<state>{}</state><origin>CreateRoute</origin></item>",
                r.dest,
                r.eni.as_ref().map(|e| format!("<networkInterfaceId>{e}</networkInterfaceId>")).unwrap_or_default(),
                if r.blackhole { "blackhole" } else { "active" }
            );
        }
        out += "</routeSet><associationSet>";
        if t.main {
            out += &format!(
                "<item><routeTableId>{}</routeTableId><main>true</main></item>",
                t.id
            );
        }
        if let Some(sn) = &t.subnet {
            out += &format!("<item><routeTableId>{}</routeTableId><subnetId>{sn}</subnetId><main>false</main></item>", t.id);
        }
        out += "</associationSet></item>";
    }
    out + "</routeTableSet></DescribeRouteTablesResponse>"
}
