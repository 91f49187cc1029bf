//! Which CNI spec versions the plugin speaks, which commands each has, and the
//! VERSION answer. The result of ADD per version is in [`crate::result`].

use std::fmt;

use serde::Serialize;

use crate::error::{CniError, INCOMPATIBLE_VERSION};

/// A spec version the plugin accepts in `cniVersion` and answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// Every version the plugin speaks, oldest first (VERSION lists them).
pub const SUPPORTED: [Version; 5] = [
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

impl Version {
    /// The newest version: the answer's version when the asked one is unknown.
    pub const LATEST: Version = Version::V1_1_0;

    pub fn parse(s: &str) -> Option<Version> {
        SUPPORTED.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Before 1.0.0 every `ips` entry names its IP version.
    pub fn ips_carry_version(self) -> bool {
        self < Version::V1_0_0
    }

    /// Whether `command` exists in this version: CHECK came in 0.4.0, GC and
    /// STATUS in 1.1.0.
    pub fn has(self, command: Command) -> bool {
        match command {
            Command::Add | Command::Del | Command::Version => true,
            Command::Check => self >= Version::V0_4_0,
            Command::Gc | Command::Status => self >= Version::V1_1_0,
        }
    }

    /// `has`, as the error the runtime gets (code 1).
    pub fn allows(self, command: Command) -> Result<(), CniError> {
        if self.has(command) {
            return Ok(());
        }
        let since = match command {
            Command::Check => "0.4.0",
            _ => "1.1.0",
        };
        Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {self} has no {} (it came in {since}); ask with cniVersion {since} or later",
                command.as_str()
            ),
        ))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `cniVersion` from the config, checked (code 1 for one the plugin does not speak).
pub fn negotiate(asked: &str) -> Result<Version, CniError> {
    Version::parse(asked).ok_or_else(|| {
        CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "incompatible CNI versions: the config asks for {asked:?}, kolach speaks {}",
                supported_list()
            ),
        )
    })
}

fn supported_list() -> String {
    SUPPORTED.map(Version::as_str).join(", ")
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// The VERSION answer. It is in the version asked when the plugin speaks it,
/// else in the newest, so any runtime can read which versions there are.
pub fn version_answer(asked: Option<&str>) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        cni_version: &'static str,
        supported_versions: Vec<&'static str>,
    }
    let v = asked.and_then(Version::parse).unwrap_or(Version::LATEST);
    serde_json::to_string(&Answer {
        cni_version: v.as_str(),
        supported_versions: SUPPORTED.map(Version::as_str).to_vec(),
    })
    .expect("plain strings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_the_five() {
        for v in SUPPORTED {
            assert_eq!(Version::parse(v.as_str()), Some(v));
        }
        for bad in ["0.1.0", "0.2.0", "1.2.0", "1.0", "", "v1.0.0"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
            let e = negotiate(bad).unwrap_err();
            assert_eq!(e.code, INCOMPATIBLE_VERSION);
            assert!(
                e.msg.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
                "{}",
                e.msg
            );
        }
    }

    #[test]
    fn command_matrix() {
        use Command::{Add, Check, Del, Gc, Status};
        let table = [
            // version, ADD, DEL, CHECK, GC, STATUS, VERSION
            (Version::V0_3_0, [true, true, false, false, false, true]),
            (Version::V0_3_1, [true, true, false, false, false, true]),
            (Version::V0_4_0, [true, true, true, false, false, true]),
            (Version::V1_0_0, [true, true, true, false, false, true]),
            (Version::V1_1_0, [true, true, true, true, true, true]),
        ];
        for (v, row) in table {
            for (c, want) in [Add, Del, Check, Gc, Status, Command::Version]
                .into_iter()
                .zip(row)
            {
                assert_eq!(v.has(c), want, "{v} {c:?}");
                assert_eq!(v.allows(c).is_ok(), want, "{v} {c:?}");
            }
        }
        let e = Version::V0_3_1.allows(Check).unwrap_err();
        assert_eq!(e.code, INCOMPATIBLE_VERSION);
        assert_eq!(
            e.msg,
            "cniVersion 0.3.1 has no CHECK (it came in 0.4.0); ask with cniVersion 0.4.0 or later"
        );
        assert!(Version::V1_0_0
            .allows(Gc)
            .unwrap_err()
            .msg
            .contains("1.1.0"));
    }

    #[test]
    fn commands_parse() {
        for c in ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"] {
            assert_eq!(Command::parse(c).unwrap().as_str(), c);
        }
        assert_eq!(Command::parse("add"), None);
    }

    #[test]
    fn version_answer_golden() {
        let all = r#""supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]"#;
        assert_eq!(
            version_answer(Some("0.4.0")),
            format!(r#"{{"cniVersion":"0.4.0",{all}}}"#)
        );
        assert_eq!(
            version_answer(Some("9.9.9")),
            format!(r#"{{"cniVersion":"1.1.0",{all}}}"#)
        );
        assert_eq!(
            version_answer(None),
            format!(r#"{{"cniVersion":"1.1.0",{all}}}"#)
        );
    }
}
