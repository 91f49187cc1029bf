use std::collections::BTreeSet;
use std::process::Command;

use crate::{binaries, completions, man};

fn page_text(file: &str) -> String {
    let page = man::pages()
        .into_iter()
        .find(|p| p.file_name == file)
        .unwrap_or_else(|| panic!("no page {file}"));
    String::from_utf8(page.roff).unwrap()
}

/// roff escapes every '-' as `\-`.
fn roff_escaped(s: &str) -> String {
    s.replace('-', r"\-")
}

#[test]
fn every_binary_gets_a_page_in_section_8() {
    let names: BTreeSet<String> = man::pages().into_iter().map(|p| p.file_name).collect();
    for want in [
        "kolach-controld.8",
        "kolach-dataplaned.8",
        "kolachctl.8",
        "kolach.8",
        "kolachctl-status.8",
        "kolachctl-pool-create.8",
        "kolachctl-ipam-check.8",
        "kolachctl-dataplane-upgrade.8",
        "kolachctl-completions.8",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    assert!(!names.contains("kolachctl-help.8"), "{names:?}");
    for p in man::pages() {
        let text = String::from_utf8(p.roff).unwrap();
        let th = text.lines().find(|l| l.starts_with(".TH ")).unwrap();
        assert!(th.contains(" 8 "), "{}: {th}", p.file_name);
    }
}

#[test]
fn every_long_flag_is_in_its_page() {
    for p in man::pages() {
        let text = String::from_utf8(p.roff).unwrap();
        for arg in p.command.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                let flag = roff_escaped(&format!("--{long}"));
                assert!(text.contains(&flag), "{}: no {flag}", p.file_name);
            }
        }
        assert!(
            !text.contains(r"\fB\-\-upgrade\-check"),
            "{}: hidden flag listed",
            p.file_name
        );
    }
}

#[test]
fn pages_carry_the_manual_sections_and_no_date() {
    for b in binaries::all() {
        let text = page_text(&format!("{}.8", b.name));
        assert!(!text.contains(".SH EXTRA"), "{}", b.name);
        for s in b.manual {
            let title = match s.title.contains(' ') {
                true => format!("{:?}", s.title),
                false => s.title.to_string(),
            };
            assert!(
                text.contains(&format!(".SH {title}\n")),
                "{}: no {}",
                b.name,
                s.title
            );
        }
        let th = text.lines().find(|l| l.starts_with(".TH ")).unwrap();
        // .TH TITLE 8 "" "kolach VERSION" "System Administration"
        assert!(th.contains(r#" 8 "" "#), "{th}");
        let year = |w: &str| w.len() >= 4 && w[..4].chars().all(|c| c.is_ascii_digit());
        assert!(!th.split(['"', ' ', '-']).any(year), "a date in {th}");
    }
}

#[test]
fn pages_are_the_same_every_time() {
    let a: Vec<Vec<u8>> = man::pages().into_iter().map(|p| p.roff).collect();
    let b: Vec<Vec<u8>> = man::pages().into_iter().map(|p| p.roff).collect();
    assert_eq!(a, b);
}

#[test]
fn the_cni_page_says_what_it_is() {
    let text = page_text("kolach.8");
    assert!(text.contains("CNI plugin"));
    assert!(text.contains("CNI_COMMAND"));
    assert!(text.contains(".SH \"EXIT STATUS\""));
    assert!(!text.contains(".SH OPTIONS"));
}

#[test]
fn the_old_hand_written_facts_are_kept() {
    let controld = page_text("kolach-controld.8");
    for fact in [
        "KOLACH_IPMASQ",
        "READY=1",
        "ec2:ModifyNetworkInterfaceAttribute",
        "AWS_SECURITY_TOKEN",
        "controld.sock",
    ] {
        assert!(controld.contains(fact), "controld: {fact}");
    }
    let dataplaned = page_text("kolach-dataplaned.8");
    for fact in [
        ".SH \"HOT UPGRADE\"",
        "FDSTORE=1",
        "snapshot.pb",
        "CAP_BPF",
        "SO_REUSEPORT",
        "IFF_VNET_HDR",
    ] {
        assert!(dataplaned.contains(fact), "dataplaned: {fact}");
    }
    let upgrade = page_text("kolachctl-dataplane-upgrade.8");
    assert!(upgrade.contains("ExecReload"));
}

#[test]
fn completions_cover_the_subcommands() {
    let scripts = completions::scripts();
    let names: BTreeSet<String> = scripts
        .iter()
        .map(|s| s.path.display().to_string())
        .collect();
    for bin in ["kolach-controld", "kolach-dataplaned", "kolachctl"] {
        for want in [
            format!("bash/{bin}"),
            format!("zsh/_{bin}"),
            format!("fish/{bin}.fish"),
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }
    assert_eq!(names.len(), 9, "no script for the CNI plugin: {names:?}");
    for s in scripts.iter().filter(|s| s.bin == "kolachctl") {
        let text = String::from_utf8_lossy(&s.text);
        for sub in [
            "status",
            "leases",
            "routes",
            "pool",
            "add-subnet",
            "ipam",
            "upgrade",
            "completions",
        ] {
            assert!(text.contains(sub), "{:?}: no {sub}", s.shell);
        }
        let mut same = Vec::new();
        kolachctl::cli::completions(s.shell, &mut same);
        assert_eq!(same, s.text);
    }
    for s in scripts.iter().filter(|s| s.bin == "kolach-controld") {
        let text = String::from_utf8_lossy(&s.text);
        assert!(text.contains("etcd-endpoints"), "{:?}", s.shell);
    }
}

/// `man` renders every page without a warning. man-db is in the Makefile's
/// DEB_PACKAGES, so it is there wherever the tests run.
#[test]
fn man_renders_every_page_without_warnings() {
    let dir = std::env::temp_dir().join(format!("kolach-docgen-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let written = crate::generate(&dir).unwrap();
    let pages: Vec<_> = written
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "8"))
        .collect();
    assert!(pages.len() >= 4);
    let mut complaints = Vec::new();
    for page in pages {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(page)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "")
            .env_remove("MANPAGER")
            .env("PAGER", "cat")
            .output()
            .expect("man (Debian package man-db) is needed to check the pages");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !stderr.trim().is_empty() || out.stdout.is_empty() {
            complaints.push(format!("{}: {}\n{stderr}", page.display(), out.status));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(complaints.is_empty(), "{}", complaints.join("\n"));
}

/// `--help` shows the same manual sections; `-h` stays short.
#[test]
fn long_help_carries_the_manual_and_short_help_does_not() {
    for b in binaries::all().into_iter().filter(|b| b.interactive) {
        let long = b.command.clone().render_long_help().to_string();
        let short = b.command.clone().render_help().to_string();
        for s in b.manual {
            assert!(
                long.contains(&format!("\n{}:\n", s.title)),
                "{}: {}",
                b.name,
                s.title
            );
            assert!(
                !short.contains(&format!("\n{}:\n", s.title)),
                "{}: {}",
                b.name,
                s.title
            );
        }
    }
}
