//! The calls to kolach-controld (`kolach.ipam.v1` on `<runDir>/controld.sock`),
//! each under a deadline, with the replies decoded into plain values.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use kolach_proto::ipam::ipam_client::IpamClient;
use kolach_proto::ipam::{
    AllocateRequest, Attachment as PbAttachment, CheckRequest, GcRequest, IpamStatus,
    ReleaseRequest, StatusRequest,
};
use kolach_proto::uds::{self, UdsError};
use tonic::transport::Channel;

use crate::config::Attachment;
use crate::error::{self, CniError};

/// How long one call may take: a runtime waits for the plugin, and a wedged
/// controld is better reported (try again later) than waited on.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

const DAEMON: &str = "kolach-controld";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] UdsError),
    #[error("{}", .0.message())]
    Status(tonic::Status),
    #[error("kolach-controld did not answer {call} within {} s", CALL_TIMEOUT.as_secs())]
    Timeout { call: &'static str },
    /// The call never got an answer: the connection broke under it
    /// (controld stopped or crashed mid-call).
    #[error("the connection to kolach-controld broke during {call} ({why}); it may have stopped or restarted: try again")]
    Broken { call: &'static str, why: String },
    #[error("kolach-controld's {call} reply has no usable IPv4 address: {why}")]
    BadReply { call: &'static str, why: String },
}

impl ClientError {
    /// controld is not there at all (no socket, or nobody listening on it).
    pub fn not_running(&self) -> bool {
        matches!(
            self,
            ClientError::Connect(UdsError::NotRunning { .. } | UdsError::Refused { .. })
        )
    }
}

impl From<&ClientError> for CniError {
    fn from(e: &ClientError) -> Self {
        match e {
            ClientError::Status(s) => CniError::from(s),
            ClientError::Connect(UdsError::PermissionDenied { .. }) => {
                CniError::new(error::PERMISSION_DENIED, e.to_string())
            }
            ClientError::Connect(_) | ClientError::Timeout { .. } | ClientError::Broken { .. } => {
                CniError::new(error::TRY_AGAIN_LATER, e.to_string())
            }
            ClientError::BadReply { .. } => CniError::new(error::CONTROLD_FAILED, e.to_string()),
        }
    }
}

/// What Allocate gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocated {
    pub address: Ipv4Addr,
    /// The attachment already had it (a repeated ADD).
    pub existing: bool,
    /// controld's overlay MTU (0: it has none).
    pub mtu: u32,
}

/// What ADD asks for besides the attachment.
#[derive(Debug, Clone, Default)]
pub struct AllocateArgs {
    pub network: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pool: String,
    pub netns: String,
}

pub struct Ipam {
    client: IpamClient<Channel>,
}

fn pb(a: &Attachment) -> Option<PbAttachment> {
    Some(PbAttachment {
        container_id: a.container_id.clone(),
        ifname: a.ifname.clone(),
    })
}

async fn deadline<T>(
    call: &'static str,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(status_error(call, s)),
        Err(_) => Err(ClientError::Timeout { call }),
    }
}

/// A status controld sent is its answer; one tonic made from a transport
/// error (it carries the error as its source) means no answer came.
fn status_error(call: &'static str, s: tonic::Status) -> ClientError {
    match std::error::Error::source(&s) {
        Some(src) => {
            let mut why = src.to_string();
            let mut next = src.source();
            while let Some(e) = next {
                why.push_str(": ");
                why.push_str(&e.to_string());
                next = e.source();
            }
            ClientError::Broken { call, why }
        }
        None => ClientError::Status(s),
    }
}

fn address(
    call: &'static str,
    a: Option<&kolach_proto::ipam::Allocation>,
) -> Result<Ipv4Addr, ClientError> {
    let bad = |why: String| ClientError::BadReply { call, why };
    let a = a.ok_or_else(|| bad("no allocation".into()))?;
    let ip = a.address.as_ref().ok_or_else(|| bad("no address".into()))?;
    Ipv4Addr::try_from(ip).map_err(|e| bad(e.to_string()))
}

impl Ipam {
    /// Dials `<run_dir>/controld.sock`.
    pub async fn connect(run_dir: &Path) -> Result<Ipam, ClientError> {
        let path = run_dir.join(kolach_proto::CONTROLD_SOCKET);
        let channel = tokio::time::timeout(CALL_TIMEOUT, uds::connect(&path, DAEMON))
            .await
            .map_err(|_| ClientError::Timeout { call: "connect" })??;
        Ok(Ipam {
            client: IpamClient::new(channel),
        })
    }

