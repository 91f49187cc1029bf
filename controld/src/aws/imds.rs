//! Instance metadata: IMDSv2 (a session token from `PUT /latest/api/token`,
//! sent with every GET) first; IMDSv1 (plain GETs) when the token call is
//! refused (403, 404, 405) or unanswered, as on old or v1-only setups.
//! Instances that require v2 (flannel's aws-vpc knew only v1) just work.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::http::{Http, Url};
use super::AwsError;

/// Seconds a token is asked for; it is renewed a minute before.
const TOKEN_TTL: u64 = 21_600;
/// The metadata service answers locally, in milliseconds; an instance
/// without it (or a hop limit of 1 in a container) must not stall a check.
const TIMEOUT: Duration = Duration::from_secs(2);

pub struct Imds {
    url: Url,
    http: Http,
    token: Mutex<TokenState>,
}

enum TokenState {
    /// Not asked yet (or expired, or refused with 401 since).
    Unknown,
    Token {
        value: String,
        renew_at: Instant,
    },
    /// The token call was refused: IMDSv1.
    V1,
}

impl Imds {
    pub fn new(endpoint: &str, http: Http) -> Result<Imds, AwsError> {
        Ok(Imds {
            url: Url::parse(endpoint)?,
            http,
            token: Mutex::new(TokenState::Unknown),
        })
    }

    /// The text at `path` (e.g. `/latest/meta-data/instance-id`).
    pub async fn get(&self, path: &str) -> Result<String, AwsError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let mut headers = Vec::new();
            if let Some(t) = &token {
                headers.push(("x-aws-ec2-metadata-token".to_string(), t.clone()));
            }
            let resp = self
                .http
                .send(&self.url, "GET", path, &headers, Vec::new(), TIMEOUT)
                .await
                .map_err(|e| AwsError::Imds(e.to_string()))?;
            match resp.status {
                200 => return Ok(resp.text().trim().to_string()),
                // The token expired early (the service restarted), or v1
                // was guessed after a slow token call and the instance
                // requires v2: once more, asking for a token.
                401 if attempt == 0 => {
                    *self.token.lock().await = TokenState::Unknown;
                }
                s => {
                    return Err(AwsError::Imds(format!(
                        "GET {path}: HTTP {s}{}",
                        if s == 401 {
                            " (IMDSv2 token refused)"
                        } else {
                            ""
                        }
                    )))
                }
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// The session token; None when the service is v1 only.
    async fn token(&self) -> Result<Option<String>, AwsError> {
        let mut state = self.token.lock().await;
        match &*state {
            TokenState::Token { value, renew_at } if Instant::now() < *renew_at => {
                return Ok(Some(value.clone()))
            }
            TokenState::V1 => return Ok(None),
            _ => {}
        }
        let headers = [(
            "x-aws-ec2-metadata-token-ttl-seconds".to_string(),
            TOKEN_TTL.to_string(),
        )];
        let asked = Instant::now();
        match self
            .http
            .send(
                &self.url,
                "PUT",
                "/latest/api/token",
                &headers,
                Vec::new(),
                TIMEOUT,
            )
            .await
        {
            Ok(r) if r.status == 200 => {
                let value = r.text().trim().to_string();
                *state = TokenState::Token {
                    value: value.clone(),
                    renew_at: asked + Duration::from_secs(TOKEN_TTL - 60),
                };
                Ok(Some(value))
            }
            Ok(r) if (403..=405).contains(&r.status) => {
                tracing::info!(
                    status = r.status,
                    "instance metadata: no IMDSv2 token, using IMDSv1"
                );
                *state = TokenState::V1;
                Ok(None)
            }
            Ok(r) => Err(AwsError::Imds(format!(
                "PUT /latest/api/token: HTTP {}",
                r.status
            ))),
            Err(AwsError::Timeout(_)) => {
                // A PUT that never comes back: the hop limit is 1 and we
                // are one hop further (a container); v1 GETs may still pass.
                tracing::info!("instance metadata: the IMDSv2 token call timed out, using IMDSv1");
                *state = TokenState::V1;
                Ok(None)
            }
            Err(e) => Err(AwsError::Imds(e.to_string())),
        }
    }
}
