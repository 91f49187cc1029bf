//! A host that joins a running mesh is reachable from every pod within 2 s of
//! its subnet.env appearing.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kolach_testkit::{lab, run, traffic, Lab};

#[test]
fn late_host_is_reachable_within_two_seconds() {
    run("latejoin", late_join);
}

fn late_join(lab: &mut Lab) -> Result<()> {
    lab.mesh(2)?;
    let n = lab.add_host()?;
    lab.start_host(n)?;
    let env = lab.host_mut(n).wait_subnet_env(lab::READY_WITHIN)?;
    let appeared = Instant::now();
    lab.add_pod(n)?;
    let target = lab.pod(n).ip;
    let deadline = appeared + Duration::from_secs(2);

    let results: Vec<(u8, std::result::Result<Instant, traffic::PingResult>)> =
        std::thread::scope(|s| {
            let handles: Vec<_> = [1u8, 2]
                .into_iter()
                .map(|src| {
                    let ns = lab.pod(src).ns.clone();
                    s.spawn(move || (src, traffic::ping_until(&ns, target, deadline, 0.2)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
    let mut failures = Vec::new();
    for (src, r) in results {
        match r {
            Ok(t) => eprintln!(
                "pod{src} -> pod{n} ({target}) first reply {:?} after subnet.env",
                t - appeared
            ),
            Err(last) => failures.push(format!(
                "pod{src} -> pod{n} ({target}, subnet {}): no reply within 2s of subnet.env: {}",
                env.lease(),
                last.output.trim()
            )),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    lab.wait_converged(Duration::from_secs(5))?;
    lab.assert_all_pairs_ping(2)
}
