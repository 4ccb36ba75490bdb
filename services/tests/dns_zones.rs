//! Static zones: upstream's addZone cases (dns_test.go, UPSTREAM.md §7.1), its e2e zone
//! cases (§7.2) through a running server, the JSON shapes, and the fixed matching bugs
//! (case, apex, non-A types).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dns_support;

use std::net::Ipv4Addr;
use std::time::Duration;

use dns_support::*;
use services::dns::wire::{rcode, rtype, Header};
use services::dns::{Lookup, Record, Zone, Zones};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn zone(name: &str, records: Vec<Record>, default_ip: Option<&str>) -> Zone {
    Zone {
        name: name.into(),
        records,
        default_ip: default_ip.map(ip),
    }
}

// ---- upstream dns_test.go "dns add test" ----

#[test]
fn add_zone_with_default_ip() {
    let mut z = Zones::default();
    let req = zone("internal.", vec![], Some("192.168.0.1"));
    z.add(req.clone());
    assert_eq!(z.as_slice(), &[req]);
}

#[test]
fn add_zone_with_record() {
    let mut z = Zones::default();
    let req = zone(
        "internal.",
        vec![Record::new("crc.testiing", ip("192.168.0.2"))],
        None,
    );
    z.add(req.clone());
    assert_eq!(z.as_slice(), &[req]);
}

#[test]
fn add_zone_with_record_and_ip_as_two_zones() {
    let mut z = Zones::default();
    let ip_req = zone("dynamic.internal.", vec![], Some("192.168.0.1"));
    let record_req = zone(
        "internal.",
        vec![Record::new("crc.testiing", ip("192.168.0.2"))],
        None,
    );
    z.add(ip_req.clone());
    z.add(record_req.clone());
    assert_eq!(z.as_slice(), &[ip_req, record_req]);
}

#[test]
fn merge_replaces_default_ip_even_with_none() {
    let mut z = Zones::default();
    z.add(zone("internal.", vec![], Some("192.168.0.1")));
    let rec = vec![Record::new("crc.testing", ip("192.168.0.2"))];
    z.add(zone("internal.", rec.clone(), None));
    assert_eq!(z.as_slice(), &[zone("internal.", rec, None)]);
}

#[test]
fn merge_prepends_records() {
    let mut z = Zones::default();
    z.add(zone(
        "internal.",
        vec![Record::new("crc.testing", ip("192.168.0.2"))],
        None,
    ));
    z.add(zone(
        "internal.",
        vec![Record::new("crc.testing", ip("192.168.0.3"))],
        None,
    ));
    assert_eq!(
        z.as_slice(),
        &[zone(
            "internal.",
            vec![
                Record::new("crc.testing", ip("192.168.0.3")),
                Record::new("crc.testing", ip("192.168.0.2")),
            ],
            None
        )]
    );
    // The newest record wins.
    assert_eq!(
        z.lookup("crc.testing.internal.", rtype::A),
        Lookup::A(ip("192.168.0.3"))
    );
}

#[test]
fn zone_order_is_retained() {
    let mut z = Zones::new(vec![
        zone("crc.testing.", vec![], Some("192.168.127.2")),
        zone(
            "testing.",
            vec![Record::new("host", ip("192.168.127.3"))],
            None,
        ),
    ]);
    z.add(zone(
        "testing.",
        vec![Record::new("gateway", ip("192.168.127.1"))],
        None,
    ));
    assert_eq!(
        z.as_slice(),
        &[
            zone("crc.testing.", vec![], Some("192.168.127.2")),
            zone(
                "testing.",
                vec![
                    Record::new("gateway", ip("192.168.127.1")),
                    Record::new("host", ip("192.168.127.3")),
                ],
                None
            ),
        ]
    );
}

// ---- matching ----

