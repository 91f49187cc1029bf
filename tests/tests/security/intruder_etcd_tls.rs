//! etcd with TLS and client certificates, from a test CA made with openssl:
//! hosts given `--etcd-cafile/--etcd-certfile/--etcd-keyfile` form a mesh
//! over it; a host whose key file others can read refuses to start and says
//! why; a host without a client certificate is refused by etcd and waits;
//! a plaintext endpoint that is not loopback gets a warning in the log and
//! the status.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kolach_testkit::{etcd::tls, lab, run, Lab};

fn log(lab: &Lab, n: u8) -> String {
    std::fs::read_to_string(&lab.host(n).controld.log).unwrap_or_default()
}

#[test]
fn etcd_over_tls_with_client_certificates() {
    run("etcdtls", |lab| {
        let ca = tls::make_ca(&lab.dir.join("tls"))?;
        lab.start_tls_etcd(&ca)?;
        lab.put_config(lab::NETWORK_CONFIG)?;

        // 1. The mesh over TLS.
        for _ in 0..2 {
            let n = lab.add_host()?;
            lab.host_mut(n)
                .use_etcd_tls(Some(&ca.ca), Some(&ca.client_cert), Some(&ca.client_key));
            lab.start_host(n)?;
        }
        for n in [1, 2] {
            lab.wait_ready(n)?;
            lab.add_pod(n)?;
        }
        lab.wait_converged(Duration::from_secs(10))?;
        lab.assert_all_pairs_ping(2)?;
        for n in [1, 2] {
            ensure!(
                !log(lab, n).contains("plaintext"),
                "host{n} warned about plaintext over TLS"
            );
            ensure!(lab.cd_status(n)?.etcd_reachable);
        }
        eprintln!(
            "2 hosts over {} with client certificates: leases {:?}",
            tls::tls_endpoint(),
            lab.etcdctl()
                .get_prefix(&lab::subnets_prefix())?
                .iter()
                .map(|kv| kv.key.rsplit('/').next().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        );

        // 2. A key file others can read is refused, with the reason.
        let open_key = lab.dir.join("tls/client-open.key");
        std::fs::copy(&ca.client_key, &open_key)?;
        std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644))?;
        let n = lab.add_host()?;
        lab.host_mut(n)
            .use_etcd_tls(Some(&ca.ca), Some(&ca.client_cert), Some(&open_key));
        lab.host_mut(n).controld.start()?;
        let t = Instant::now();
        let status = loop {
            if let Some(s) = lab.host_mut(n).controld.exited() {
                break s;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("controld with a world-readable key still runs after 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = log(lab, n);
        let line = text
            .lines()
            .find(|l| l.contains("--etcd-keyfile") && l.contains("caused by"))
            .context("no error line names --etcd-keyfile")?;
        eprintln!(
            "world-readable key: exit {status} after {:?}: {line}",
            t.elapsed()
        );
        ensure!(status.code() == Some(1), "exit {status}");
        ensure!(
            line.contains("is accessible by other users (mode 0644)") && line.contains("chmod 600"),
            "{line}"
        );
        ensure!(text.contains("hint: "), "no hint:\n{text}");

        // 3. No client certificate: etcd refuses the handshake; controld waits.
        let n = lab.add_host()?;
        lab.host_mut(n).use_etcd_tls(Some(&ca.ca), None, None);
        lab.host_mut(n).controld.start()?;
        std::thread::sleep(Duration::from_secs(3));
        let st = lab.cd_status(n)?;
        eprintln!(
            "no client certificate: phase {}, etcd reachable {}",
            st.phase, st.etcd_reachable
        );
        ensure!(
            !st.etcd_reachable && st.phase == "waiting-for-etcd",
            "{st:?}"
        );
        ensure!(
            lab.host_mut(n).controld.is_running(),
            "it must wait, not die"
        );

        // 4. Plaintext to a remote endpoint: warned about, in log and status.
        let n = lab.add_host()?;
        kolach_testkit::process::set_flag(
            &mut lab.host_mut(n).controld.args,
            "--etcd-endpoints",
            "http://198.18.0.254:2379,http://127.0.0.1:2379",
        );
        lab.host_mut(n).controld.start()?;
        let st = lab.wait_control(n, Duration::from_secs(5), "warned", |s| {
            s.warnings.iter().any(|w| w.contains("plaintext"))
        })?;
        let w: Vec<&String> = st
            .warnings
            .iter()
            .filter(|w| w.contains("plaintext"))
            .collect();
        eprintln!("plaintext endpoints: status warnings {w:?}");
        ensure!(
            w.len() == 1
                && w[0].starts_with(
                    "etcd endpoint http://198.18.0.254:2379 is plaintext and not loopback"
                ),
            "{w:?}"
        );
        ensure!(
            log(lab, n).contains("is plaintext and not loopback"),
            "no warning in the log"
        );
        Ok(())
    });
}
