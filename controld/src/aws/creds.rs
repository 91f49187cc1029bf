//! Credentials: the environment's key when it has one, else the instance
//! role's from instance metadata (flannel read only the environment, #239).
//! The role's key is cached and fetched again five minutes before its
//! `Expiration`, or at once after AWS refused it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::imds::Imds;
use super::sigv4::{days_from_civil, Key};
use super::AwsError;

/// How long before `Expiration` a role's key is replaced.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

const ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/";

pub enum Credentials {
    Static(Key),
    Role {
        imds: Arc<Imds>,
        cached: Mutex<Option<(Key, SystemTime)>>,
    },
}

/// The role document's fields that matter (`Code`, `AccessKeyId`, …).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleDoc {
    code: Option<String>,
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
}

impl Credentials {
    /// The environment's key when both halves are set, else the role's.
    pub fn new(
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        session_token: Option<String>,
        imds: Arc<Imds>,
    ) -> Credentials {
        match (access_key_id, secret_access_key) {
            (Some(access_key_id), Some(secret_access_key)) => Credentials::Static(Key {
                access_key_id,
                secret_access_key,
                session_token,
            }),
            _ => Credentials::Role {
                imds,
                cached: Mutex::new(None),
            },
        }
    }

    /// A key good for at least the next few minutes.
    pub async fn key(&self) -> Result<Key, AwsError> {
        let (imds, cached) = match self {
            Credentials::Static(k) => return Ok(k.clone()),
            Credentials::Role { imds, cached } => (imds, cached),
        };
        let mut cached = cached.lock().await;
        let now = SystemTime::now();
        if let Some((key, expires)) = &*cached {
            if now + REFRESH_BEFORE < *expires {
                return Ok(key.clone());
            }
        }
        match fetch_role_key(imds).await {
            Ok((key, expires)) => {
                *cached = Some((key.clone(), expires));
                Ok(key)
            }
            // A failed refresh while the old key still holds: use it, and
            // ask again on the next call.
            Err(e) => match &*cached {
                Some((key, expires)) if now < *expires => {
                    tracing::warn!(error = %e, "instance role credentials not refreshed; the current ones still hold");
                    Ok(key.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// AWS refused the key: fetch the role's again at the next call.
    pub async fn forget(&self) {
        if let Credentials::Role { cached, .. } = self {
            *cached.lock().await = None;
        }
    }

    pub fn source(&self) -> &'static str {
        match self {
            Credentials::Static(_) => "environment",
            Credentials::Role { .. } => "instance role",
        }
    }
}

async fn fetch_role_key(imds: &Imds) -> Result<(Key, SystemTime), AwsError> {
    let roles = imds.get(ROLE_PATH).await.map_err(|e| {
        AwsError::Credentials(format!(
            "none in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and no instance role: {e}"
        ))
    })?;
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| AwsError::Credentials("the instance has no role".into()))?;
    let doc = imds.get(&format!("{ROLE_PATH}{role}")).await?;
    let (key, expires) = parse_role_doc(&doc)?;
    tracing::debug!(role, access_key_id = %key.access_key_id, "instance role credentials fetched");
    Ok((key, expires))
}

/// The role document → its key and when it expires.
pub fn parse_role_doc(doc: &str) -> Result<(Key, SystemTime), AwsError> {
    let d: RoleDoc = serde_json::from_str(doc)
        .map_err(|e| AwsError::Credentials(format!("the role document is not JSON: {e}")))?;
    if let Some(code) = d.code.as_deref().filter(|c| *c != "Success") {
        return Err(AwsError::Credentials(format!(
            "instance role: {code}: {}",
            d.message.unwrap_or_default()
        )));
    }
    let (Some(access_key_id), Some(secret_access_key)) = (d.access_key_id, d.secret_access_key)
    else {
        return Err(AwsError::Credentials(
            "the role document has no AccessKeyId/SecretAccessKey".into(),
        ));
    };
    let expiration = d.expiration.unwrap_or_default();
    let expires = parse_utc(&expiration).ok_or_else(|| {
        AwsError::Credentials(format!(
            "the role document's Expiration {expiration:?} is no time"
        ))
    })?;
    Ok((
        Key {
            access_key_id,
            secret_access_key,
            session_token: d.token,
        },
        expires,
    ))
}

/// `2026-12-07T05:00:00Z` (fractions of a second allowed) → the time.
pub fn parse_utc(s: &str) -> Option<SystemTime> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let time = time.split('.').next()?;
    let mut t = time.split(':');
    let h: u64 = t.next()?.parse().ok()?;
    let mi: u64 = t.next()?.parse().ok()?;
    let sec: u64 = t.next()?.parse().ok()?;
    if d.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let days = u64::try_from(days_from_civil(y, m, day)).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + mi * 60 + sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_document() {
        let doc = r#"{
          "Code" : "Success",
          "LastUpdated" : "2026-12-06T23:00:00Z",
          "Type" : "AWS-HMAC",
          "AccessKeyId" : "ASIAEXAMPLE",
          "SecretAccessKey" : "secretEXAMPLE",
          "Token" : "tokenEXAMPLE",
          "Expiration" : "2026-12-07T05:12:34Z"
        }"#;
        let (key, expires) = parse_role_doc(doc).unwrap();
        assert_eq!(key.access_key_id, "ASIAEXAMPLE");
        assert_eq!(key.session_token.as_deref(), Some("tokenEXAMPLE"));
        assert_eq!(super::super::sigv4::amz_date(expires), "20261207T051234Z");
        let err = parse_role_doc(r#"{"Code":"AssumeRoleUnauthorizedAccess","Message":"no"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("AssumeRoleUnauthorizedAccess"), "{err}");
        assert!(parse_role_doc("{}").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_utc("2015-08-30T12:36:00.123Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_440_938_160))
        );
        for bad in [
            "2015-08-30 12:36:00Z",
            "2015-13-01T00:00:00Z",
            "2015-08-30T12:36:00",
            "",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }
}