    pub async fn allocate(
        &mut self,
        a: &Attachment,
        args: AllocateArgs,
    ) -> Result<Allocated, ClientError> {
        let req = AllocateRequest {
            attachment: pb(a),
            network: args.network,
            pod_namespace: args.pod_namespace,
            pod_name: args.pod_name,
            pool: args.pool,
            netns: args.netns,
        };
        let reply = deadline("Allocate", self.client.allocate(req)).await?;
        Ok(Allocated {
            address: address("Allocate", reply.allocation.as_ref())?,
            existing: reply.existing,
            mtu: reply.mtu,
        })
    }

    /// Frees the attachment's address; `true` when it had one.
    pub async fn release(&mut self, a: &Attachment) -> Result<bool, ClientError> {
        let req = ReleaseRequest { attachment: pb(a) };
        Ok(deadline("Release", self.client.release(req))
            .await?
            .released)
    }

    /// The attachment's address.
    pub async fn check(&mut self, a: &Attachment) -> Result<Ipv4Addr, ClientError> {
        let req = CheckRequest { attachment: pb(a) };
        let alloc = deadline("Check", self.client.check(req)).await?;
        address("Check", Some(&alloc))
    }

    /// Frees the network's attachments not in `valid`; returns the freed ones.
    pub async fn gc(
        &mut self,
        network: &str,
        valid: &[Attachment],
    ) -> Result<Vec<Attachment>, ClientError> {
        let req = GcRequest {
            network: network.to_string(),
            valid: valid.iter().filter_map(pb).collect(),
        };
        let reply = deadline("Gc", self.client.gc(req)).await?;
        Ok(reply
            .freed
            .into_iter()
            .filter_map(|a| a.attachment)
            .map(|a| Attachment {
                container_id: a.container_id,
                ifname: a.ifname,
            })
            .collect())
    }

    pub async fn status(&mut self) -> Result<IpamStatus, ClientError> {
        deadline("Status", self.client.status(StatusRequest {})).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_try_again_later_an_answer_is_not() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let broken = tonic::Status::from_error(Box::new(io));
        let e = status_error("Allocate", broken);
        assert!(matches!(e, ClientError::Broken { .. }), "{e:?}");
        let cni = CniError::from(&e);
        assert_eq!(cni.code, error::TRY_AGAIN_LATER);
        assert!(
            cni.msg.starts_with(
                "the connection to kolach-controld broke during Allocate (connection reset"
            ),
            "{}",
            cni.msg
        );
        let answered = status_error("Allocate", tonic::Status::unknown("odd"));
        assert_eq!(CniError::from(&answered).code, error::CONTROLD_FAILED);
    }

    #[tokio::test]
    async fn absent_controld_is_try_again_later_with_the_sentence() {
        let dir = std::env::temp_dir().join(format!("kolach-cni-none-{}", std::process::id()));
        let e = Ipam::connect(&dir).await.err().unwrap();
        assert!(e.not_running());
        let cni = CniError::from(&e);
        assert_eq!(cni.code, error::TRY_AGAIN_LATER);
        assert_eq!(
            cni.msg,
            format!(
                "kolach-controld is not running (no socket at {}/controld.sock)",
                dir.display()
            )
        );
    }

    #[test]
    fn status_errors_keep_controlds_message() {
        let e = ClientError::Status(tonic::Status::resource_exhausted(
            "no free address in pool web",
        ));
        let cni = CniError::from(&e);
        assert_eq!(cni.code, error::POOL_EXHAUSTED);
        assert_eq!(cni.msg, "no free address in pool web");
        let t = CniError::from(&ClientError::Timeout { call: "Allocate" });
        assert_eq!(t.code, error::TRY_AGAIN_LATER);
        assert_eq!(t.msg, "kolach-controld did not answer Allocate within 20 s");
    }

    #[test]
    fn replies_without_an_ipv4_address_are_refused() {
        assert!(matches!(
            address("Check", None),
            Err(ClientError::BadReply { .. })
        ));
        let v6 = kolach_proto::ipam::Allocation {
            address: Some("fd00::1".parse::<std::net::IpAddr>().unwrap().into()),
            ..Default::default()
        };
        let e = address("Check", Some(&v6)).unwrap_err();
        assert_eq!(CniError::from(&e).code, error::CONTROLD_FAILED);
    }
}
