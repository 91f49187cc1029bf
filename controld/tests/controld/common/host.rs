//! One controld run in-process through `kolach_controld::run`.
#![allow(dead_code)]

use super::*;

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
            "--state-dir".into(),
            dir.join("state").display().to_string(),
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

    /// A `kolach.ipam.v1` client on this host's controld.sock.
    pub async fn ipam(
        &self,
    ) -> kolach_proto::ipam::ipam_client::IpamClient<tonic::transport::Channel> {
        let ch = uds::connect(
            &self.dir.path().join(kolach_proto::CONTROLD_SOCKET),
            "kolach-controld",
        )
        .await
        .unwrap();
        kolach_proto::ipam::ipam_client::IpamClient::new(ch)
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

    /// The last snapshot the fake dataplane received.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.dp.as_ref().and_then(|d| d.rec.last())
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
