//! The dataplane never replaces a newer table with an older one (DESIGN §6):
//! snapshots pushed by hand over its socket — an older generation of the
//! running controld's epoch, another epoch built from an older etcd
//! revision, both with an empty table — are refused with both versions
//! named, and forwarding goes on with the table it had. The same version
//! again is "already applied".

use std::time::Duration;

use anyhow::{ensure, Result};
use kolach_testkit::{run, Lab};

#[test]
fn stale_snapshots_pushed_by_hand_are_refused() {
    run("stale", stale);
}

fn stale(lab: &mut Lab) -> Result<()> {
    lab.mesh(2)?;
    let current = lab.saved_snapshot(1)?;
    let v = current.version.expect("a versioned snapshot");
    let routes_before = lab.dp_routes(1)?;
    ensure!(routes_before.len() == 1, "{routes_before:?}");

    let mut older_generation = current.clone();
    if let Some(ov) = older_generation.version.as_mut() {
        ov.generation = v.generation - 1;
    }
    older_generation.routes.clear();
    let r = lab.dp_apply(1, older_generation)?;
    eprintln!(
        "older generation: applied={} reason={:?}",
        r.applied, r.reason
    );
    ensure!(!r.applied, "an older generation was applied");
    ensure!(
        r.reason
            .contains(&format!("generation {}", v.generation - 1))
            && r.reason.contains(&format!("generation {}", v.generation)),
        "the reason names both versions: {}",
        r.reason
    );
    ensure!(r.applied_version == Some(v), "{:?}", r.applied_version);

    let mut older_revision = current.clone();
    if let Some(ov) = older_revision.version.as_mut() {
        ov.epoch = v.epoch + 1;
        ov.generation = 1;
        ov.etcd_revision = v.etcd_revision - 1;
    }
    older_revision.routes.clear();
    let r = lab.dp_apply(1, older_revision)?;
    eprintln!(
        "other epoch, older etcd revision: applied={} reason={:?}",
        r.applied, r.reason
    );
    ensure!(
        !r.applied && r.reason.contains("older etcd revision"),
        "{}",
        r.reason
    );

    let r = lab.dp_apply(1, current.clone())?;
    ensure!(r.applied && r.reason == "already applied", "{r:?}");

    let st = lab.dp_status(1)?;
    ensure!(st.applied_version == Some(v), "{:?}", st.applied_version);
    ensure!(
        st.errors.iter().any(|e| e.contains("older")),
        "the last refusal shows in the status errors: {:?}",
        st.errors
    );
    ensure!(lab.dp_routes(1)? == routes_before, "the table changed");
    lab.assert_all_pairs_ping(3)?;
    // controld's next snapshot (same version) is taken as before.
    lab.wait_converged(Duration::from_secs(2))
}
