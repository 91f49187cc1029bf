//! [`run`]: check (and make right) the VPC at each change of what this host
//! wants and every [`RESYNC`] after; keep going on every error.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::creds::Credentials;
use super::ec2::{default_endpoint, Ec2};
use super::http::Http;
use super::imds::Imds;
use super::plan::{plan, Call, Want};
use super::xml::{Interface, RouteTable};
use super::{AwsError, AwsStatus, Desired, Settings};
use crate::event::Shutdown;

/// Between two full checks when all is well.
pub const RESYNC: Duration = Duration::from_secs(30);
/// After a failed check.
pub const RETRY: Duration = Duration::from_secs(10);

/// How often the loop checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub resync: Duration,
    pub retry: Duration,
}

impl Timing {
    /// [`RESYNC`] (or `KOLACH_AWS_RESYNC` seconds) and [`RETRY`] (never
    /// longer than the resync).
    pub fn from_env() -> Timing {
        let resync = std::env::var("KOLACH_AWS_RESYNC")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| *s > 0.0 && s.is_finite())
            .map(Duration::from_secs_f64)
            .unwrap_or(RESYNC);
        Timing {
            resync,
            retry: RETRY.min(resync),
        }
    }
}

pub async fn run(
    settings: Settings,
    desired: watch::Receiver<Option<Desired>>,
    status: watch::Sender<AwsStatus>,
    shutdown: Shutdown,
) {
    run_with(settings, desired, status, shutdown, Timing::from_env()).await
}

