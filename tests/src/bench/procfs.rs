//! CPU time and memory as `/proc` shows them: a process's utime + stime
//! (all its threads), its peak and current RSS, and the whole machine's busy
//! and softirq time.

use anyhow::{anyhow, Context, Result};

/// Clock ticks per second of `/proc` times.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime in ticks from a `/proc/<pid>/stat` line. The command name
/// is in parentheses and may hold spaces, so fields are counted after the
/// last `)`: state is field 3, utime 14, stime 15.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line of `/proc/<pid>/status` (VmHWM, VmRSS), in KiB.
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Machine-wide ticks from the `cpu` line of `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineTicks {
    /// Everything but idle and iowait, over all CPUs.
    pub busy: u64,
    pub softirq: u64,
}

pub fn parse_proc_stat(text: &str) -> Option<MachineTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already counted in user, so only the first 8 are summed.
    if v.len() < 7 {
        return None;
    }
    let total: u64 = v.iter().take(8).sum();
    Some(MachineTicks {
        busy: total - v[3] - v[4],
        softirq: v[6],
    })
}

/// CPU seconds a process has used so far.
pub fn process_cpu_secs(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_stat_ticks(&text).ok_or_else(|| anyhow!("cannot parse {path}"))?;
    Ok(ticks as f64 / clk_tck())
}

/// A process's VmHWM (peak RSS) and VmRSS in KiB.
pub fn process_rss_kb(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let get = |k| parse_status_kb(&text, k).ok_or_else(|| anyhow!("no {k} in {path}"));
    Ok((get("VmHWM")?, get("VmRSS")?))
}

/// The machine's busy and softirq time so far, in seconds.
pub fn machine_cpu_secs() -> Result<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let t = parse_proc_stat(&text).ok_or_else(|| anyhow!("cannot parse /proc/stat"))?;
    let hz = clk_tck();
    Ok((t.busy as f64 / hz, t.softirq as f64 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_after_a_name_with_spaces() {
        let stat = "4242 (kolach data) S 1 4242 4242 0 -1 4194560 800 0 0 0 \
                    150 37 0 0 20 0 6 0 12345 123456789 2000 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(187));
        assert_eq!(parse_stat_ticks("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_ticks(&own).is_some());
    }

    #[test]
    fn status_kb_lines() {
        let s = "Name:\tkolach-dataplan\nVmPeak:\t  20000 kB\nVmHWM:\t    9876 kB\nVmRSS:\t    9000 kB\n";
        assert_eq!(parse_status_kb(s, "VmHWM"), Some(9876));
        assert_eq!(parse_status_kb(s, "VmRSS"), Some(9000));
        assert_eq!(parse_status_kb(s, "VmSwap"), None);
        let (hwm, rss) = process_rss_kb(std::process::id()).unwrap();
        assert!(hwm >= rss && rss > 0);
    }

    #[test]
    fn machine_ticks() {
        let s = "cpu  100 5 50 1000 20 3 7 0 0 0\ncpu0 50 2 25 500 10 1 3 0 0 0\n";
        assert_eq!(
            parse_proc_stat(s),
            Some(MachineTicks {
                busy: 165,
                softirq: 7
            })
        );
        assert_eq!(parse_proc_stat("intr 1 2 3"), None);
        assert!(machine_cpu_secs().unwrap().0 > 0.0);
    }
}
