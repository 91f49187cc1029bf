//! `kolach-dataplaned --cleanup`, run in a host after its daemons stopped,
//! leaves no kolach object behind (checked with `ip -j`): no `kolach0`, no
//! `kolach.*` link, no protocol-107 route in any table, no saved snapshot. The
//! host ran vxlan; leftovers of the other backends (a TUN `kolach0`, another
//! vxlan device, a host-gw-style route) are planted beside it, and objects
//! that are not kolach's must survive.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kolach_testkit::lab::backend::is_kolach_link;
use kolach_testkit::process::Stopped;
use kolach_testkit::{bins, kernel::objects, netns, run, Backend, Lab};

#[test]
fn cleanup_leaves_no_kolach_object_behind() {
    run("cleanup", cleanup);
}

fn run_cleanup(lab: &Lab, n: u8) -> Result<String> {
    let h = lab.host(n);
    let bin = bins::require(bins::DATAPLANED);
    let dir = h.dir.display().to_string();
    let out = netns::exec(
        &h.ns,
        &bin.to_string_lossy(),
        &["--cleanup", "--run-dir", &dir],
        Duration::from_secs(30),
    )?;
    let text = format!("{}{}", out.stdout, out.stderr);
    ensure!(
        out.success(),
        "kolach-dataplaned --cleanup failed ({}):\n{text}",
        out.status
    );
    Ok(text)
}

fn cleanup(lab: &mut Lab) -> Result<()> {
    lab.mesh_with(2, &Backend::Vxlan.config())?;
    lab.wait_kernel_converged(Backend::Vxlan, Duration::from_secs(5))?;
    let (c, d) = lab.host_mut(1).stop();
    ensure!(
        matches!((&c, &d), (Stopped::Graceful(_), Stopped::Graceful(_))),
        "host1 daemons did not stop gracefully: {c:?} {d:?}"
    );
    let ns = lab.host(1).ns.clone();
    let snapshot = lab.host(1).dir.join("snapshot.pb");
    ensure!(
        snapshot.exists(),
        "no saved snapshot at {}",
        snapshot.display()
    );

    // Leftovers of the other backends, and bystanders that are not kolach's.
    for args in [
        &["tuntap", "add", "dev", "kolach0", "mode", "tun"][..],
        &[
            "link",
            "add",
            "kolach.42",
            "type",
            "vxlan",
            "id",
            "42",
            "dstport",
            "8472",
            "dev",
            "eth0",
            "nolearning",
        ],
        &["link", "set", "kolach.42", "up"],
        &[
            "route",
            "add",
            "10.50.200.0/24",
            "via",
            "198.18.0.2",
            "dev",
            "eth0",
            "proto",
            "107",
        ],
        &[
            "route",
            "add",
            "10.50.201.0/24",
            "via",
            "198.18.0.2",
            "dev",
            "eth0",
            "proto",
            "107",
            "table",
            "100",
        ],
        &[
            "link", "add", "vx9", "type", "vxlan", "id", "9", "dstport", "4789", "dev", "eth0",
        ],
        &[
            "route",
            "add",
            "10.60.0.0/24",
            "via",
            "198.18.0.2",
            "dev",
            "eth0",
            "proto",
            "static",
        ],
    ] {
        netns::ip(&ns, args)?;
    }
    let before = objects::read(&ns)?;
    eprintln!(
        "host1 before cleanup: links {:?}, {} proto-107 routes (main), {} neighbours, {} fdb entries",
        before.link_names(),
        before.routes.len(),
        before.neighbours.len(),
        before.fdb.len()
    );
    ensure!(
        before.links.contains_key("kolach.1") && before.routes.len() == 2,
        "host1 is not set up as expected: {before:#?}"
    );

    let out = run_cleanup(lab, 1)?;
    eprintln!("--cleanup said:\n{}", out.trim_end());

    let links = objects::links(&ns)?;
    let left: Vec<&String> = links.keys().filter(|l| is_kolach_link(l)).collect();
    ensure!(left.is_empty(), "kolach links left behind: {left:?}");
    let routes = objects::kolach_routes_all_tables(&ns)?;
    ensure!(
        routes.is_empty(),
        "proto-107 routes left behind: {routes:?}"
    );
    ensure!(!snapshot.exists(), "{} left behind", snapshot.display());

    // Not kolach's: untouched.
    ensure!(
        links.contains_key("vx9"),
        "cleanup removed vx9 (not kolach's)"
    );
    let kbr0 = kolach_testkit::kernel::link(&ns, "kbr0")?.context("cleanup removed kbr0")?;
    ensure!(!kbr0.v4.is_empty(), "kbr0 lost its address");
    let static_routes = netns::ip(&ns, &["-j", "route", "show", "proto", "static"])?;
    ensure!(
        static_routes.contains("10.60.0.0/24"),
        "cleanup removed a static route: {static_routes}"
    );
    let eth0 = kolach_testkit::kernel::link(&ns, "eth0")?.context("eth0")?;
    ensure!(
        eth0.v4 == vec!["198.18.0.1/24".parse()?],
        "eth0 changed: {eth0:?}"
    );

    // Nothing left to do: a second run succeeds too.
    run_cleanup(lab, 1).context("second --cleanup on a clean host")?;
    Ok(())
}
