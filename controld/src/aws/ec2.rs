//! The EC2 Query API (version 2016-11-15): form-encoded POSTs signed with
//! SigV4, XML answers. Only the calls the backend makes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;

use super::creds::Credentials;
use super::http::{Http, Url};
use super::sigv4::{self, uri_encode};
use super::xml::{self, Instance, RouteTable};
use super::AwsError;

pub const API_VERSION: &str = "2016-11-15";
/// Attempts of one call when AWS throttles or fails (5xx, no answer).
pub const ATTEMPTS: u32 = 5;
/// The wait after the first throttled attempt; it doubles up to
/// [`BACKOFF_MAX`], each wait up to half as long again at random.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Ec2 {
    url: Url,
    region: String,
    creds: Arc<Credentials>,
    http: Http,
}

/// The region's endpoint (`AWS_ENDPOINT_URL*` aside).
pub fn default_endpoint(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("https://ec2.{region}.amazonaws.com.cn")
    } else {
        format!("https://ec2.{region}.amazonaws.com")
    }
}

impl Ec2 {
    pub fn new(
        endpoint: &str,
        region: &str,
        creds: Arc<Credentials>,
        http: Http,
    ) -> Result<Ec2, AwsError> {
        Ok(Ec2 {
            url: Url::parse(endpoint)?,
            region: region.to_string(),
            creds,
            http,
        })
    }

    /// One call, retried with backoff while AWS throttles or fails; the
    /// answer's body on success.
    pub async fn call(
        &self,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        let mut backoff = crate::backoff::Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
        let mut refreshed = false;
        let mut attempt = 1;
        loop {
            match self.call_once(action, params).await {
                Ok(body) => return Ok(body),
                Err(e) if e.retryable() && attempt < ATTEMPTS => {
                    // Up to half again at random: hosts throttled together
                    // (the account's limit is shared) come back apart.
                    let base = backoff.next_delay();
                    let delay = base + base.mul_f64(rand::random::<f64>() / 2.0);
                    tracing::debug!(action, attempt, error = %e, ?delay, "EC2 call retried");
                    tokio::time::sleep(delay).await;
                }
                // A role key AWS no longer takes (revoked, or the clock
                // moved): fetch it again, once.
                Err(e)
                    if !refreshed
                        && matches!(self.creds.as_ref(), Credentials::Role { .. })
                        && matches!(
                            e.code(),
                            Some(
                                "AuthFailure"
                                    | "ExpiredToken"
                                    | "RequestExpired"
                                    | "InvalidClientTokenId"
                            )
                        ) =>
                {
                    refreshed = true;
                    self.creds.forget().await;
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
        }
    }

    async fn call_once(
        &self,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        let key = self.creds.key().await?;
        let mut body = format!("Action={}&Version={API_VERSION}", uri_encode(action));
        for (k, v) in params {
            body.push('&');
            body.push_str(&uri_encode(k));
            body.push('=');
            body.push_str(&uri_encode(v));
        }
        let now = SystemTime::now();
        let mut headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("host".to_string(), self.url.host_header()),
            ("x-amz-date".to_string(), sigv4::amz_date(now)),
        ];
        if let Some(t) = &key.session_token {
            headers.push(("x-amz-security-token".to_string(), t.clone()));
        }
        let path = if self.url.base.is_empty() {
            "/".to_string()
        } else {
            format!("{}/", self.url.base)
        };
        let signed = sigv4::sign(
            &key,
            &self.region,
            "ec2",
            now,
            &sigv4::Request {
                method: "POST",
                path: &path,
                query: "",
                headers: headers.clone(),
                body: body.as_bytes(),
            },
        );
        // Host goes in from the URL, as signed.
        headers.retain(|(k, _)| k != "host");
        headers.push(("authorization".to_string(), signed.authorization));
        // Unsigned: it names us in AWS's logs (CloudTrail).
        headers.push((
            "user-agent".to_string(),
            concat!("kolach-controld/", env!("CARGO_PKG_VERSION")).to_string(),
        ));
        let resp = self
            .http
            .send(&self.url, "POST", "/", &headers, body.into_bytes(), TIMEOUT)
            .await?;
        let text = resp.text();
        if resp.status == 200 {
            return Ok(text);
        }
        match xml::api_error(&text) {
            Some(e) => Err(AwsError::Api {
                action: action.to_string(),
                status: resp.status,
                code: e.code,
                message: e.message,
                request_id: e.request_id,
            }),
            None => Err(AwsError::Api {
                action: action.to_string(),
                status: resp.status,
                code: format!("HTTP{}", resp.status),
                message: text
                    .chars()
                    .take(200)
                    .collect::<String>()
                    .replace('\n', " "),
                request_id: String::new(),
            }),
        }
    }

    pub async fn describe_instance(&self, instance_id: &str) -> Result<Instance, AwsError> {
        let body = self
            .call("DescribeInstances", &[p("InstanceId.1", instance_id)])
            .await?;
        xml::instances(&body)?
            .into_iter()
            .find(|i| i.instance_id == instance_id)
            .ok_or_else(|| {
                AwsError::Setup(format!("DescribeInstances does not know {instance_id}"))
            })
    }

    /// The tables with these ids (all of them, or an error naming one AWS
    /// does not know).
    pub async fn route_tables_by_id(&self, ids: &[String]) -> Result<Vec<RouteTable>, AwsError> {
        let params: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| p(&format!("RouteTableId.{}", i + 1), id))
            .collect();
        xml::route_tables(&self.call("DescribeRouteTables", &params).await?)
    }

