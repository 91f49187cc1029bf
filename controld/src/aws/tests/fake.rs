//! A fake EC2 and instance metadata service on 127.0.0.1: one tiny
//! HTTP/1.1 server (a connection per request, as the client makes them)
//! that keeps one instance and its route tables and records the calls.
//! Here: the server, its state and the metadata side; the EC2 side is
//! [`super::fake_ec2`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::fake_ec2::ec2;
use crate::aws::sigv4::{self, Key};

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

pub(super) struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
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
