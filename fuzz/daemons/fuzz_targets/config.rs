//! `<prefix>/config` as etcd may hold it: any bytes. The parser must never
//! panic, a config it accepts must be self-consistent, and whatever it says
//! about a bad one must fit on a log line.
#![no_main]

use kolach_controld::model::{config, subnet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match config::parse(data) {
        Ok(p) => {
            let c = &p.config;
            assert!(c.subnet_len >= c.network.prefix_len() + 2);
            assert!(c.subnet_len <= config::MAX_SUBNET_LEN);
            assert!(c.subnet_min.network() <= c.subnet_max.network());
            assert!(c.allows(c.subnet_min) && c.allows(c.subnet_max));
            let n = subnet::candidate_count(c);
            assert!(n >= 1);
            assert!(c.allows(subnet::candidate(c, n - 1)));
            // Never a table the kernel looks up itself.
            assert!(!(253..=255).contains(&c.export_table));
            for w in &p.warnings {
                assert!(w.len() < 1024, "warning of {} bytes", w.len());
            }
        }
        Err(e) => {
            let line = e.to_string();
            assert!(line.starts_with("config: "));
            assert!(line.len() < 1024, "error line of {} bytes", line.len());
        }
    }
});