    /// The tables matching every filter (name, value).
    pub async fn route_tables_where(
        &self,
        filters: &[(&str, &str)],
    ) -> Result<Vec<RouteTable>, AwsError> {
        let mut params = Vec::new();
        for (i, (name, value)) in filters.iter().enumerate() {
            params.push(p(&format!("Filter.{}.Name", i + 1), name));
            params.push(p(&format!("Filter.{}.Value.1", i + 1), value));
        }
        xml::route_tables(&self.call("DescribeRouteTables", &params).await?)
    }

    pub async fn disable_source_dest_check(&self, interface_id: &str) -> Result<(), AwsError> {
        self.write(
            "ModifyNetworkInterfaceAttribute",
            &[
                p("NetworkInterfaceId", interface_id),
                p("SourceDestCheck.Value", "false"),
            ],
        )
        .await
    }

    pub async fn create_route(
        &self,
        table: &str,
        dest: Ipv4Net,
        interface_id: &str,
    ) -> Result<(), AwsError> {
        self.write(
            "CreateRoute",
            &route_params(table, dest, Some(interface_id)),
        )
        .await
    }

    pub async fn replace_route(
        &self,
        table: &str,
        dest: Ipv4Net,
        interface_id: &str,
    ) -> Result<(), AwsError> {
        self.write(
            "ReplaceRoute",
            &route_params(table, dest, Some(interface_id)),
        )
        .await
    }

    pub async fn delete_route(&self, table: &str, dest: Ipv4Net) -> Result<(), AwsError> {
        self.write("DeleteRoute", &route_params(table, dest, None))
            .await
    }

    async fn write(&self, action: &str, params: &[(String, String)]) -> Result<(), AwsError> {
        let body = self.call(action, params).await?;
        if xml::returned_true(&body) {
            Ok(())
        } else {
            Err(AwsError::Parse(format!(
                "{action} answered <return>false</return>"
            )))
        }
    }
}

fn p(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

fn route_params(table: &str, dest: Ipv4Net, interface_id: Option<&str>) -> Vec<(String, String)> {
    let mut v = vec![
        p("RouteTableId", table),
        p("DestinationCidrBlock", &dest.to_string()),
    ];
    if let Some(eni) = interface_id {
        v.push(p("NetworkInterfaceId", eni));
    }
    v
}
