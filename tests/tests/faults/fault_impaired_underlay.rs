//! The underlay between two hosts impaired both ways like netem would
//! (3% loss, 10 ms ± 5 ms delay, 10% reordering, 2% duplication, 2%
//! corruption of the inner packet that the outer checksum does not catch):
//! no daemon crashes, an iperf3 TCP flow across the overlay completes, every
//! corrupted inner header is dropped by the receiving dataplane as
//! malformed (and corrupted payloads by the pod's TCP checksum), and once
//! the impairment ends pods ping without loss.
//!
//! This kernel has no sch_netem, so `kolach_testkit::traffic::impair` does netem's work
//! in userspace on the hosts' overlay datagrams.

use std::time::Duration;

use anyhow::ensure;
use kolach_testkit::traffic::impair::{Impairer, Impairment};
use kolach_testkit::traffic::iperf::Iperf;
use kolach_testkit::{lab::topology, query, run};

const UDP_PORT: u16 = 8285;
const SECONDS: u32 = 8;

#[test]
fn tcp_completes_over_an_impaired_underlay() {
    run("impair", |lab| {
        lab.mesh(2)?;
        let imp = Impairment {
            loss: 0.03,
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            reorder: 0.10,
            duplicate: 0.02,
            corrupt: 0.02,
        };
        let before = [lab.dp_status(1)?, lab.dp_status(2)?];
        let i1 = Impairer::start(&lab.host(1).ns, topology::host_ip(2), UDP_PORT, imp, 1)?;
        let i2 = Impairer::start(&lab.host(2).ns, topology::host_ip(1), UDP_PORT, imp, 2)?;

        let ping = lab.ping_pods(1, 2, 20)?;
        eprintln!(
            "ping pod1 -> pod2 impaired: {}/{} answered, avg {:?} ms",
            ping.received, ping.transmitted, ping.avg_rtt_ms
        );
        let flow = Iperf::start(
            &lab.pod(2).ns,
            &lab.pod(1).ns,
            lab.pod(2).ip,
            SECONDS,
            &lab.dir,
        )?;
        let r = flow.finish()?;
        eprintln!(
            "iperf3 pod1 -> pod2 over the impaired underlay: {}",
            r.describe()
        );
        ensure!(r.error.is_none(), "iperf3 failed: {:?}", r.error);
        ensure!(r.received_bytes > 0, "nothing arrived");

        let (s1, s2) = (i1.stop(), i2.stop());
        eprintln!("impairer host1 -> host2: {s1:?}");
        eprintln!("impairer host2 -> host1: {s2:?}");
        ensure!(
            s1.seen > 1000 && s2.seen > 100,
            "too little traffic impaired"
        );
        ensure!(
            s1.dropped > 0 && s1.reordered > 0 && s1.duplicated > 0 && s1.corrupted_header > 0,
            "every impairment should have happened at least once: {s1:?}"
        );

        for (i, n) in [1u8, 2].into_iter().enumerate() {
            let h = &mut lab.host_mut(n);
            ensure!(h.dataplaned.is_running(), "host{n} dataplaned died");
            ensure!(h.controld.is_running(), "host{n} controld died");
            // Host n receives what the other host's impairer sent.
            let sent_bad = if n == 1 {
                s2.corrupted_header
            } else {
                s1.corrupted_header
            };
            // The last datagrams may still be on their way into the
            // dataplane when the impairer has stopped: wait a moment.
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            let (now, malformed) = loop {
                let now = lab.dp_status(n)?;
                let malformed =
                    query::dropped(&now, "malformed") - query::dropped(&before[i], "malformed");
                if malformed >= sent_bad || std::time::Instant::now() > deadline {
                    break (now, malformed);
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            eprintln!(
                "host{n}: {malformed} datagrams dropped as malformed; {sent_bad} sent with a corrupted inner header; drops {:?}",
                query::dropped_all(&now)
            );
            ensure!(
                malformed == sent_bad,
                "host{n}: {malformed} malformed drops for {sent_bad} corrupted headers"
            );
        }
        lab.assert_all_pairs_ping(5)
    });
}
