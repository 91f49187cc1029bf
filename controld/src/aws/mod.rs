//! The aws-vpc backend (DESIGN §11): routes in the VPC's route tables.
//!
//! INTERFACE SKELETON: the EC2 client, the signer, instance metadata,
//! credentials and the route plan are being written behind exactly this
//! interface; the state task and the status view use only what is here.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tokio::sync::watch;

use crate::event::Shutdown;

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
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub metadata_endpoint: String,
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
    mut desired: watch::Receiver<Option<Desired>>,
    status: watch::Sender<AwsStatus>,
    shutdown: Shutdown,
) {
    let _ = (settings, &status, shutdown);
    while desired.changed().await.is_ok() {}
}
