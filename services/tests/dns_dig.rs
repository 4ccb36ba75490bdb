//! A real client against the server: `dig` (dnsutils). Fails loudly when dig is missing.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dns_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use dns_support::*;

fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=3", "+tries=1"])
        .args(args)
        .output()
        .expect("dig must be installed (apt-get install dnsutils)");
    assert!(out.status.success(), "dig {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn dig_through_the_server() {
    let res = TestResolver::start(Ipv4Addr::new(127, 0, 0, 63));
    let r = start_server(&[Ipv4Addr::new(127, 0, 0, 63)], res.addr.port(), |_| {});

    // Local zones, over UDP and TCP.
    assert_eq!(
        dig(r.udp, &["+short", "gateway.containers.internal"]),
        "192.168.127.1\n"
    );
    assert_eq!(
        dig(r.udp, &["+short", "HOST.docker.internal"]),
        "192.168.127.254\n"
    );
    assert_eq!(
        dig(r.tcp, &["+tcp", "+short", "host.containers.internal"]),
        "192.168.127.254\n"
    );
    let out = dig(r.udp, &["nope.containers.internal"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");

    // Forwarded: dig's view through us equals dig's view of the resolver itself.
    for args in [
        vec!["+short", "a.test", "A"],
        vec!["+short", "a.test", "AAAA"],
        vec!["+short", "mx.test", "MX"],
        vec!["+short", "txt.test", "TXT"],
        vec!["+short", "_sip._tcp.test", "SRV"],
        vec!["+short", "cname.test", "A"],
        vec!["+short", "caa.test", "CAA"],
        vec!["+short", "-x", "10.0.0.1"],
        vec!["+tcp", "+short", "txt.test", "TXT"],
    ] {
        let ours = dig(r.udp, &args);
        assert!(!ours.is_empty(), "{args:?}");
        assert_eq!(ours, dig(res.addr, &args), "{args:?}");
    }
    let txt = dig(r.udp, &["+short", "txt.test", "TXT"]);
    assert!(
        txt.contains(&format!("\"{}\" \"{}\"", "x".repeat(255), "y".repeat(100))),
        "{txt}"
    );
    for (name, status) in [("nx.test", "NXDOMAIN"), ("fail.test", "SERVFAIL")] {
        let out = dig(r.udp, &[name]);
        assert!(out.contains(&format!("status: {status}")), "{out}");
    }

    // Truncated over UDP: dig retries over TCP (same port) by itself, gets all 200 records.
    assert_eq!(r.udp, r.tcp);
    let out = dig(r.udp, &["+noedns", "big.test", "A"]);
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert!(out.contains("ANSWER: 200"), "{out}");
    assert!(res.queries_for("big.test.").contains(&true));
}
