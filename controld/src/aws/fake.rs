//! A fake EC2 and instance metadata service on 127.0.0.1, for the tests of
//! [`super::run`]: one tiny HTTP/1.1 server (a connection per request, as
//! the client makes them) that keeps one instance and its route tables,
//! checks every EC2 request's signature with the key it expects, and
//! records the calls.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::sigv4::{self, Key};

pub const INSTANCE: &str = "i-0fa4e0000000000c1";
pub const ENI: &str = "eni-0me";
pub const REGION: &str = "us-test-1";
pub const ROLE: &str = "kolach-node";
pub const TOKEN: &str = "imds-token-xyz";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRoute {
    pub dest: String,
    pub eni: Option<String>,
    pub blackhole: bool,
}

pub fn route(dest: &str, eni: &str, blackhole: bool) -> FakeRoute {
    FakeRoute {
        dest: dest.into(),
        eni: Some(eni.into()),
        blackhole,
    }
}

#[derive(Debug, Clone)]
pub struct FakeTable {
    pub id: String,
    pub subnet: Option<String>,
    pub main: bool,
    pub routes: Vec<FakeRoute>,
    /// Routes the table takes (AWS: 50 by default).
    pub limit: usize,
}

pub fn table(id: &str, subnet: Option<&str>, main: bool, routes: Vec<FakeRoute>) -> FakeTable {
    FakeTable {
        id: id.into(),
        subnet: subnet.map(str::to_string),
        main,
        routes,
        limit: 50,
    }
}

#[derive(Debug)]
pub struct State {
    /// The token call answered (else 405: IMDSv1 only).
    pub imds_v2: bool,
    /// The token call never answered (a hop limit of 1 seen from a
    /// container).
    pub token_hangs: bool,
    /// How long the role's key is good for.
    pub role_ttl: Duration,
    /// Role documents served.
    pub role_fetches: u32,
    /// The key requests must be signed with (the role's when the test
    /// gives no environment key).
    pub key: Key,
    pub private_ip: String,
    pub source_dest_check: bool,
    pub tables: Vec<FakeTable>,
    /// Answer the next this many EC2 calls with 503 RequestLimitExceeded.
    pub throttle: u32,
    /// Every EC2 action received, throttled ones included.
    pub calls: Vec<String>,
    pub token_puts: u32,
    pub gets_with_token: u32,
    pub gets_without_token: u32,
    /// Requests the fake refused for a bad signature or token.
    pub refused: Vec<String>,
}

pub struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

impl Fake {
    pub async fn start(state: State) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, shared.clone()));
            }
        });
        Fake { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn routes(&self, table: &str) -> Vec<FakeRoute> {
        let s = self.state.lock().unwrap();
        s.tables
            .iter()
            .find(|t| t.id == table)
            .unwrap()
            .routes
            .clone()
    }
}

struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn serve(mut conn: TcpStream, state: Arc<Mutex<State>>) {
    let Some(req) = read_request(&mut conn).await else {
        return;
    };
    let (status, body) = answer(&req, &mut state.lock().unwrap());
    if status == 0 {
        // Hang: keep the connection open, answer nothing.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return;
    }
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body.as_bytes()).await;
    let _ = conn.shutdown().await;
}

async fn read_request(conn: &mut TcpStream) -> Option<Req> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Req {
        method,
        path,
        headers,
        body,
    })
}

fn answer(req: &Req, s: &mut State) -> (u16, String) {
    if req.path == "/latest/api/token" && s.token_hangs {
        s.token_puts += 1;
        return (0, String::new());
    }
    if req.path.starts_with("/latest/") {
        imds(req, s)
    } else {
        ec2(req, s)
    }
}

fn imds(req: &Req, s: &mut State) -> (u16, String) {
    if req.method == "PUT" && req.path == "/latest/api/token" {
        s.token_puts += 1;
        if !s.imds_v2 {
            return (405, String::new());
        }
        if req.header("x-aws-ec2-metadata-token-ttl-seconds").is_none() {
            return (400, String::new());
        }
        return (200, TOKEN.into());
    }
    match req.header("x-aws-ec2-metadata-token") {
        Some(t) if t == TOKEN => s.gets_with_token += 1,
        Some(t) => {
            s.refused.push(format!("IMDS token {t}"));
            return (401, String::new());
        }
        None => s.gets_without_token += 1,
    }
    let role_doc = || {
        let exp = sigv4::amz_date(SystemTime::now() + s.role_ttl);
        let exp = format!(
            "{}-{}-{}T{}:{}:{}Z",
            &exp[0..4],
            &exp[4..6],
            &exp[6..8],
            &exp[9..11],
            &exp[11..13],
            &exp[13..15]
        );
        format!(
            r#"{{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"{}","SecretAccessKey":"{}","Token":"{}","Expiration":"{exp}"}}"#,
            s.key.access_key_id,
            s.key.secret_access_key,
            s.key.session_token.clone().unwrap_or_default()
        )
    };
    match req.path.as_str() {
        "/latest/meta-data/instance-id" => (200, INSTANCE.into()),
        "/latest/meta-data/placement/region" => (200, REGION.into()),
        "/latest/meta-data/iam/security-credentials/" => (200, format!("{ROLE}\n")),
        p if p == format!("/latest/meta-data/iam/security-credentials/{ROLE}") => {
            let doc = role_doc();
            s.role_fetches += 1;
            (200, doc)
        }
        _ => (404, String::new()),
    }
}

fn error(status: u16, code: &str, message: &str) -> (u16, String) {
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
    super::creds::parse_utc(&iso)
}

fn ec2(req: &Req, s: &mut State) -> (u16, String) {
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
