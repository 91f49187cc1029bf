//! What one route table needs, decided from its routes alone (no I/O).
//!
//! - Our subnet's route: nothing when it is active and points at our
//!   interface; CreateRoute when there is none; ReplaceRoute when it points
//!   elsewhere or is a blackhole. Never delete-then-create: that left a
//!   window without a route at every flannel restart (flannel #226).
//! - Blackhole routes inside `Network` (hosts whose instance is gone) are
//!   deleted: flannel stopped on them (#509, #525). Only routes someone
//!   made (`origin` CreateRoute): propagated and local routes are not ours.
//! - Every other route is left alone: another host's active route, routes
//!   outside `Network`, and routes with no IPv4 destination (IPv6, prefix
//!   lists).
//!
//! Deletions come first: when the table is full (50 routes by default), the
//! room a dead host's route frees is what lets ours in.

use ipnet::Ipv4Net;

use super::xml::Route;

/// What this host wants of every table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want<'a> {
    pub network: Ipv4Net,
    pub subnet: Ipv4Net,
    pub interface_id: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Create {
        destination: Ipv4Net,
    },
    /// `was` says what it pointed at, for the log line.
    Replace {
        destination: Ipv4Net,
        was: String,
    },
    /// A blackhole route (`was`: its former target).
    Delete {
        destination: Ipv4Net,
        was: String,
    },
}

pub fn plan(routes: &[Route], want: &Want) -> Vec<Call> {
    let mut calls = Vec::new();
    for r in routes {
        let Some(dest) = r.destination else { continue };
        // DeleteRoute names a destination only: never when some entry
        // for it is active (no table AWS shows has two, but a wrong
        // answer must not cost a host its route).
        if dest != want.subnet
            && r.blackhole
            && want.network.contains(&dest)
            && (r.origin.is_empty() || r.origin == "CreateRoute")
            && !routes
                .iter()
                .any(|o| o.destination == Some(dest) && !o.blackhole)
            && !calls
                .iter()
                .any(|c| matches!(c, Call::Delete { destination, .. } if *destination == dest))
        {
            calls.push(Call::Delete {
                destination: dest,
                was: target(r),
            });
        }
    }
    match routes.iter().find(|r| r.destination == Some(want.subnet)) {
        None => calls.push(Call::Create {
            destination: want.subnet,
        }),
        Some(r) if !r.blackhole && r.interface_id.as_deref() == Some(want.interface_id) => {}
        Some(r) => calls.push(Call::Replace {
            destination: want.subnet,
            was: format!(
                "{}{}",
                target(r),
                if r.blackhole { " (blackhole)" } else { "" }
            ),
        }),
    }
    calls
}

/// A route's target, as a person reads it.
pub fn target(r: &Route) -> String {
    r.interface_id
        .clone()
        .or_else(|| r.instance_id.clone())
        .or_else(|| r.other_target.clone())
        .unwrap_or_else(|| "nothing".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "eni-me";

    fn want() -> Want<'static> {
        Want {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet: "10.244.1.0/24".parse().unwrap(),
            interface_id: ME,
        }
    }

    fn route(dest: &str, eni: Option<&str>, blackhole: bool) -> Route {
        Route {
            destination: dest.parse().ok(),
            destination_text: dest.into(),
            instance_id: None,
            interface_id: eni.map(str::to_string),
            other_target: None,
            blackhole,
            origin: "CreateRoute".into(),
        }
    }

    fn local() -> Route {
        Route {
            other_target: Some("local".into()),
            origin: "CreateRouteTable".into(),
            ..route("192.168.0.0/16", None, false)
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn right_route_means_no_call() {
        let routes = [local(), route("10.244.1.0/24", Some(ME), false)];
        assert_eq!(plan(&routes, &want()), vec![]);
    }

    #[test]
    fn missing_route_is_created() {
        assert_eq!(
            plan(&[local()], &want()),
            vec![Call::Create {
                destination: net("10.244.1.0/24")
            }]
        );
        assert_eq!(
            plan(&[], &want()),
            vec![Call::Create {
                destination: net("10.244.1.0/24")
            }]
        );
    }

    #[test]
    fn our_subnet_elsewhere_or_blackholed_is_replaced() {
        // The subnet was another host's (its lease expired, ours now).
        let routes = [route("10.244.1.0/24", Some("eni-old"), false)];
        assert_eq!(
            plan(&routes, &want()),
            vec![Call::Replace {
                destination: net("10.244.1.0/24"),
                was: "eni-old".into()
            }]
        );
        // Our previous instance was replaced: a blackhole with our subnet is
        // replaced, not deleted and created.
        let routes = [route("10.244.1.0/24", Some("eni-gone"), true)];
        assert_eq!(
            plan(&routes, &want()),
            vec![Call::Replace {
                destination: net("10.244.1.0/24"),
                was: "eni-gone (blackhole)".into()
            }]
        );
        // Right interface, but blackholed (it was detached and attached back).
        let routes = [route("10.244.1.0/24", Some(ME), true)];
        assert!(matches!(plan(&routes, &want())[..], [Call::Replace { .. }]));
    }

    #[test]
    fn blackholes_inside_network_go_first() {
        let routes = [
            local(),
            route("10.244.7.0/24", Some("eni-dead"), true),
            route("10.244.1.0/24", Some(ME), false),
            route("10.244.9.0/24", Some("eni-dead2"), true),
        ];
        assert_eq!(
            plan(&routes, &want()),
            vec![
                Call::Delete {
                    destination: net("10.244.7.0/24"),
                    was: "eni-dead".into()
                },
                Call::Delete {
                    destination: net("10.244.9.0/24"),
                    was: "eni-dead2".into()
                },
            ]
        );
        let routes = [route("10.244.7.0/24", Some("eni-dead"), true)];
        assert_eq!(
            plan(&routes, &want()),
            vec![
                Call::Delete {
                    destination: net("10.244.7.0/24"),
                    was: "eni-dead".into()
                },
                Call::Create {
                    destination: net("10.244.1.0/24")
                },
            ]
        );
    }

    #[test]
    fn other_routes_are_left_alone() {
        let mut propagated = route("10.244.8.0/24", None, true);
        propagated.origin = "EnableVgwRoutePropagation".into();
        let routes = [
            // Another host's active route inside Network.
            route("10.244.2.0/24", Some("eni-other"), false),
            // A blackhole outside Network is someone else's business.
            route("172.16.5.0/24", Some("eni-dead"), true),
            // A route that only overlaps ours (wider, narrower) is not ours.
            route("10.244.0.0/23", Some("eni-other"), false),
            route("10.244.1.128/25", Some("eni-other"), false),
            propagated,
            // The same destination twice, one entry active: not deleted.
            route("10.244.3.0/24", Some("eni-dead"), true),
            route("10.244.3.0/24", Some("eni-other"), false),
            // No IPv4 destination: IPv6 and a prefix list, blackholed or not.
            route("2001:db8::/56", Some("eni-dead"), true),
            route("pl-63a5400a", None, true),
            route("10.244.1.0/24", Some(ME), false),
        ];
        assert_eq!(plan(&routes, &want()), vec![]);
    }
}