/// [`run`] with the timing given (tests).
pub async fn run_with(
    settings: Settings,
    mut desired: watch::Receiver<Option<Desired>>,
    status: watch::Sender<AwsStatus>,
    mut shutdown: Shutdown,
    timing: Timing,
) {
    let Timing { resync, retry } = timing;
    let mut backend = Backend::new(settings);
    let mut last_error = String::new();
    loop {
        let want = desired.borrow_and_update().clone();
        let next = match want {
            None => {
                // Nothing to keep (no lease yet, or it was lost): say so
                // rather than show the last check as current.
                status.send_if_modified(|s| {
                    let was = (s.ok, s.message.clone());
                    s.ok = false;
                    s.message = "no subnet to route (no lease)".into();
                    was != (s.ok, s.message.clone())
                });
                None
            }
            Some(want) => {
                let outcome = tokio::select! {
                    r = backend.check(&want, &status) => r,
                    _ = shutdown.wait() => return,
                };
                let now = unix_now();
                match outcome {
                    Ok(()) => {
                        if !last_error.is_empty() {
                            info!("aws-vpc: routes right again");
                            last_error.clear();
                        }
                        status.send_modify(|s| {
                            s.ok = true;
                            s.message.clear();
                            s.checked_unix = now;
                        });
                        Some(resync)
                    }
                    Err(message) => {
                        // One line per new trouble; the same again is debug.
                        if message != last_error {
                            warn!(error = %message, retry_in = ?retry, "aws-vpc: routes not right");
                            last_error = message.clone();
                        } else {
                            debug!(error = %message, "aws-vpc: still not right");
                        }
                        status.send_modify(|s| {
                            s.ok = false;
                            s.message = message;
                            s.checked_unix = now;
                        });
                        Some(retry)
                    }
                }
            }
        };
        tokio::select! {
            _ = shutdown.wait() => return,
            changed = desired.changed() => if changed.is_err() { return },
            _ = sleep_opt(next) => {}
        }
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What is learnt once and kept: the clients, the instance and region.
struct Backend {
    settings: Settings,
    http: Http,
    imds: Option<Arc<Imds>>,
    ec2: Option<Ec2>,
    instance_id: String,
}

impl Backend {
    fn new(settings: Settings) -> Backend {
        Backend {
            settings,
            http: Http::default(),
            imds: None,
            ec2: None,
            instance_id: String::new(),
        }
    }

    /// Instance id, region, clients: asked of instance metadata once.
    async fn setup(&mut self, status: &watch::Sender<AwsStatus>) -> Result<(), AwsError> {
        if self.ec2.is_some() {
            return Ok(());
        }
        let imds = match &self.imds {
            Some(i) => i.clone(),
            None => {
                let i = Arc::new(Imds::new(
                    &self.settings.metadata_endpoint,
                    self.http.clone(),
                )?);
                self.imds = Some(i.clone());
                i
            }
        };
        if self.instance_id.is_empty() {
            self.instance_id = imds.get("/latest/meta-data/instance-id").await?;
        }
        let region = match &self.settings.region {
            Some(r) => r.clone(),
            None => match imds.get("/latest/meta-data/placement/region").await {
                Ok(r) => r,
                // Metadata older than placement/region (2020): the zone
                // less its letter.
                Err(e) => {
                    let zone = imds
                        .get("/latest/meta-data/placement/availability-zone")
                        .await
                        .map_err(|_| e)?;
                    zone.trim_end_matches(|c: char| c.is_ascii_lowercase())
                        .to_string()
                }
            },
        };
        let endpoint = self
            .settings
            .endpoint
            .clone()
            .unwrap_or_else(|| default_endpoint(&region));
        let creds = Arc::new(Credentials::new(
            self.settings.access_key_id.clone(),
            self.settings.secret_access_key.clone(),
            self.settings.session_token.clone(),
            imds,
        ));
        info!(
            instance = %self.instance_id,
            %region,
            %endpoint,
            credentials = creds.source(),
            "aws-vpc: talking to EC2"
        );
        self.ec2 = Some(Ec2::new(&endpoint, &region, creds, self.http.clone())?);
        status.send_modify(|s| {
            s.instance_id = self.instance_id.clone();
            s.region = region;
        });
        Ok(())
    }

    /// One full check; the error is the one line for the log and status.
    async fn check(
        &mut self,
        want: &Desired,
        status: &watch::Sender<AwsStatus>,
    ) -> Result<(), String> {
        self.setup(status).await.map_err(|e| e.to_string())?;
        let ec2 = self.ec2.as_ref().expect("set up above");

        let eni = interface(ec2, &self.instance_id, want)
            .await
            .map_err(|e| e.to_string())?;
        status.send_modify(|s| s.interface_id = eni.interface_id.clone());
        // Every step gets its turn even when one fails (the routes are
        // worth having while the check is still on); all failures are
        // reported together.
        let mut errors = Vec::new();
        if eni.source_dest_check {
            // Per interface, not per instance: flannel's instance-wide call
            // failed on instances with several interfaces (#447).
            match ec2.disable_source_dest_check(&eni.interface_id).await {
                Ok(()) => {
                    status.send_modify(|s| s.writes += 1);
                    info!(interface = %eni.interface_id, "aws-vpc: source/destination check turned off");
                }
                Err(e) => errors.push(format!("interface {}: {e}", eni.interface_id)),
            }
        }

        let tables = tables(ec2, want, &eni).await.map_err(|e| e.to_string())?;
        status
            .send_modify(|s| s.tables = tables.iter().map(|t| t.route_table_id.clone()).collect());

        let plan_want = Want {
            network: want.network,
            subnet: want.subnet,
            interface_id: &eni.interface_id,
        };
        for t in &tables {
            for call in plan(&t.routes, &plan_want) {
                match apply(ec2, &t.route_table_id, &eni.interface_id, &call).await {
                    Ok(()) => status.send_modify(|s| s.writes += 1),
                    Err(e) => {
                        errors.push(format!("table {}: {e}", t.route_table_id));
                        // A table that refuses one call will refuse the rest.
                        break;
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// The instance's interface holding `want.public_ip`.
async fn interface(ec2: &Ec2, instance_id: &str, want: &Desired) -> Result<Interface, AwsError> {
    let inst = ec2.describe_instance(instance_id).await?;
    inst.interfaces
        .into_iter()
        .find(|i| i.private_ips.contains(&want.public_ip))
        .ok_or_else(|| {
            AwsError::Setup(format!(
                "no network interface of {instance_id} has the address {} (the host's PublicIP \
                 must be one of the instance's private addresses)",
                want.public_ip
            ))
        })
}

/// `RouteTableID` when set; else the table associated with the interface's
/// subnet; else the VPC's main table.
async fn tables(ec2: &Ec2, want: &Desired, eni: &Interface) -> Result<Vec<RouteTable>, AwsError> {
    if !want.route_tables.is_empty() {
        let got = ec2.route_tables_by_id(&want.route_tables).await?;
        if let Some(missing) = want
            .route_tables
            .iter()
            .find(|id| !got.iter().any(|t| &t.route_table_id == *id))
        {
            return Err(AwsError::Setup(format!("route table {missing} not found")));
        }
        return Ok(got);
    }
    let by_subnet = ec2
        .route_tables_where(&[("association.subnet-id", &eni.subnet_id)])
        .await?;
    if !by_subnet.is_empty() {
        return Ok(by_subnet);
    }
    let main = ec2
        .route_tables_where(&[("vpc-id", &eni.vpc_id), ("association.main", "true")])
        .await?;
    if main.is_empty() {
        return Err(AwsError::Setup(format!(
            "no route table for subnet {} and no main table in {}",
            eni.subnet_id, eni.vpc_id
        )));
    }
    Ok(main)
}

async fn apply(ec2: &Ec2, table: &str, eni: &str, call: &Call) -> Result<(), AwsError> {
    match call {
        Call::Create { destination } => {
            match ec2.create_route(table, *destination, eni).await {
                // Someone made it between our look and now: make it ours.
                Err(e) if e.code() == Some("RouteAlreadyExists") => {
                    ec2.replace_route(table, *destination, eni).await?
                }
                r => r?,
            }
            info!(table, destination = %destination, target = eni, "aws-vpc: route created");
        }
        Call::Replace { destination, was } => {
            ec2.replace_route(table, *destination, eni).await?;
            info!(table, destination = %destination, target = eni, was = %was, "aws-vpc: route replaced");
        }
        Call::Delete { destination, was } => {
            match ec2.delete_route(table, *destination).await {
                Err(e) if e.code() == Some("InvalidRoute.NotFound") => {}
                r => r?,
            }
            info!(table, destination = %destination, was = %was, "aws-vpc: blackhole route deleted");
        }
    }
    Ok(())
}
