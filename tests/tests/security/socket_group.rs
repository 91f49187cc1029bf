//! DESIGN §7's socket mode where a group `kolach` exists: the socket is
//! 0660 and belongs to that group, so a member may ask (Status) but still
//! not push (Apply: only root or the controld user), and a user outside
//! the group cannot connect. Where the machine has no such group, the
//! dataplane runs in a mount namespace of its own whose /etc/group has one.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kolach_testkit::intruder::{mode_and_owner, run_as_nobody, run_as_nobody_in};
use kolach_testkit::{query, run, Lab};

const T: Duration = Duration::from_secs(20);

#[test]
fn with_a_kolach_group_the_socket_is_0660_for_its_members() {
    run("sockgrp", group_socket);
}

/// A gid no group of this machine has.
fn free_gid() -> Result<u32> {
    let groups = std::fs::read_to_string("/etc/group")?;
    let taken: Vec<u32> = groups
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    (60_000..65_000)
        .rev()
        .find(|g| !taken.contains(g))
        .context("no free gid in 60000..65000")
}

/// The gid of group kolach in /etc/group, if this machine has one.
fn kolach_gid(groups: &str) -> Option<u32> {
    groups
        .lines()
        .find_map(|l| l.strip_prefix("kolach:")?.split(':').nth(1)?.parse().ok())
}

fn group_socket(lab: &mut Lab) -> Result<()> {
    let groups = std::fs::read_to_string("/etc/group")?;
    let n = lab.add_host()?;
    let sock = lab.host(n).dataplaned_socket();
    let gid = match kolach_gid(&groups) {
        // Installed by kolach's sysusers.d: the daemon finds it as it is.
        Some(gid) => gid,
        None => {
            let gid = free_gid()?;
            let group_file = lab.dir.join("group");
            std::fs::write(&group_file, format!("{groups}kolach:x:{gid}:\n"))?;
            let p = &mut lab.host_mut(n).dataplaned;
            // ip netns exec <ns> unshare ... sh -c 'mount --bind <group> /etc/group && exec dataplaned ...'
            let mut args = vec![
                "--mount".to_string(),
                "--propagation".to_string(),
                "private".to_string(),
                "sh".to_string(),
                "-c".to_string(),
                r#"mount --bind "$0" /etc/group && exec "$@""#.to_string(),
                group_file.display().to_string(),
                p.program.display().to_string(),
            ];
            args.append(&mut p.args);
            p.args = args;
            p.program = "unshare".into();
            gid
        }
    };
    lab.host_mut(n).dataplaned.start()?;
    wait_listening(lab, &sock)?;

    let (mode, _, sock_gid) = mode_and_owner(&sock)?;
    eprintln!("{}: mode {mode:04o}, group {sock_gid}", sock.display());
    ensure!(mode == 0o660, "mode {mode:04o}, not 0660");
    ensure!(sock_gid == gid, "group {sock_gid}, not kolach ({gid})");

    let s = sock.display().to_string();
    let member = |what: &str| run_as_nobody_in(&lab.dir, &[gid], &[what, &s], T);
    let status = member("status")?;
    eprintln!("uid 65534 in group kolach, Status: {status}");
    ensure!(status.starts_with("code Ok"), "Status: {status}");
    let apply = member("apply")?;
    eprintln!("uid 65534 in group kolach, Apply: {apply}");
    ensure!(apply.starts_with("code PermissionDenied"), "Apply: {apply}");
    let outsider = run_as_nobody(&lab.dir, &["connect", &s], T)?;
    eprintln!("uid 65534 outside the group, connecting: {outsider}");
    ensure!(
        outsider.starts_with("error PermissionDenied"),
        "connect: {outsider}"
    );
    Ok(())
}

/// Until root gets the dataplane's status over `sock`.
fn wait_listening(lab: &Lab, sock: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lab.block_on(query::dataplane_status(sock)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                bail!(
                    "kolach-dataplaned does not answer on {}: {e:#}",
                    sock.display()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn the_kolach_group_is_found_by_its_name_only() {
    assert_eq!(kolach_gid("root:x:0:\nkolach:x:998:\n"), Some(998));
    assert_eq!(kolach_gid("kolachx:x:5:\nwheel:x:10:kolach\n"), None);
}
