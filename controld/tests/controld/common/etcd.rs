//! A real etcd on loopback (the test kit's), and the etcd reads and writes
//! the tests make.
#![allow(dead_code)]

use super::*;

/// A one-member etcd on 127.0.0.1: the test kit's [`LocalEtcd`] (random
/// ports, its own temp dir, TLS optional, killed on drop) and an etcd client
/// to read and write what controld reads and writes.
pub struct Etcd {
    local: LocalEtcd,
}

/// Lets `etcd.url`, `etcd.tls()` and `etcd.stop()` reach the kit's etcd.
impl std::ops::Deref for Etcd {
    type Target = LocalEtcd;
    fn deref(&self) -> &LocalEtcd {
        &self.local
    }
}

impl std::ops::DerefMut for Etcd {
    fn deref_mut(&mut self) -> &mut LocalEtcd {
        &mut self.local
    }
}

impl Etcd {
    pub async fn start() -> Etcd {
        Self::start_with(false).await
    }

    /// With `tls`, etcd serves https only and demands client certificates.
    pub async fn start_with(tls: bool) -> Etcd {
        // Starting blocks this worker only; the test runtimes have two.
        let local = tokio::task::block_in_place(|| LocalEtcd::start(tls)).expect("etcd starts");
        Etcd { local }
    }

    fn connect_options(&self) -> Option<etcd_client::ConnectOptions> {
        self.tls().map(|t| {
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

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        tokio::task::block_in_place(|| self.local.restart()).expect("etcd restarts");
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
