//! Test harness: a real etcd on loopback (random ports, temp data dir, killed
//! and removed on drop), controld instances run in-process through
//! `kolach_controld::run`, and a fake dataplane that acks every snapshot.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use clap::Parser;
use etcd_client::{Client, GetOptions, PutOptions};
use ipnet::Ipv4Net;
use kolach_proto::control::control_client::ControlClient;
use kolach_proto::control::{ControlStatus, LeasesReply, LeasesRequest, StatusRequest};
use kolach_proto::dataplane::dataplane_server::{Dataplane, DataplaneServer};
use kolach_proto::dataplane::{
    ApplyReply, DataplaneStatus, RoutesReply, RoutesRequest, Snapshot,
    StatusRequest as DpStatusRequest,
};
use kolach_proto::uds;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

pub const PREFIX: &str = "/coreos.com/network";

pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kolach_controld=info"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .init();
    });
}

/// A fresh temp directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("kolach-ctl-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A one-member etcd on 127.0.0.1.
pub struct Etcd {
    child: Option<Child>,
    pub url: String,
    peer: String,
    dir: TempDir,
    /// Extra etcd flags (TLS); with TLS the client URL is https.
    extra: Vec<String>,
    tls: Option<Tls>,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made
/// with the openssl command.
#[derive(Clone)]
pub struct Tls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Tls {
    pub fn make(dir: &Path) -> Tls {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=kolach-test-ca",
        ]);
        for who in ["server", "client"] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={who}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
            ]);
        }
        Tls {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

impl Etcd {
    pub async fn start() -> Etcd {
        Self::start_with(false).await
    }

    /// With `tls`, etcd serves https only and demands client certificates.
    pub async fn start_with(tls: bool) -> Etcd {
        let dir = TempDir::new("etcd");
        let (scheme, extra, tls) = if tls {
            let t = Tls::make(dir.path());
            let extra = vec![
                format!("--cert-file={}", t.server_cert.display()),
                format!("--key-file={}", t.server_key.display()),
                format!("--trusted-ca-file={}", t.ca.display()),
                "--client-cert-auth".to_string(),
            ];
            ("https", extra, Some(t))
        } else {
            ("http", vec![], None)
        };
        let url = format!("{scheme}://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let mut e = Etcd {
            child: None,
            url,
            peer,
            dir,
            extra,
            tls,
        };
        e.spawn().await;
        e
    }

    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    fn connect_options(&self) -> Option<etcd_client::ConnectOptions> {
        self.tls.as_ref().map(|t| {
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(
                    std::fs::read(&t.ca).unwrap(),
                ))
                .identity(etcd_client::Identity::from_pem(
                    std::fs::read(&t.client_cert).unwrap(),
                    std::fs::read(&t.client_key).unwrap(),
                ));
            etcd_client::ConnectOptions::new().with_tls(tls)
        })
    }

    async fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        for attempt in 0..5 {
            if attempt > 0 {
                // The ports were probably taken by a neighbour test meanwhile.
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                self.url = format!("{scheme}://127.0.0.1:{}", free_port());
                self.peer = format!("http://127.0.0.1:{}", free_port());
                let _ = std::fs::remove_dir_all(&data);
            }
            let mut child = Command::new("/usr/bin/etcd")
                .args([
                    "--name=t",
                    &format!("--data-dir={}", data.display()),
                    &format!("--listen-client-urls={}", self.url),
                    &format!("--advertise-client-urls={}", self.url),
                    &format!("--listen-peer-urls={}", self.peer),
                    &format!("--initial-advertise-peer-urls={}", self.peer),
                    &format!("--initial-cluster=t={}", self.peer),
                    "--logger=zap",
                    "--log-level=error",
                ])
                .args(&self.extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start /usr/bin/etcd");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if let Ok(mut c) = Client::connect([&self.url], self.connect_options()).await {
                    if c.get("health-probe", None).await.is_ok() {
                        self.child = Some(child);
                        return;
                    }
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("etcd did not come up at {}", self.url);
    }

    /// Kills etcd (data kept) to simulate an outage.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    pub async fn client(&self) -> Client {
        Client::connect([&self.url], self.connect_options())
            .await
            .unwrap()
    }

    pub async fn put_config(&self, json: &str) {
        self.client()
            .await
            .put(format!("{PREFIX}/config"), json, None)
            .await
            .unwrap();
    }

    /// Writes a reservation: a subnet key with no etcd lease.
    pub async fn reserve(&self, subnet: &str, public_ip: &str) {
        let key = format!("{PREFIX}/subnets/{}", subnet.replace('/', "-"));
        let v = format!(r#"{{"PublicIP":"{public_ip}","BackendType":"udp","BackendData":null}}"#);
        self.client().await.put(key, v, None).await.unwrap();
    }

    /// Writes a lease for a fake peer, attached to a fresh etcd lease.
    pub async fn fake_peer(&self, subnet: &str, value: &str) -> i64 {
        let mut c = self.client().await;
        let id = c.lease_grant(600, None).await.unwrap().id();
        let key = format!("{PREFIX}/subnets/{}", subnet.replace('/', "-"));
        c.put(key, value, Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        id
    }

    /// Every subnet key: (subnet, value, etcd lease id).
    pub async fn subnets(&self) -> Vec<(Ipv4Net, String, i64)> {
        let resp = self
            .client()
            .await
            .get(
                format!("{PREFIX}/subnets/"),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        resp.kvs()
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                let name = key.rsplit('/').next()?;
                let net: Ipv4Net = name.replacen('-', "/", 1).parse().ok()?;
                Some((net, kv.value_str().ok()?.to_string(), kv.lease()))
            })
            .collect()
    }

    pub async fn delete_subnet(&self, subnet: Ipv4Net) {
        let key = format!(
            "{PREFIX}/subnets/{}-{}",
            subnet.network(),
            subnet.prefix_len()
        );
        self.client().await.delete(key, None).await.unwrap();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A dataplane stand-in: acks every snapshot and records it.
#[derive(Clone)]
pub struct Recorder {
    pub snapshots: Arc<Mutex<Vec<Snapshot>>>,
    /// Set on stop: open Sync streams end, as when the process dies.
    closed: tokio::sync::watch::Receiver<bool>,
}

impl Recorder {
    pub fn last(&self) -> Option<Snapshot> {
        self.snapshots.lock().unwrap().last().cloned()
    }
    pub fn count(&self) -> usize {
        self.snapshots.lock().unwrap().len()
    }
}

#[tonic::async_trait]
impl Dataplane for Recorder {
    type SyncStream = ReceiverStream<Result<ApplyReply, Status>>;

    async fn sync(
        &self,
        req: Request<Streaming<Snapshot>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let rec = self.snapshots.clone();
        let mut closed = self.closed.clone();
        tokio::spawn(async move {
            loop {
                let s = tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(s)) => s,
                        _ => break,
                    },
                    _ = closed.wait_for(|c| *c) => break,
                };
                let version = s.version;
                rec.lock().unwrap().push(s);
                let reply = ApplyReply {
                    applied: true,
                    applied_version: version,
                    reason: String::new(),
                };
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn apply(&self, req: Request<Snapshot>) -> Result<Response<ApplyReply>, Status> {
        let s = req.into_inner();
        let version = s.version;
        self.snapshots.lock().unwrap().push(s);
        Ok(Response::new(ApplyReply {
            applied: true,
            applied_version: version,
            reason: String::new(),
        }))
    }

    async fn status(
        &self,
        _: Request<DpStatusRequest>,
    ) -> Result<Response<DataplaneStatus>, Status> {
        Ok(Response::new(DataplaneStatus::default()))
    }

    async fn routes(&self, _: Request<RoutesRequest>) -> Result<Response<RoutesReply>, Status> {
        Ok(Response::new(RoutesReply::default()))
    }
}

pub struct FakeDataplane {
    pub rec: Recorder,
    close: tokio::sync::watch::Sender<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeDataplane {
    pub async fn start(run_dir: &Path) -> FakeDataplane {
        let (close, closed) = tokio::sync::watch::channel(false);
        let rec = Recorder {
            snapshots: Arc::default(),
            closed,
        };
        let listener = uds::bind(&run_dir.join(kolach_proto::DATAPLANED_SOCKET))
            .await
            .unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let svc = DataplaneServer::new(rec.clone());
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = rx.await;
                })
                .await;
        });
        FakeDataplane {
            rec,
            close,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        let _ = self.close.send(true);
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

/// One controld, in-process, with its own run dir (which also holds
/// subnet.env) and a fake dataplane.
pub struct Host {
    pub dir: Arc<TempDir>,
    pub public_ip: String,
    pub dp: Option<FakeDataplane>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Host {
    pub fn flags(
        etcd: &Etcd,
        dir: &Path,
        public_ip: &str,
        extra: &[&str],
    ) -> kolach_controld::Flags {
        let mut args: Vec<String> = vec![
            "kolach-controld".into(),
            "--etcd-endpoints".into(),
            etcd.url.clone(),
            "--iface".into(),
            "lo".into(),
            "--public-ip".into(),
            public_ip.into(),
            "--run-dir".into(),
            dir.display().to_string(),
            "--subnet-file".into(),
            dir.join("subnet.env").display().to_string(),
            "--subnet-lease-ttl".into(),
            "30s".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        kolach_controld::Flags::try_parse_from(args).unwrap()
    }

    /// Starts a controld and, when `with_dataplane`, a fake dataplane first.
    pub async fn start(etcd: &Etcd, public_ip: &str, with_dataplane: bool) -> Host {
        Self::start_in(
            etcd,
            Arc::new(TempDir::new("host")),
            public_ip,
            with_dataplane,
            &[],
        )
        .await
    }

    pub async fn start_in(
        etcd: &Etcd,
        dir: Arc<TempDir>,
        public_ip: &str,
        with_dataplane: bool,
        extra: &[&str],
    ) -> Host {
        init_logs();
        let dp = if with_dataplane {
            Some(FakeDataplane::start(dir.path()).await)
        } else {
            None
        };
        let flags = Self::flags(etcd, dir.path(), public_ip, extra);
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(kolach_controld::run(flags, async {
            let _ = rx.await;
        }));
        let h = Host {
            dir,
            public_ip: public_ip.into(),
            dp,
            stop: Some(stop),
            task: Some(task),
        };
        // Wait for the control socket.
        let sock = h.dir.path().join(kolach_proto::CONTROLD_SOCKET);
        wait_for(Duration::from_secs(5), "control socket", || {
            let s = sock.clone();
            async move { s.exists() }
        })
        .await;
        h
    }

    /// Stops controld gracefully (like SIGTERM) and returns its run dir.
    pub async fn stop(mut self) -> Arc<TempDir> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("controld stops within 10 s")
                .unwrap()
                .unwrap();
        }
        if let Some(dp) = self.dp.take() {
            dp.stop().await;
        }
        self.dir.clone()
    }

    pub fn subnet_file(&self) -> PathBuf {
        self.dir.path().join("subnet.env")
    }

    pub fn subnet_env(&self) -> Option<String> {
        std::fs::read_to_string(self.subnet_file()).ok()
    }

    async fn control(&self) -> ControlClient<tonic::transport::Channel> {
        let ch = uds::connect(
            &self.dir.path().join(kolach_proto::CONTROLD_SOCKET),
            "kolach-controld",
        )
        .await
        .unwrap();
        ControlClient::new(ch)
    }

    pub async fn status(&self) -> ControlStatus {
        self.control()
            .await
            .status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn leases(&self) -> LeasesReply {
        self.control()
            .await
            .leases(LeasesRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn subnet(&self) -> Option<Ipv4Net> {
        self.status()
            .await
            .subnet
            .as_ref()
            .map(|s| Ipv4Net::try_from(s).unwrap())
    }

    /// Waits until this controld is running (the dataplane applied its
    /// snapshot) with subnet.env written, and returns its subnet.
    pub async fn ready(&self) -> Ipv4Net {
        let f = self.subnet_file();
        wait_for(Duration::from_secs(20), "running with subnet.env", || {
            let f = f.clone();
            async move { f.exists() && self.status().await.phase == "running" }
        })
        .await;
        let subnet = self.subnet().await.expect("subnet in status");
        let env = self.subnet_env().unwrap();
        let first = std::net::Ipv4Addr::from(u32::from(subnet.network()) + 1);
        assert!(env.contains(&format!("KOLACH_SUBNET={first}/")), "{env}");
        subnet
    }

    pub fn routes(&self) -> Vec<Ipv4Net> {
        self.dp
            .as_ref()
            .and_then(|d| d.rec.last())
            .map(|s| {
                s.routes
                    .iter()
                    .map(|r| Ipv4Net::try_from(r.subnet.as_ref().unwrap()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after `within`.
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
