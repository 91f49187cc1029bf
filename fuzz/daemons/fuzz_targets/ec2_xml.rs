//! An EC2 answer as it may come off the wire (or from something posing as
//! EC2): any bytes. Reading it never panics, errors fit on a log line, and
//! whatever route table it describes, the plan only ever writes our own
//! subnet's route (one call at most) and deletes only blackholes inside
//! Network that someone created, never another host's active route.
#![no_main]

use ipnet::Ipv4Net;
use kolach_controld::aws::plan::{plan, Call, Want};
use kolach_controld::aws::xml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let short = |e: &dyn std::fmt::Display| assert!(e.to_string().len() < 1024);
    if let Some(e) = xml::api_error(body) {
        assert!(!e.code.is_empty());
    }
    let _ = xml::returned_true(body);
    if let Err(e) = xml::source_dest_check(body) {
        short(&e);
    }
    match xml::instances(body) {
        Ok(list) => {
            for i in list {
                assert!(i.interfaces.iter().all(|n| !n.interface_id.is_empty()));
            }
        }
        Err(e) => short(&e),
    }
    let tables = match xml::route_tables(body) {
        Ok(t) => t,
        Err(e) => return short(&e),
    };
    let network: Ipv4Net = "10.244.0.0/16".parse().unwrap();
    let subnet: Ipv4Net = "10.244.1.0/24".parse().unwrap();
    let want = Want {
        network,
        subnet,
        interface_id: "eni-me",
    };
    for t in tables {
        let calls = plan(&t.routes, &want);
        let writes = calls
            .iter()
            .filter(|c| matches!(c, Call::Create { .. } | Call::Replace { .. }))
            .count();
        assert!(writes <= 1, "{calls:?}");
        for c in &calls {
            match c {
                Call::Create { destination } | Call::Replace { destination, .. } => {
                    assert_eq!(*destination, subnet)
                }
                Call::Delete { destination, .. } => {
                    assert!(network.contains(destination) && *destination != subnet);
                    assert!(t.routes.iter().any(|r| r.destination == Some(*destination)
                        && r.blackhole
                        && (r.origin.is_empty() || r.origin == "CreateRoute")));
                    // Never a route that some entry shows active.
                    assert!(!t
                        .routes
                        .iter()
                        .any(|r| r.destination == Some(*destination) && !r.blackhole));
                }
            }
        }
    }
});
