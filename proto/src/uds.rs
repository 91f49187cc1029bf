//! gRPC over the run dir's Unix sockets: binding with the right mode, dialing
//! with a hint a person can act on, and the peer-credential gate.
//!
//! Serving hardened against local clients (see [`limits`] and [`gate`]):
//! ```ignore
//! let limits = uds::Limits::default();
//! uds::server_builder(&limits)
//!     .layer(uds::GateLayer::new(gate.clone(), uds::DATAPLANE_PRIVILEGED))
//!     .add_service(..)
//!     .serve_with_incoming_shutdown(uds::Incoming::new(listener, limits, gate), stop)
//! ```

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::UdsConnectInfo;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

pub mod gate;
pub mod limits;
#[cfg(test)]
mod server_tests;

pub use gate::{GateLayer, DATAPLANE_PRIVILEGED, IPAM_PRIVILEGED};
pub use limits::{server_builder, Incoming, Limits};

#[derive(Debug, thiserror::Error)]
pub enum UdsError {
    #[error("{daemon} is not running (no socket at {})", path.display())]
    NotRunning { daemon: &'static str, path: PathBuf },
    #[error("{daemon} is not running (nothing listens on {}; stale socket)", path.display())]
    Refused { daemon: &'static str, path: PathBuf },
    #[error("permission denied on {}: run as root or as a member of group kolach", path.display())]
    PermissionDenied { path: PathBuf },
    #[error("cannot connect to {daemon} at {}: {source}", path.display())]
    Other {
        daemon: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot listen on {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
    #[error("another process already serves {}", path.display())]
    InUse { path: PathBuf },
}

impl UdsError {
    fn from_connect(daemon: &'static str, path: &Path, e: io::Error) -> Self {
        let path = path.to_path_buf();
        match e.kind() {
            io::ErrorKind::NotFound => UdsError::NotRunning { daemon, path },
            io::ErrorKind::ConnectionRefused => UdsError::Refused { daemon, path },
            io::ErrorKind::PermissionDenied => UdsError::PermissionDenied { path },
            _ => UdsError::Other {
                daemon,
                path,
                source: e,
            },
        }
    }
}

/// Connects a tonic channel to the socket at `path`. The first connection is made
/// eagerly so that a missing daemon is reported as such, not as a transport error.
pub async fn connect(path: &Path, daemon: &'static str) -> Result<Channel, UdsError> {
    // Probe first: tonic would otherwise wrap ENOENT in layers of transport errors.
    UnixStream::connect(path)
        .await
        .map_err(|e| UdsError::from_connect(daemon, path, e))?;
    let target = path.to_path_buf();
    // The URI is required by the API but unused by the connector.
    Endpoint::try_from("http://[::]:50051")
        .expect("static URI")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let target = target.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(target).await?)) }
        }))
        .await
        .map_err(|e| UdsError::Other {
            daemon,
            path: path.to_path_buf(),
            source: io::Error::other(e),
        })
}

/// Binds a listening socket at `path` with mode 0660 (group `kolach` where that
/// group exists, else 0600). A stale socket file left by a dead process is
/// replaced; a socket someone still answers on is not.
pub async fn bind(path: &Path) -> Result<UnixListener, UdsError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(UdsError::InUse {
                    path: path.to_path_buf(),
                });
            }
            let _ = std::fs::remove_file(path);
        }
    }
    let bind_err = |source| UdsError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    let group = nix::unistd::Group::from_name("kolach").ok().flatten();
    let mode = if let Some(g) = group {
        // Under systemd with Group=kolach the file already has the group; skip the
        // syscall then, since the units' seccomp filter refuses chown.
        let meta = std::fs::metadata(path).map_err(bind_err)?;
        if std::os::unix::fs::MetadataExt::gid(&meta) != g.gid.as_raw() {
            nix::unistd::chown(path, None, Some(g.gid))
                .map_err(|e| bind_err(io::Error::from_raw_os_error(e as i32)))?;
        }
        0o660
    } else {
        0o600
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bind_err)?;
    Ok(listener)
}

/// The uids allowed to call privileged RPCs: root plus, optionally, one more
/// (the configured controld user).
#[derive(Clone, Debug)]
pub struct PeerGate {
    extra_uid: Option<u32>,
    allow_root: bool,
}

impl PeerGate {
    pub fn new(extra_uid: Option<u32>) -> Self {
        PeerGate {
            extra_uid,
            allow_root: true,
        }
    }

    /// A gate that lets in `uid` only, not even root: for tests, which run as
    /// root and need to be refused.
    pub fn only(uid: u32) -> Self {
        PeerGate {
            extra_uid: Some(uid),
            allow_root: false,
        }
    }

    /// Resolves a user name; an unknown user adds nobody.
    pub fn for_user(name: Option<&str>) -> Self {
        let uid = name
            .and_then(|n| nix::unistd::User::from_name(n).ok().flatten())
            .map(|u| u.uid.as_raw());
        PeerGate::new(uid)
    }

    pub fn allows(&self, uid: u32) -> bool {
        (uid == 0 && self.allow_root) || Some(uid) == self.extra_uid
    }

    /// Checks the caller's SO_PEERCRED uid. Use from a handler or an interceptor.
    pub fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let uid = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .map(|c| c.uid());
        self.check_uid(uid)
    }

    /// The check on a peer uid (None: the kernel gave no credentials).
    pub fn check_uid(&self, uid: Option<u32>) -> Result<(), Status> {
        match uid {
            Some(uid) if self.allows(uid) => Ok(()),
            Some(uid) => Err(Status::permission_denied(format!(
                "uid {uid} may not call this method (root or the controld user only)"
            ))),
            None => Err(Status::permission_denied("caller credentials unavailable")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_allows_root_and_extra_only() {
        let g = PeerGate::new(Some(998));
        assert!(g.allows(0));
        assert!(g.allows(998));
        assert!(!g.allows(1000));
        assert!(!PeerGate::new(None).allows(998));
    }

    #[tokio::test]
    async fn missing_socket_gets_a_sentence() {
        let path = std::env::temp_dir().join(format!("kolach-nosock-{}", std::process::id()));
        let err = connect(&path, "kolach-dataplaned").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "kolach-dataplaned is not running (no socket at {})",
                path.display()
            )
        );
    }

    #[tokio::test]
    async fn bind_sets_mode_and_replaces_stale_socket() {
        let dir = std::env::temp_dir().join(format!("kolach-uds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.sock");
        {
            let _stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        }
        let l = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert!(mode == 0o600 || mode == 0o660, "mode {mode:o}");
        assert!(matches!(bind(&path).await, Err(UdsError::InUse { .. })));
        drop(l);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
