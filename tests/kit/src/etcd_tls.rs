//! etcd over TLS with client certificates: a throwaway CA, server and client
//! certificates made with the `openssl` command, and an etcd in the underlay
//! that serves TLS to the hosts (198.18.0.254) while plain loopback stays
//! for the harness's own `etcdctl`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd;
use crate::etcd::{which, Etcd, CLIENT_PORT, ETCD_IP};
use crate::etcd_cluster::set_flag;
use crate::host::Host;
use crate::lab::Lab;
use crate::process::Proc;

/// The files of a test CA.
#[derive(Clone, Debug)]
pub struct TestCa {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// The TLS endpoint hosts are given.
pub fn tls_endpoint() -> String {
    format!("https://{ETCD_IP}:{CLIENT_PORT}")
}

fn openssl(args: &[String]) -> Result<()> {
    let out = cmd::run("openssl", args, Duration::from_secs(30))?;
    if !out.success() {
        bail!("openssl {}: {}", args.join(" "), out.stderr.trim());
    }
    Ok(())
}

/// Makes a CA, a server certificate for etcd's addresses and a client
/// certificate, keys mode 0600, in `dir`.
pub fn make_ca(dir: &Path) -> Result<TestCa> {
    std::fs::create_dir_all(dir)?;
    let f = |name: &str| dir.join(name).display().to_string();
    std::fs::write(
        dir.join("server.ext"),
        format!("subjectAltName=IP:{ETCD_IP},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
    )?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    openssl(&args(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &f("ca.key"),
        "-out",
        &f("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=kolach-test-ca",
    ]))?;
    for who in ["server", "client"] {
        openssl(&args(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &f(&format!("{who}.key")),
            "-out",
            &f(&format!("{who}.csr")),
            "-subj",
            &format!("/CN=kolach-{who}"),
        ]))?;
        openssl(&args(&[
            "x509",
            "-req",
            "-in",
            &f(&format!("{who}.csr")),
            "-CA",
            &f("ca.pem"),
            "-CAkey",
            &f("ca.key"),
            "-CAcreateserial",
            "-out",
            &f(&format!("{who}.pem")),
            "-days",
            "2",
            "-extfile",
            &f(&format!("{who}.ext")),
        ]))?;
    }
    let ca = TestCa {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    for key in [&ca.server_key, &ca.client_key] {
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(ca)
}

/// Starts the lab's etcd serving TLS with client certificate authentication
/// on the underlay address, plain HTTP on loopback only.
pub fn start_etcd(lab: &mut Lab, ca: &TestCa) -> Result<()> {
    let bin = which("etcd").ok_or_else(|| anyhow!("etcd not found (`make deps`)"))?;
    let data = lab.dir.join("etcd-tls-data");
    let _ = std::fs::remove_dir_all(&data);
    let args = vec![
        "--name=kolach-lab".to_string(),
        format!("--data-dir={}", data.display()),
        format!(
            "--listen-client-urls={},http://127.0.0.1:{CLIENT_PORT}",
            tls_endpoint()
        ),
        format!("--advertise-client-urls={}", tls_endpoint()),
        "--listen-peer-urls=http://127.0.0.1:2380".to_string(),
        "--initial-advertise-peer-urls=http://127.0.0.1:2380".to_string(),
        "--initial-cluster=kolach-lab=http://127.0.0.1:2380".to_string(),
        "--initial-cluster-state=new".to_string(),
        format!("--cert-file={}", ca.server_cert.display()),
        format!("--key-file={}", ca.server_key.display()),
        format!("--trusted-ca-file={}", ca.ca.display()),
        "--client-cert-auth".to_string(),
        "--logger=zap".to_string(),
        "--log-outputs=stderr".to_string(),
        "--log-level=warn".to_string(),
    ];
    let ns = lab.names.underlay();
    let mut etcd = Etcd {
        proc: Proc::new("etcd", &ns, &bin, args, lab.dir.join("etcd.log")),
        ns,
        data_dir: data,
    };
    etcd.start(Duration::from_secs(20))
        .context("etcd with TLS")?;
    lab.etcd = Some(etcd);
    Ok(())
}

/// Points a host's controld (before it starts) at the TLS endpoint with
/// the given files; `None` leaves a flag out.
pub fn use_tls(host: &mut Host, ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) {
    let args = &mut host.controld.args;
    set_flag(args, "--etcd-endpoints", &tls_endpoint());
    for (flag, file) in [
        ("--etcd-cafile", ca),
        ("--etcd-certfile", cert),
        ("--etcd-keyfile", key),
    ] {
        if let Some(f) = file {
            set_flag(args, flag, &f.display().to_string());
        }
    }
}
