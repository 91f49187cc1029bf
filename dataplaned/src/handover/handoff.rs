//! The hot-upgrade protocol between two images of kolach-dataplaned, as pure
//! functions: the check a new binary answers before it is trusted, and the
//! state the old image hands over in one environment variable when it
//! re-executes the binary (fd numbers kept open across `execve`, plus what
//! the process carries: upgrade count, start time, counters).
//!
//! The format is `key=value` words with a version; unknown keys are ignored,
//! so a newer image can add keys an older one skips. Format 2 hands over
//! a list of TUN queues and sockets (`tun=5,8 udp=6,9`, in queue order);
//! format 1, for an image from before queues, one of each.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::fd::RawFd;

/// The environment variable holding the handover state.
pub const ENV: &str = "KOLACH_DATAPLANED_HANDOFF";
/// The handover format this image writes to an image that adopts it.
pub const VERSION: u32 = 2;
/// The handover formats this image can adopt (announced by `--upgrade-check`).
pub const ACCEPTS: &[u32] = &[1, 2];
/// The program name at the start of the check line.
const PROGRAM: &str = "kolach-dataplaned";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handoff {
    /// The listening gRPC socket (always handed over).
    pub listener: RawFd,
    /// The format to write ([`VERSION`], or 1 for an older image).
    pub format: u32,
    /// The udp backend's TUN queues and UDP sockets in queue order, when it
    /// runs (at most one of each in format 1).
    pub tun: Vec<RawFd>,
    pub udp: Vec<RawFd>,
    /// Upgrades before this one; the new image is number `upgrades + 1`.
    pub upgrades: u32,
    /// When the first image of this process started (unix milliseconds).
    pub started_unix_ms: i64,
    /// CLOCK_MONOTONIC (which survives exec) when the packet loop stopped, in µs.
    pub paused_at_us: u64,
    /// The packet counters, in [`crate::datapath::counters::Counters::values`] order.
    pub counters: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    #[error("word {0:?} is not key=value")]
    NotKeyValue(String),
    #[error("handover format version {0} is not one this binary can adopt ({ACCEPTS:?})")]
    Version(String),
    #[error("no {0} in the handover state")]
    Missing(&'static str),
    #[error("{key}={value} is not a valid value")]
    BadValue { key: String, value: String },
    #[error("fd {0} is handed over twice")]
    DuplicateFd(RawFd),
}

impl Handoff {
    /// The environment variable's value.
    pub fn encode(&self) -> String {
        let mut s = format!("v={} listen={}", self.format, self.listener);
        for (key, fds) in [("tun", &self.tun), ("udp", &self.udp)] {
            if !fds.is_empty() {
                let list: Vec<String> = fds.iter().map(RawFd::to_string).collect();
                let _ = write!(s, " {key}={}", list.join(","));
            }
        }
        let _ = write!(
            s,
            " upgrades={} started_ms={} paused_us={}",
            self.upgrades, self.started_unix_ms, self.paused_at_us
        );
        if !self.counters.is_empty() {
            let c: Vec<String> = self.counters.iter().map(u64::to_string).collect();
            let _ = write!(s, " counters={}", c.join(","));
        }
        s
    }

    pub fn parse(text: &str) -> Result<Handoff, HandoffError> {
        let mut h = Handoff::default();
        let mut version = None;
        let mut listener = None;
        for word in text.split_whitespace() {
            let (k, v) = word
                .split_once('=')
                .ok_or_else(|| HandoffError::NotKeyValue(word.to_string()))?;
            let bad = || HandoffError::BadValue {
                key: k.to_string(),
                value: v.to_string(),
            };
            // 0..=2 are stdio: a handed-over socket is never one of them.
            let fd = |v: &str| v.parse::<RawFd>().ok().filter(|fd| *fd > 2).ok_or_else(bad);
            let fds = || v.split(',').map(fd).collect::<Result<Vec<_>, _>>();
            match k {
                "v" => version = Some(v.to_string()),
                "listen" => listener = Some(fd(v)?),
                "tun" => h.tun = fds()?,
                "udp" => h.udp = fds()?,
                "upgrades" => h.upgrades = v.parse().map_err(|_| bad())?,
                "started_ms" => h.started_unix_ms = v.parse().map_err(|_| bad())?,
                "paused_us" => h.paused_at_us = v.parse().map_err(|_| bad())?,
                "counters" => {
                    h.counters = v
                        .split(',')
                        .map(|n| n.parse().map_err(|_| bad()))
                        .collect::<Result<_, _>>()?
                }
                _ => {}
            }
        }
        let version = version.ok_or(HandoffError::Missing("v"))?;
        h.format = version
            .parse()
            .ok()
            .filter(|n| ACCEPTS.contains(n))
            .ok_or(HandoffError::Version(version))?;
        h.listener = listener.ok_or(HandoffError::Missing("listen"))?;
        let mut seen = BTreeSet::new();
        for fd in h.fds() {
            if !seen.insert(fd) {
                return Err(HandoffError::DuplicateFd(fd));
            }
        }
        Ok(h)
    }

    /// The fds handed over, for clearing and restoring close-on-exec.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.listener];
        fds.extend(&self.tun);
        fds.extend(&self.udp);
        fds
    }
}

/// What `kolach-dataplaned --upgrade-check` prints: its version and the
/// handover formats it adopts.
pub fn check_line(version: &str) -> String {
    let accepts: Vec<String> = ACCEPTS.iter().map(u32::to_string).collect();
    format!("{PROGRAM} {version} handoff={}", accepts.join(","))
}

