//! What a runtime hands the CNI plugin: the network config on stdin (any
//! bytes, up to the first NUL) and the `CNI_*` environment (the rest: one
//! `KEY=VALUE` per NUL-separated piece). Parsing never panics, an accepted
//! config speaks a version the plugin supports, and an accepted environment
//! keeps libcni's and the kernel's rules.
#![no_main]

use std::collections::HashMap;

use kolach_cni::config::{self, check_container_id, check_ifname};
use kolach_cni::version::{Command, Version, SUPPORTED};
use kolach_cni::{args, error::CniError};
use libfuzzer_sys::fuzz_target;

fn short(e: &CniError) {
    assert!(e.msg.len() < 64 * 1024, "message of {} bytes", e.msg.len());
}

fuzz_target!(|data: &[u8]| {
    let (stdin, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };

    match config::parse(stdin) {
        Ok(c) => {
            assert!(SUPPORTED.contains(&c.version));
            assert_eq!(Version::parse(c.version.as_str()), Some(c.version));
            assert_eq!(config::peek_version(stdin).as_deref(), Some(c.version.as_str()));
            assert!(c.run_dir.is_absolute());
            assert!(!c.name.is_empty());
            assert!(c.mtu.map_or(true, |m| (68..=65535).contains(&m)));
        }
        Err(e) => short(&e),
    }
    let _ = config::peek_version(stdin);

    let vars: HashMap<String, String> = rest
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    let get = |k: &str| vars.get(k).cloned();
    match config::command(&get) {
        Ok(cmd) => match config::env(cmd, &get) {
            Ok(env) => {
                if matches!(cmd, Command::Add | Command::Check | Command::Del) {
                    assert!(check_container_id(&env.container_id).is_ok());
                    assert!(check_ifname(&env.ifname).is_ok());
                    assert!(!env.ifname.is_empty() && env.ifname.len() <= 15);
                }
                if matches!(cmd, Command::Add | Command::Check) {
                    assert!(!env.netns.is_empty());
                }
            }
            Err(e) => short(&e),
        },
        Err(e) => short(&e),
    }
    if let Some(raw) = vars.get("CNI_ARGS") {
        match args::parse(raw) {
            Ok(_) => assert!(raw.split(';').all(|p| p.is_empty() || p.contains('='))),
            Err(e) => short(&e),
        }
    }
});
