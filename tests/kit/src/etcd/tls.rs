//! The test CA for etcd over TLS with client certificates: a throwaway CA,
//! server and client certificates made with the `openssl` command, and the
//! endpoint a lab's TLS etcd serves the hosts on (198.18.0.254; plain
//! loopback stays for the harness's own `etcdctl`). The lab starts that
//! etcd ([`Lab::start_tls_etcd`](crate::lab::Lab::start_tls_etcd)) and points hosts at it
//! ([`Host::use_etcd_tls`](crate::lab::host::Host::use_etcd_tls)).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::cmd;
use crate::etcd::{CLIENT_PORT, ETCD_IP};

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
