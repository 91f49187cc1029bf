//! `--cleanup`: remove everything kolach-dataplaned made, going on past
//! failures and reporting all of them at the end.

use std::fmt;
use std::path::Path;

use crate::netlink::Kernel;
use crate::store;

/// Every failure of one cleanup run.
#[derive(Debug)]
pub struct CleanupErrors(pub Vec<String>);

impl fmt::Display for CleanupErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cleanup finished with {} error(s): ", self.0.len())?;
        f.write_str(&self.0.join("; "))
    }
}

impl std::error::Error for CleanupErrors {}

/// Deletes the TUN device `tun` (only if it is a TUN device) and the saved
/// snapshot in `run_dir`. `kernel` is None when no netlink socket could be
/// opened; that failure is passed in as `kernel_error`.
pub async fn cleanup(
    kernel: Result<&dyn Kernel, String>,
    tun: &str,
    run_dir: &Path,
) -> Result<(), CleanupErrors> {
    let mut errors = Vec::new();
    match kernel {
        Err(e) => errors.push(e),
        Ok(k) => match k.link(tun).await {
            Ok(None) => tracing::info!(device = tun, "no device to remove"),
            Ok(Some((index, kind))) if kind == "tun" => match k.delete_link(index).await {
                Ok(()) => tracing::info!(device = tun, "device removed"),
                Err(e) => errors.push(format!("removing {tun}: {e}")),
            },
            Ok(Some((_, kind))) => errors.push(format!(
                "{tun} is a {} device, not a TUN; left alone",
                if kind.is_empty() { "non-TUN" } else { &kind }
            )),
            Err(e) => errors.push(format!("looking up {tun}: {e}")),
        },
    }
    match store::remove(run_dir) {
        Ok(()) => tracing::info!(path = %store::path(run_dir).display(), "saved snapshot removed"),
        Err(e) => errors.push(e.to_string()),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CleanupErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_kernel::FakeKernel;

    #[tokio::test]
    async fn removes_tun_and_snapshot_and_reports_all_errors() {
        let d = std::env::temp_dir().join(format!("kdp-cleanup-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        store::save(&d, &crate::snapshot::tests::good()).unwrap();
        let k = FakeKernel::with_link("kolach0", 4);
        cleanup(Ok(&k), "kolach0", &d).await.unwrap();
        assert_eq!(k.take_calls(), ["delete-link 4"]);
        assert!(store::load(&d).unwrap().is_none());
        // Nothing left: still fine.
        cleanup(Ok(&k), "kolach0", &d).await.unwrap();

        // Two failures (no netlink; snapshot.pb is a directory), both reported.
        std::fs::create_dir_all(store::path(&d)).unwrap();
        let e = cleanup(Err("no netlink".into()), "kolach0", &d)
            .await
            .unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e
            .to_string()
            .starts_with("cleanup finished with 2 error(s): no netlink; "));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
