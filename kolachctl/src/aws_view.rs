//! The aws-vpc backend's line in `kolachctl status`: how the VPC's route
//! tables stand for this host, as controld's AWS task last saw them.

use kolach_proto::control::AwsStatus;
use serde::Serialize;

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Aws {
    pub ok: bool,
    /// Empty when ok.
    pub message: String,
    pub instance_id: String,
    pub interface_id: String,
    pub region: String,
    pub tables: Vec<String>,
    /// When the last full check ended (unix seconds; 0: never).
    pub checked_unix: i64,
    /// Write calls (CreateRoute, ReplaceRoute, DeleteRoute,
    /// ModifyNetworkInterfaceAttribute) since controld started.
    pub writes: u64,
}

impl From<AwsStatus> for Aws {
    fn from(a: AwsStatus) -> Self {
        Aws {
            ok: a.ok,
            message: a.message,
            instance_id: a.instance_id,
            interface_id: a.interface_id,
            region: a.region,
            tables: a.tables,
            checked_unix: a.checked_unix,
            writes: a.writes,
        }
    }
}

impl Aws {
    /// `ok: instance i-…, eni-…, tables rtb-a rtb-b, 2 writes`, or
    /// `ERROR: <message>`, or `checking` before the first check ends.
    pub fn render(&self) -> String {
        if self.ok {
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".to_string()
                } else {
                    s.to_string()
                }
            };
            format!(
                "ok: instance {}, {}, tables {}, {} write{}",
                dash(&self.instance_id),
                dash(&self.interface_id),
                if self.tables.is_empty() {
                    "-".to_string()
                } else {
                    self.tables.join(" ")
                },
                self.writes,
                if self.writes == 1 { "" } else { "s" }
            )
        } else if !self.message.is_empty() {
            format!("ERROR: {}", self.message)
        } else {
            "checking (no full check done yet)".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_error_and_not_yet() {
        let ok = Aws::from(AwsStatus {
            ok: true,
            instance_id: "i-0abc".into(),
            interface_id: "eni-0def".into(),
            tables: vec!["rtb-a".into(), "rtb-b".into()],
            writes: 2,
            ..Default::default()
        });
        assert_eq!(
            ok.render(),
            "ok: instance i-0abc, eni-0def, tables rtb-a rtb-b, 2 writes"
        );
        let bad = Aws::from(AwsStatus {
            message: "AuthFailure: signature mismatch".into(),
            ..Default::default()
        });
        assert_eq!(bad.render(), "ERROR: AuthFailure: signature mismatch");
        assert_eq!(
            Aws::from(AwsStatus::default()).render(),
            "checking (no full check done yet)"
        );
    }
}
