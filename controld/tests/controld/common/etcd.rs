//! A real etcd on loopback: random ports, temp data dir, killed on drop.
#![allow(dead_code)]

use super::*;

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

    /// The value and etcd lease id of one subnet key, if it exists.
    pub async fn subnet(&self, subnet: Ipv4Net) -> Option<(String, i64)> {
        self.subnets()
            .await
            .into_iter()
            .find(|(s, _, _)| *s == subnet)
            .map(|(_, v, l)| (v, l))
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
