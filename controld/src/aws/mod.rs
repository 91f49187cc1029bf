//! The aws-vpc backend (DESIGN §11): routes in the VPC's route tables, one
//! per host's subnet, pointing at that host's network interface.
//!
//! The parts, pure ones first:
//! - [`sigv4`]: Signature Version 4 (pinned by AWS's test vectors).
//! - [`xml`]: EC2's XML answers and errors, read.
//! - [`plan`]: a route table's routes and what this host wants → the calls.
//! - [`http`]: one HTTP/1.1 exchange (https with the system's roots; plain
//!   http for an `AWS_ENDPOINT_URL*` or metadata endpoint that says so).
//! - [`imds`]: instance metadata, IMDSv2 token first, IMDSv1 as fallback.
//! - [`creds`]: the environment's key, else the instance role's, cached and
//!   refreshed five minutes before it expires.
//! - [`ec2`]: the EC2 Query API calls, signed, retried on throttling/5xx.
//! - [`task`]: [`run`]'s loop.
//!
//! Why not aws-sdk-ec2: it and aws-config bring well over a hundred crates
//! and minutes of compiling for six EC2 calls; this client adds one XML
//! reader and the system's root certificates on top of what tonic already
//! brings (hyper, rustls).
//!
//! Timing: a full check at each change of [`Desired`] and every
//! [`task::RESYNC`] (30 s; `KOLACH_AWS_RESYNC=<seconds>` overrides it, for
//! tests that run the binary; in-process tests pass a [`task::Timing`] to
//! [`task::run_with`]) after; after a failure, again in [`task::RETRY`] (10 s, or the
//! resync when that is shorter). Throttling and 5xx answers are retried
//! inside a check, [`ec2::ATTEMPTS`] times, 200 ms doubling to 5 s (plus up
//! to half at random); an AuthFailure with the instance role's key fetches
//! the key again once. Any other error is one warn line (once per new
//! error) and the status line, and the check runs again later.
//! Secrets are never logged: [`sigv4::Key`]'s `Debug` hides them, and
//! errors carry AWS's code and message only.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tokio::sync::watch;

use crate::event::Shutdown;

pub mod creds;
pub mod ec2;
pub mod http;
pub mod imds;
pub mod plan;
pub mod sigv4;
pub mod task;
pub mod xml;

#[cfg(test)]
mod tests;

/// What this host wants of the VPC: its own subnet routed to its instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The overlay `Network`: blackhole routes inside it are removed.
    pub network: Ipv4Net,
    /// This host's leased subnet.
    pub subnet: Ipv4Net,
    /// The host's PublicIP: the instance's private address on one of its
    /// network interfaces (that interface is the route's target).
    pub public_ip: Ipv4Addr,
    /// `Backend.RouteTableID` (empty: the table associated with the
    /// instance's subnet, else the VPC's main table).
    pub route_tables: Vec<String>,
}

/// Where the backend stands, for `kolachctl status` and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsStatus {
    /// Every table routes the subnet to this instance.
    pub ok: bool,
    /// Empty when ok; else what is wrong, one line, no secrets.
    pub message: String,
    pub instance_id: String,
    pub interface_id: String,
    pub region: String,
    /// The route tables kept.
    pub tables: Vec<String>,
    /// When the last full check ended (unix seconds; 0: never).
    pub checked_unix: i64,
    /// Write calls made since start (CreateRoute, ReplaceRoute, DeleteRoute,
    /// ModifyNetworkInterfaceAttribute).
    pub writes: u64,
}

/// Settings read from the environment as the AWS SDKs read them (DESIGN §11).
/// Its `Debug` never prints the secret key or the session token.
#[derive(Clone, Default)]
pub struct Settings {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub metadata_endpoint: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("Settings")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("metadata_endpoint", &self.metadata_endpoint)
            .finish()
    }
}

impl Settings {
    pub fn from_env() -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Settings {
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN").or_else(|| var("AWS_SECURITY_TOKEN")),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            endpoint: var("AWS_ENDPOINT_URL_EC2").or_else(|| var("AWS_ENDPOINT_URL")),
            metadata_endpoint: var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .unwrap_or_else(|| "http://169.254.169.254".to_string()),
        }
    }
}

/// Runs until shutdown: whenever `desired` changes, and every resync period
/// after, makes the VPC's route tables right for this host (retrying
/// failures with backoff), publishing where it stands on `status`. `None`
/// in `desired`: nothing to keep (another backend, or no lease yet).
pub async fn run(
    settings: Settings,
    desired: watch::Receiver<Option<Desired>>,
    status: watch::Sender<AwsStatus>,
    shutdown: Shutdown,
) {
    task::run(settings, desired, status, shutdown).await
}

/// Everything that can go wrong talking to AWS; the `Display` is the one
/// line logged and shown in the status (codes and messages, no secrets).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    /// AWS answered with an error.
    #[error("{action}: {code}: {message}{}", hint(code))]
    Api {
        action: String,
        /// The HTTP status.
        status: u16,
        code: String,
        message: String,
        request_id: String,
    },
    /// No answer (connect, TLS, timeout) or one that is no EC2 answer.
    #[error("{0}")]
    Http(String),
    /// No answer within the call's time.
    #[error("{0}")]
    Timeout(String),
    #[error("instance metadata: {0}")]
    Imds(String),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("unexpected answer: {0}")]
    Parse(String),
    /// The instance does not look as this host's settings say.
    #[error("{0}")]
    Setup(String),
}

impl AwsError {
    /// Worth another attempt within the same check: throttling, AWS's own
    /// trouble (5xx), and no answer at all.
    pub fn retryable(&self) -> bool {
        match self {
            AwsError::Api { status, code, .. } => {
                *status >= 500
                    || matches!(
                        code.as_str(),
                        "Throttling"
                            | "ThrottlingException"
                            | "RequestLimitExceeded"
                            | "RequestThrottled"
                            | "RequestThrottledException"
                            | "TooManyRequestsException"
                            | "InternalError"
                            | "InternalFailure"
                            | "ServiceUnavailable"
                            | "Unavailable"
                    )
            }
            AwsError::Http(_) | AwsError::Timeout(_) => true,
            _ => false,
        }
    }

    /// The AWS error code, when AWS answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// What a person should do about the codes that have an answer.
fn hint(code: &str) -> String {
    match code {
        "RouteLimitExceeded" => " (the route table is full: AWS allows 50 routes per table by \
            default, one per host here; ask AWS for a higher routes-per-route-table quota, \
            or use fewer hosts or larger subnets)"
            .into(),
        "AuthFailure" | "SignatureDoesNotMatch" | "InvalidClientTokenId" => {
            " (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the instance role)".into()
        }
        "RequestExpired" | "RequestTimeTooSkewed" => {
            " (the request was signed with this host's clock: check that it is right)".into()
        }
        "UnauthorizedOperation" => {
            " (the credentials lack an ec2: permission: DescribeInstances, DescribeRouteTables, \
             CreateRoute, ReplaceRoute, DeleteRoute, ModifyNetworkInterfaceAttribute)"
                .into()
        }
        _ => String::new(),
    }
}