/// What a new binary said in its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub version: String,
    /// The newest handover format both images know.
    pub format: u32,
}

/// Reads a new binary's check output; Err says why it may not take over.
pub fn parse_check(stdout: &str) -> Result<CheckReport, String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(PROGRAM))
        .ok_or_else(|| {
            format!(
                "it did not answer the check (expected a line starting with {PROGRAM:?}, got {:?})",
                stdout.trim()
            )
        })?;
    let mut words = line.split_whitespace().skip(1);
    let version = words
        .next()
        .ok_or_else(|| format!("no version in {line:?}"))?
        .to_string();
    let accepts: Vec<u32> = words
        .find_map(|w| w.strip_prefix("handoff="))
        .map(|list| list.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    let Some(format) = ACCEPTS
        .iter()
        .rev()
        .copied()
        .find(|f| *f <= VERSION && accepts.contains(f))
    else {
        return Err(format!(
            "version {version} cannot adopt this image's handover (formats {ACCEPTS:?}, it accepts {accepts:?}); stop and start the service instead"
        ));
    };
    Ok(CheckReport { version, format })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Handoff {
        Handoff {
            listener: 7,
            format: VERSION,
            tun: vec![5, 8],
            udp: vec![6, 9],
            upgrades: 3,
            started_unix_ms: 1_722_950_000_123,
            paused_at_us: 987_654_321,
            counters: vec![1, 2, 3, 0, 18446744073709551615],
        }
    }

    #[test]
    fn roundtrips() {
        let h = full();
        let text = h.encode();
        assert_eq!(
            text,
            "v=2 listen=7 tun=5,8 udp=6,9 upgrades=3 started_ms=1722950000123 paused_us=987654321 counters=1,2,3,0,18446744073709551615"
        );
        assert_eq!(Handoff::parse(&text), Ok(h));
        // No udp backend: only the listener.
        let bare = Handoff {
            listener: 3,
            format: VERSION,
            ..Default::default()
        };
        assert_eq!(Handoff::parse(&bare.encode()), Ok(bare.clone()));
        assert_eq!(bare.fds(), vec![3]);
        assert_eq!(full().fds(), vec![7, 5, 8, 6, 9]);
    }

    #[test]
    fn format_1_is_what_images_before_queues_write_and_read() {
        let old = "v=1 listen=7 tun=5 udp=6 upgrades=3 started_ms=1 paused_us=2";
        let h = Handoff::parse(old).unwrap();
        assert_eq!(
            (h.format, h.tun.clone(), h.udp.clone()),
            (1, vec![5], vec![6])
        );
        // Written for an old image: one fd per key, as it parses them.
        assert_eq!(h.encode(), old);
    }

    #[test]
    fn unknown_keys_are_skipped() {
        let h = Handoff::parse("v=1 listen=4 future=thing upgrades=1").unwrap();
        assert_eq!((h.listener, h.upgrades, h.tun), (4, 1, vec![]));
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        use HandoffError::*;
        assert_eq!(Handoff::parse("listen=4"), Err(Missing("v")));
        assert_eq!(Handoff::parse("v=3 listen=4"), Err(Version("3".into())));
        assert_eq!(Handoff::parse("v=x listen=4"), Err(Version("x".into())));
        assert_eq!(Handoff::parse("v=1 tun=4"), Err(Missing("listen")));
        assert_eq!(
            Handoff::parse("v=1 listen=1"),
            Err(BadValue {
                key: "listen".into(),
                value: "1".into()
            })
        );
        assert!(matches!(
            Handoff::parse("v=1 listen=4 udp=-5"),
            Err(BadValue { .. })
        ));
        assert!(matches!(
            Handoff::parse("v=2 listen=4 tun=5,,6"),
            Err(BadValue { .. })
        ));
        assert!(matches!(
            Handoff::parse("v=1 listen=4 counters=1,x"),
            Err(BadValue { .. })
        ));
        assert_eq!(Handoff::parse("v=1 listen=4 tun=4"), Err(DuplicateFd(4)));
        assert_eq!(
            Handoff::parse("v=2 listen=4 tun=5,6 udp=6"),
            Err(DuplicateFd(6))
        );
        assert_eq!(
            Handoff::parse("v=1 listen"),
            Err(NotKeyValue("listen".into()))
        );
    }

    #[test]
    fn check_line_is_understood() {
        let line = check_line("0.1.0");
        assert_eq!(line, "kolach-dataplaned 0.1.0 handoff=1,2");
        assert_eq!(
            parse_check(&format!("{line}\n")),
            Ok(CheckReport {
                version: "0.1.0".into(),
                format: 2
            })
        );
        // An image from before queues gets format 1.
        let old = parse_check("kolach-dataplaned 0.0.9 handoff=1").unwrap();
        assert_eq!(old.format, 1);
        // A future binary accepting several formats, among them ours.
        let new = parse_check("kolach-dataplaned 0.3.0 handoff=2,3").unwrap();
        assert_eq!(new.format, 2);
    }

    #[test]
    fn check_failures_say_why() {
        let e = parse_check("kolach-dataplaned 0.9.0 handoff=3").unwrap_err();
        assert!(e.contains("cannot adopt") && e.contains("0.9.0"), "{e}");
        let e = parse_check("kolach-dataplaned 0.0.1").unwrap_err();
        assert!(e.contains("cannot adopt"), "{e}");
        let e = parse_check("error: unexpected argument '--upgrade-check'").unwrap_err();
        assert!(e.contains("did not answer the check"), "{e}");
        assert!(parse_check("").is_err());
    }
}