#[test]
fn defaults_regexp_and_nxdomain() {
    let mut z = Zones::gvproxy_defaults(GATEWAY, HOST);
    assert_eq!(
        z.lookup("gateway.containers.internal.", rtype::A),
        Lookup::A(GATEWAY)
    );
    assert_eq!(z.lookup("host.docker.internal", rtype::A), Lookup::A(HOST));
    assert_eq!(
        z.lookup("nothing.docker.internal.", rtype::A),
        Lookup::NxDomain
    );
    assert_eq!(z.lookup("example.com.", rtype::A), Lookup::NotLocal);
    z.add(Zone {
        name: "apps.internal.".into(),
        records: vec![
            Record::new("api", ip("10.0.0.1")),
            Record::with_regexp("^[a-z]+-[0-9]+$", ip("10.0.0.2")).unwrap(),
        ],
        default_ip: Some(ip("10.0.0.3")),
    });
    assert_eq!(
        z.lookup("api.apps.internal.", rtype::A),
        Lookup::A(ip("10.0.0.1"))
    );
    assert_eq!(
        z.lookup("web-12.apps.internal.", rtype::A),
        Lookup::A(ip("10.0.0.2"))
    );
    // Relative names may hold dots; they go to the default IP unless a record matches.
    assert_eq!(
        z.lookup("a.b.apps.internal.", rtype::A),
        Lookup::A(ip("10.0.0.3"))
    );
}

#[test]
fn matching_ignores_case() {
    let mut z = Zones::gvproxy_defaults(GATEWAY, HOST);
    assert_eq!(
        z.lookup("GATEWAY.Containers.INTERNAL.", rtype::A),
        Lookup::A(GATEWAY)
    );
    z.add(Zone {
        name: "Mixed.Case.".into(),
        records: vec![
            Record::new("Web", ip("10.0.0.1")),
            Record::with_regexp("^db[0-9]$", ip("10.0.0.2")).unwrap(),
        ],
        default_ip: None,
    });
    assert_eq!(
        z.lookup("web.mixed.case.", rtype::A),
        Lookup::A(ip("10.0.0.1"))
    );
    assert_eq!(
        z.lookup("DB7.MIXED.case", rtype::A),
        Lookup::A(ip("10.0.0.2"))
    );
    // Merging by name ignores case and the trailing dot, as DNS names do.
    z.add(zone(
        "mixed.case",
        vec![Record::new("web", ip("10.0.0.9"))],
        None,
    ));
    assert_eq!(z.as_slice().len(), 3);
    assert_eq!(
        z.lookup("WEB.mixed.case.", rtype::A),
        Lookup::A(ip("10.0.0.9"))
    );
}

#[test]
fn apex_and_other_types_are_nodata() {
    let z = Zones::gvproxy_defaults(GATEWAY, HOST);
    assert_eq!(z.lookup("containers.internal.", rtype::A), Lookup::NoData);
    assert_eq!(z.lookup("Docker.Internal.", rtype::MX), Lookup::NoData);
    assert_eq!(
        z.lookup("gateway.containers.internal.", rtype::AAAA),
        Lookup::NoData
    );
    assert_eq!(
        z.lookup("gateway.containers.internal.", rtype::TXT),
        Lookup::NoData
    );
    assert_eq!(
        z.lookup("gateway.containers.internal.", rtype::ANY),
        Lookup::A(GATEWAY)
    );
    // A name that matches nothing does not exist, whatever the type.
    assert_eq!(
        z.lookup("nope.containers.internal.", rtype::AAAA),
        Lookup::NxDomain
    );
}

// ---- JSON ----

#[test]
fn json_shape_is_upstreams() {
    let mut z = Zones::gvproxy_defaults(GATEWAY, HOST);
    z.add(Zone {
        name: "x.".into(),
        records: vec![Record::with_regexp("^.*$", ip("1.2.3.4")).unwrap()],
        default_ip: Some(ip("1.2.3.5")),
    });
    z.add(zone("only.default.", vec![], Some("1.2.3.6")));
    assert_eq!(
        serde_json::to_string(&z).unwrap(),
        concat!(
            r#"[{"Name":"containers.internal.","Records":[{"Name":"gateway","IP":"192.168.127.1"},"#,
            r#"{"Name":"host","IP":"192.168.127.254"}],"DefaultIP":""},"#,
            r#"{"Name":"docker.internal.","Records":[{"Name":"gateway","IP":"192.168.127.1"},"#,
            r#"{"Name":"host","IP":"192.168.127.254"}],"DefaultIP":""},"#,
            r#"{"Name":"x.","Records":[{"Name":"","IP":"1.2.3.4","Regexp":"^.*$"}],"DefaultIP":"1.2.3.5"},"#,
            r#"{"Name":"only.default.","Records":null,"DefaultIP":"1.2.3.6"}]"#
        )
    );
    let back: Zones = serde_json::from_str(&serde_json::to_string(&z).unwrap()).unwrap();
    assert_eq!(back, z);
}

