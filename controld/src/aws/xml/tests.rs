use super::*;

const INSTANCES: &str = include_str!("../testdata/describe_instances.xml");
const TABLES: &str = include_str!("../testdata/describe_route_tables.xml");

#[test]
fn describe_instances() {
    let got = instances(INSTANCES).unwrap();
    assert_eq!(got.len(), 1);
    let i = &got[0];
    assert_eq!(i.instance_id, "i-1234567890abcdef0");
    assert_eq!(i.vpc_id, "vpc-11112222");
    // The instance's own subnetId, not one of its interfaces'.
    assert_eq!(i.subnet_id, "subnet-56f5f633");
    assert_eq!(i.interfaces.len(), 2);
    assert_eq!(
        i.interfaces[0],
        Interface {
            interface_id: "eni-0f3e1a1b2c3d4e5f6".into(),
            subnet_id: "subnet-56f5f633".into(),
            vpc_id: "vpc-11112222".into(),
            private_ips: vec!["192.168.1.88".parse().unwrap()],
            source_dest_check: true,
        }
    );
    let second = &i.interfaces[1];
    assert_eq!(second.subnet_id, "subnet-0aa0bb0c");
    assert!(!second.source_dest_check);
    assert_eq!(
        second.private_ips,
        vec![
            "192.168.2.20".parse::<Ipv4Addr>().unwrap(),
            "192.168.2.21".parse().unwrap()
        ]
    );
}

#[test]
fn describe_route_tables() {
    let got = route_tables(TABLES).unwrap();
    assert_eq!(got.len(), 2);
    let main = &got[0];
    assert_eq!(main.route_table_id, "rtb-1f382e7d");
    assert!(main.main);
    assert!(!got[1].main);
    let r = &main.routes;
    assert_eq!(r.len(), 6);
    assert_eq!(r[0].destination, Some("192.168.0.0/16".parse().unwrap()));
    assert_eq!(r[0].other_target.as_deref(), Some("local"));
    assert_eq!(r[0].origin, "CreateRouteTable");
    // IPv6 and prefix-list destinations have no IPv4 CIDR.
    assert_eq!(r[1].destination, None);
    assert_eq!(r[1].destination_text, "2001:db8:1234:1a00::/56");
    assert_eq!(r[2].destination, None);
    assert_eq!(r[2].destination_text, "pl-63a5400a");
    assert_eq!(r[3].instance_id.as_deref(), Some("i-1234567890abcdef0"));
    assert_eq!(r[3].interface_id.as_deref(), Some("eni-0f3e1a1b2c3d4e5f6"));
    assert!(!r[3].blackhole);
    assert!(r[4].blackhole);
    assert_eq!(r[4].destination, Some("10.244.7.0/24".parse().unwrap()));
    assert_eq!(r[5].other_target.as_deref(), Some("igw-eaad4883"));
}

#[test]
fn interface_attribute_and_return() {
    let body = include_str!("../testdata/describe_network_interface_attribute.xml");
    assert!(source_dest_check(body).unwrap());
    assert!(!source_dest_check(&body.replace(">true<", ">false<")).unwrap());
    assert!(returned_true(include_str!("../testdata/create_route.xml")));
    assert!(!returned_true(
        "<ReplaceRouteResponse><return>false</return></ReplaceRouteResponse>"
    ));
}

#[test]
fn errors() {
    let cases = [
        (
            include_str!("../testdata/error_route_limit.xml"),
            "RouteLimitExceeded",
        ),
        (
            include_str!("../testdata/error_request_limit.xml"),
            "RequestLimitExceeded",
        ),
        (
            include_str!("../testdata/error_auth_failure.xml"),
            "AuthFailure",
        ),
        (
            include_str!("../testdata/error_signature.xml"),
            "SignatureDoesNotMatch",
        ),
        (
            include_str!("../testdata/error_rtb_not_found.xml"),
            "InvalidRouteTableID.NotFound",
        ),
    ];
    for (body, code) in cases {
        let e = api_error(body).unwrap_or_else(|| panic!("{code} not read"));
        assert_eq!(e.code, code);
        assert!(!e.message.is_empty());
        assert!(!e.request_id.is_empty());
    }
    let e = api_error(include_str!("../testdata/error_rtb_not_found.xml")).unwrap();
    assert_eq!(e.message, "The routeTable ID 'rtb-00000000' does not exist");
    assert_eq!(e.request_id, "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d");
    // Throttling as the newer services spell it.
    let t = api_error(
        "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>\
         <Message>Rate exceeded</Message></Error><RequestId>r1</RequestId></ErrorResponse>",
    )
    .unwrap();
    assert_eq!(
        (t.code.as_str(), t.request_id.as_str()),
        ("Throttling", "r1")
    );
    // A success answer is no error; garbage is neither.
    assert_eq!(api_error(INSTANCES), None);
    assert_eq!(api_error("<html>bad gateway"), None);
    assert!(matches!(instances("<html>"), Err(AwsError::Parse(_))));
}
