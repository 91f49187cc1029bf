//! The CNI error object (`{"cniVersion","code","msg","details"}` on stdout,
//! exit status 1) and every code the plugin answers with. How controld's gRPC
//! statuses become codes is decided in one place, [`From<&tonic::Status>`].
//!
//! | code | meaning |
//! |---|---|
//! | 1 | incompatible cniVersion, or a command the version does not have |
//! | 2 | unsupported field in the network config (the spec's; kolach tolerates unknown keys and never answers it) |
//! | 3 | container unknown (the spec's; unused: DEL of an unknown container succeeds) |
//! | 4 | invalid or missing environment variable (named in `msg`) |
//! | 5 | I/O failure (stdin) |
//! | 6 | the network config is not JSON of the right shape |
//! | 7 | invalid network config (names the key) |
//! | 11 | try again later: controld is not running or UNAVAILABLE, a call timed out, the connection broke mid-call |
//! | 50 | STATUS: pods cannot get addresses now (controld away or not ready) |
//! | 100 | controld RESOURCE_EXHAUSTED: no free address or block in the pool |
//! | 101 | controld refused the request (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, …) |
//! | 102 | controld PERMISSION_DENIED: the plugin must run as root |
//! | 103 | any other failure of controld (INTERNAL, UNKNOWN, a reply without an address) |
//! | 110 | the kernel refused to wire (or unwire) the pod: netlink or sysctl |
//! | 111 | CHECK: the pod's wiring differs from what ADD made (names what) |

use serde::Serialize;
use tonic::Code;

pub const INCOMPATIBLE_VERSION: u32 = 1;
pub const UNSUPPORTED_FIELD: u32 = 2;
pub const UNKNOWN_CONTAINER: u32 = 3;
pub const INVALID_ENV: u32 = 4;
pub const IO_FAILURE: u32 = 5;
pub const DECODE_FAILURE: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
pub const TRY_AGAIN_LATER: u32 = 11;
pub const NOT_AVAILABLE: u32 = 50;
pub const POOL_EXHAUSTED: u32 = 100;
pub const CONTROLD_REFUSED: u32 = 101;
pub const PERMISSION_DENIED: u32 = 102;
pub const CONTROLD_FAILED: u32 = 103;
pub const KERNEL: u32 = 110;
pub const CHECK_MISMATCH: u32 = 111;

/// One CNI error: `msg` is the sentence a person reads, `details` what led to
/// it (the error chain, the controld status), possibly empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// A variable the command needs is absent or empty.
    pub fn missing_env(name: &str) -> Self {
        CniError::new(
            INVALID_ENV,
            format!("required environment variable {name} is missing"),
        )
    }

    /// The error object as the runtime reads it on stdout, in `version`.
    pub fn to_json(&self, version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            details: &'a str,
        }
        serde_json::to_string(&Wire {
            cni_version: version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .expect("plain strings serialize")
    }
}

/// controld's answer as a CNI error: its message is kept as `msg` (controld
/// writes sentences a person can act on), the gRPC code goes to `details`.
impl From<&tonic::Status> for CniError {
    fn from(s: &tonic::Status) -> Self {
        let code = match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled => {
                TRY_AGAIN_LATER
            }
            Code::ResourceExhausted => POOL_EXHAUSTED,
            Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange => CONTROLD_REFUSED,
            Code::PermissionDenied | Code::Unauthenticated => PERMISSION_DENIED,
            Code::Ok | Code::Unknown | Code::Internal | Code::Unimplemented | Code::DataLoss => {
                CONTROLD_FAILED
            }
        };
        let msg = if s.message().is_empty() {
            format!("kolach-controld answered {:?}", s.code())
        } else {
            s.message().to_string()
        };
        CniError::new(code, msg).with_details(format!("kolach-controld: {:?}", s.code()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let e = CniError::new(TRY_AGAIN_LATER, "kolach-controld is not running").with_details("x");
        assert_eq!(
            e.to_json("1.0.0"),
            r#"{"cniVersion":"1.0.0","code":11,"msg":"kolach-controld is not running","details":"x"}"#
        );
    }

    #[test]
    fn missing_env_names_the_variable() {
        let e = CniError::missing_env("CNI_NETNS");
        assert_eq!(e.code, INVALID_ENV);
        assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);
    }

    #[test]
    fn grpc_statuses_map_to_codes() {
        let cases = [
            (tonic::Status::unavailable("no lease yet"), TRY_AGAIN_LATER),
            (tonic::Status::deadline_exceeded("slow"), TRY_AGAIN_LATER),
            (
                tonic::Status::resource_exhausted("no free address"),
                POOL_EXHAUSTED,
            ),
            (
                tonic::Status::resource_exhausted("no free block"),
                POOL_EXHAUSTED,
            ),
            (
                tonic::Status::invalid_argument("bad pool"),
                CONTROLD_REFUSED,
            ),
            (tonic::Status::not_found("no allocation"), CONTROLD_REFUSED),
            (
                tonic::Status::failed_precondition("broken pool"),
                CONTROLD_REFUSED,
            ),
            (
                tonic::Status::permission_denied("root only"),
                PERMISSION_DENIED,
            ),
            (tonic::Status::internal("oops"), CONTROLD_FAILED),
        ];
        for (status, code) in cases {
            let e = CniError::from(&status);
            assert_eq!(e.code, code, "{status:?}");
            assert_eq!(e.msg, status.message());
        }
        assert_eq!(
            CniError::from(&tonic::Status::internal("")).msg,
            "kolach-controld answered Internal"
        );
    }
}