#[test]
fn json_decoding_ignores_field_case_like_go() {
    let z: Zone = serde_json::from_str(
        r#"{"name":"dynamic.internal.","RECORDS":[{"nAmE":"test","ip":"192.168.127.254"},
            {"Name":"","Ip":"10.0.0.1","regexp":"^web"}, null],"defaultip":"","Extra":[1,{}]}"#,
    )
    .unwrap();
    assert_eq!(z.name, "dynamic.internal.");
    assert_eq!(z.default_ip, None);
    assert_eq!(z.records.len(), 3);
    assert_eq!(z.records[0], Record::new("test", HOST));
    assert_eq!(z.records[1].regexp.as_ref().unwrap().as_str(), "^web");
    assert_eq!(z.records[2], Record::default());
    let z: Zone = serde_json::from_str(r#"{"Name":"a.","Records":null,"DefaultIP":null}"#).unwrap();
    assert_eq!(z, zone("a.", vec![], None));
}

#[test]
fn json_decoding_rejects_bad_values() {
    let err = serde_json::from_str::<Zone>(r#"{"Name":"a.","DefaultIP":"1.2.3"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid IP address: 1.2.3"), "{err}");
    assert!(serde_json::from_str::<Zone>(r#"{"Name":"a.","DefaultIP":"fd00::1"}"#).is_err());
    let err = serde_json::from_str::<Zone>(r#"{"Records":[{"Regexp":"(("}]}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("error parsing regexp"), "{err}");
    assert!(serde_json::from_str::<Zone>(r#"["a."]"#).is_err());
    assert!(serde_json::from_str::<Zone>(r#"{"Name":5}"#).is_err());
    // An IPv4-mapped IPv6 address is an IPv4 address (Go's net.IP does not tell them apart).
    let z: Zone = serde_json::from_str(r#"{"Name":"a.","DefaultIP":"::ffff:1.2.3.4"}"#).unwrap();
    assert_eq!(z.default_ip, Some(ip("1.2.3.4")));
}

// ---- through a running server (upstream test/basic_tests.go DNS cases, no internet) ----

fn ask(addr: std::net::SocketAddr, name: &str, qtype: u16) -> Vec<u8> {
    udp_exchange(
        addr,
        &query(0x4242, name, qtype, None),
        Duration::from_secs(2),
    )
    .expect("no answer")
}

#[test]
fn served_zones_and_runtime_add() {
    // No live resolver: everything below must be answered locally.
    let r = start_server(&[Ipv4Addr::new(127, 0, 9, 9)], 9, |_| {});
    for (name, want) in [
        ("gateway.containers.internal.", GATEWAY),
        ("host.containers.internal.", HOST),
        ("gateway.docker.internal.", GATEWAY),
        ("host.docker.internal.", HOST),
    ] {
        let a = ask(r.udp, name, rtype::A);
        assert_eq!(a_records(&a), vec![want], "{name}");
        let h = Header::parse(&a).unwrap();
        assert_eq!((h.id, h.rcode()), (0x4242, rcode::NOERROR));
        assert!(h.is_response() && h.recursion_available() && h.recursion_desired());
    }

    // dynamic.internal: test -> .254, then a second add test -> .253 wins (prepend).
    r.server.add_zone(zone(
        "dynamic.internal.",
        vec![Record::new("test", HOST)],
        None,
    ));
    assert_eq!(
        a_records(&ask(r.udp, "test.dynamic.internal.", rtype::A)),
        vec![HOST]
    );
    r.server.add_zone(zone(
        "dynamic.internal.",
        vec![Record::new("test", ip("192.168.127.253"))],
        None,
    ));
    assert_eq!(
        a_records(&ask(r.udp, "test.dynamic.internal.", rtype::A)),
        vec![ip("192.168.127.253")]
    );

    // Zone order: dynamic.testing (default .2) before testing (gateway .1).
    r.server
        .add_zone(zone("dynamic.testing.", vec![], Some("192.168.127.2")));
    r.server.add_zone(zone(
        "testing.",
        vec![Record::new("gateway", GATEWAY)],
        None,
    ));
    assert_eq!(
        a_records(&ask(r.udp, "anything.dynamic.testing.", rtype::A)),
        vec![ip("192.168.127.2")]
    );
    assert_eq!(
        a_records(&ask(r.udp, "gateway.testing.", rtype::A)),
        vec![GATEWAY]
    );
    let json = serde_json::to_string(&r.server.zones()).unwrap();
    assert!(
        json.contains(r#"{"Name":"dynamic.testing.","Records":null,"DefaultIP":"192.168.127.2"}"#)
    );
}

#[test]
fn served_answers_keep_question_case_and_fixed_semantics() {
    let r = start_server(&[Ipv4Addr::new(127, 0, 9, 9)], 9, |_| {});
    let q = query(7, "GateWay.Containers.Internal.", rtype::A, None);
    let a = udp_exchange(r.udp, &q, Duration::from_secs(2)).unwrap();
    assert_eq!(a_records(&a), vec![GATEWAY]);
    // Question echoed byte for byte (case kept), answer owner compressed onto it.
    assert_eq!(&a[12..q.len()], &q[12..]);
    assert_eq!(&a[q.len()..q.len() + 2], &[0xc0, 12]);

    // NODATA for AAAA of a local name and for the apex; NXDOMAIN for an unknown local name.
    for (name, qt, rc, n) in [
        (
            "gateway.containers.internal.",
            rtype::AAAA,
            rcode::NOERROR,
            0,
        ),
        ("containers.internal.", rtype::A, rcode::NOERROR, 0),
        ("missing.containers.internal.", rtype::A, rcode::NXDOMAIN, 0),
        ("HOST.DOCKER.INTERNAL.", rtype::ANY, rcode::NOERROR, 1),
    ] {
        let a = ask(r.udp, name, qt);
        let h = Header::parse(&a).unwrap();
        assert_eq!((h.rcode(), h.ancount), (rc, n), "{name} {qt}");
    }
    // The same over TCP.
    let a = tcp_exchange(r.tcp, &q, Duration::from_secs(2)).unwrap();
    assert_eq!(a_records(&a), vec![GATEWAY]);
    assert!(r.server.counters().local_answers >= 6);
    assert_eq!(r.server.counters().forwarded, 0);
}

#[test]
fn served_edns_is_echoed() {
    let r = start_server(&[Ipv4Addr::new(127, 0, 9, 9)], 9, |_| {});
    let q = query(9, "host.docker.internal.", rtype::A, Some((4096, true)));
    let a = udp_exchange(r.udp, &q, Duration::from_secs(2)).unwrap();
    let h = Header::parse(&a).unwrap();
    assert_eq!((h.ancount, h.arcount), (1, 1));
    // OPT: root owner, type 41, our size 1232, DO copied.
    assert_eq!(
        &a[a.len() - 11..],
        &[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]
    );
    // EDNS version 1 -> BADVERS (extended rcode 16: 1 in the OPT TTL's top byte).
    let mut q = query(9, "host.docker.internal.", rtype::A, Some((4096, false)));
    let n = q.len();
    q[n - 5] = 1; // version
    let a = udp_exchange(r.udp, &q, Duration::from_secs(2)).unwrap();
    let h = Header::parse(&a).unwrap();
    assert_eq!((h.rcode(), h.ancount), (0, 0));
    assert_eq!(a[a.len() - 6], 1);
}
