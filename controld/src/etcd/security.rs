//! Checks on how controld reaches etcd: a client key other users can read is
//! refused (whoever reads it can rewrite every lease); a plaintext endpoint
//! that is not loopback gets a warning (leases and config cross the network
//! unencrypted and unauthenticated).

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Why a key file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("--etcd-keyfile {path} is accessible by other users (mode {mode:04o}); refusing to use it: run `chmod 600 {path}` (or 640 with group kolach)")]
    OpenToOthers { path: String, mode: u32 },
    #[error("--etcd-keyfile {path}: {error}")]
    Unreadable { path: String, error: String },
}

/// Whether a key file's mode lets users other than its owner and group in.
pub fn mode_is_private(mode: u32) -> bool {
    mode & 0o007 == 0
}

/// Refuses a client key that others can read, write or run.
pub fn check_key_file(path: &Path) -> Result<(), KeyFileError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| KeyFileError::Unreadable {
        path: shown.clone(),
        error: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode_is_private(mode) {
        Ok(())
    } else {
        Err(KeyFileError::OpenToOthers { path: shown, mode })
    }
}

/// The host part of an endpoint URL (`http://10.0.0.5:2379` → `10.0.0.5`,
/// `http://[::1]:2379` → `::1`, `etcd:2379` → `etcd`).
fn host_of(rest: &str) -> &str {
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

/// Whether an endpoint talks plaintext to something other than this host.
pub fn plaintext_remote(endpoint: &str) -> bool {
    let e = endpoint.trim();
    let lower = e.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return false;
    }
    let rest = lower.strip_prefix("http://").unwrap_or(&lower);
    let host = host_of(rest);
    if host == "localhost" {
        return false;
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => true,
    }
}

/// One warning per plaintext endpoint that is not loopback.
pub fn plaintext_warnings(endpoints: &[String]) -> Vec<String> {
    endpoints
        .iter()
        .filter(|e| plaintext_remote(e))
        .map(|e| {
            format!(
                "etcd endpoint {e} is plaintext and not loopback: leases and config cross the network unencrypted and unauthenticated (use https:// with --etcd-cafile/--etcd-certfile/--etcd-keyfile)"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_endpoints_off_this_host_are_flagged() {
        for e in [
            "http://198.18.0.254:2379",
            "http://etcd.example:2379",
            "10.0.0.5:2379",
            "HTTP://10.0.0.5:2379/",
            "http://[fd00::1]:2379",
            "http://user@10.0.0.5:2379",
        ] {
            assert!(plaintext_remote(e), "{e}");
        }
        for e in [
            "http://127.0.0.1:2379",
            "http://127.8.9.1:2379",
            "http://localhost:2379",
            "http://[::1]:2379",
            "https://198.18.0.254:2379",
            "127.0.0.1:2379",
        ] {
            assert!(!plaintext_remote(e), "{e}");
        }
        let w = plaintext_warnings(&[
            "http://127.0.0.1:2379".into(),
            "http://10.1.2.3:2379".into(),
        ]);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("etcd endpoint http://10.1.2.3:2379 is plaintext"),
            "{}",
            w[0]
        );
    }

    #[test]
    fn key_file_modes() {
        assert!(mode_is_private(0o600));
        assert!(mode_is_private(0o640));
        assert!(mode_is_private(0o400));
        assert!(!mode_is_private(0o644));
        assert!(!mode_is_private(0o602));
        assert!(!mode_is_private(0o601));
        let dir = std::env::temp_dir().join(format!("kolach-keymode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("client.key");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_key_file(&key).unwrap_err();
        assert!(
            err.to_string()
                .contains("is accessible by other users (mode 0644)"),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(check_key_file(&key), Ok(()));
        assert!(matches!(
            check_key_file(&dir.join("missing.key")),
            Err(KeyFileError::Unreadable { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
