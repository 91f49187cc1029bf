//! `kolachctl completions SHELL` prints a script (no daemon needed), the same
//! one kolach-docgen installs.

use std::process::Command;

#[test]
fn completions_bash_prints_a_script() {
    let out = Command::new(env!("CARGO_BIN_EXE_kolachctl"))
        .args(["completions", "bash"])
        .env_remove("KOLACH_RUN_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("complete -F _kolachctl"), "{script}");
    let mut same = Vec::new();
    kolachctl::cli::completions(clap_complete::Shell::Bash, &mut same);
    assert_eq!(script.as_bytes(), same);
}
