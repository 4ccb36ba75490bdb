//! Junk in: seeded random and mutated messages through the parser, then over UDP and TCP
//! to a running server (with a live test resolver behind it). Never a panic, never a stuck
//! server: valid queries are still answered afterwards. Failures replay from the seed.

// Test code: a failed unwrap is a failed test; casts are of small random values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod dns_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use dns_support::*;
use services::dns::wire::{
    build_local_reply, response_matches, rtype, LocalReply, Name, Query, Question,
};

const SEED: u64 = 0x5eed_d15e_a5e5_0001;

fn templates() -> Vec<Vec<u8>> {
    let mut v = vec![
        query(1, "gateway.containers.internal.", rtype::A, None),
        query(2, "host.docker.internal.", rtype::AAAA, Some((1232, true))),
        query(3, "a.test.", rtype::A, Some((4096, false))),
        query(4, "txt.test.", rtype::TXT, None),
        query(5, "big.test.", rtype::A, None),
        query(6, "containers.internal.", rtype::ANY, None),
    ];
    // An additional record whose owner is a compression pointer to the question.
    let mut m = Msg::header(7, 0x0100, 1, 0, 0, 1);
    m.name("host.containers.internal.").u16(1).u16(1);
    m.bytes(&[0xc0, 12])
        .u16(rtype::A)
        .u16(1)
        .u32(0)
        .u16(4)
        .bytes(&[1, 2, 3, 4]);
    v.push(m.buf);
    v
}

/// Random bytes, a mutated template, or a truncated template.
fn junk(rng: &mut Rng, templates: &[Vec<u8>]) -> Vec<u8> {
    let t = &templates[rng.below(templates.len())];
    match rng.below(4) {
        0 => {
            let n = rng.below(600);
            rng.bytes(n)
        }
        1 => t[..rng.below(t.len() + 1)].to_vec(),
        _ => {
            let mut m = t.clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(m.len());
                m[i] = match rng.below(4) {
                    0 => 0xc0 | (rng.next() as u8 & 0x3f),
                    1 => rng.next() as u8 & 0x3f,
                    _ => rng.next() as u8,
                };
            }
            m
        }
    }
}

#[test]
fn parser_never_panics() {
    let templates = templates();
    let mut rng = Rng(SEED);
    let q = Question {
        name: Name::from_text("a.test.").unwrap(),
        qtype: 1,
        qclass: 1,
    };
    let mut out = Vec::new();
    let mut parsed = 0;
    for _ in 0..200_000 {
        let m = junk(&mut rng, &templates);
        if let Ok(query) = Query::parse(&m, true) {
            parsed += 1;
            build_local_reply(&query, LocalReply::NoData, &mut out);
            // Our reply to it must itself be readable and match its question.
            assert!(response_matches(&out, query.header.id, &query.question));
        }
        let _ = Query::parse(&m, false);
        let at = rng.below(m.len() + 2);
        if let Ok((name, end)) = Name::parse(&m, at) {
            assert!(end <= m.len() && name.wire_labels().len() < 255);
            let _ = name.to_lowercase_text();
        }
        let _ = response_matches(&m, 1, &q);
    }
    assert!(
        parsed > 1000,
        "the mutations should still parse sometimes: {parsed}"
    );
}

fn still_answers(udp: SocketAddr, tcp: SocketAddr) {
    let t = Duration::from_secs(3);
    let a = udp_exchange(
        udp,
        &query(9, "gateway.containers.internal.", rtype::A, None),
        t,
    );
    assert_eq!(a_records(&a.expect("local over UDP")), vec![GATEWAY]);
    let a = udp_exchange(udp, &query(9, "a.test.", rtype::A, None), t);
    assert_eq!(a_records(&a.expect("forwarded over UDP")).len(), 2);
    let a = tcp_exchange(tcp, &query(9, "a.test.", rtype::A, None), t);
    assert_eq!(a_records(&a.expect("forwarded over TCP")).len(), 2);
}

#[test]
fn junk_over_udp() {
    let res = TestResolver::start(Ipv4Addr::new(127, 0, 0, 61));
    let r = start_server(&[Ipv4Addr::new(127, 0, 0, 61)], res.addr.port(), |c| {
        c.timeout = Duration::from_millis(100);
    });
    let templates = templates();
    let mut rng = Rng(SEED ^ 1);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.set_nonblocking(true).unwrap();
    let mut sink = [0u8; 65535];
    for round in 0..10 {
        for _ in 0..500 {
            let m = junk(&mut rng, &templates);
            let _ = sender.send_to(&m, r.udp);
            while sender.recv_from(&mut sink).is_ok() {}
        }
        std::thread::sleep(Duration::from_millis(20));
        if round % 3 == 0 {
            still_answers(r.udp, r.tcp);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    still_answers(r.udp, r.tcp);
    let c = r.server.counters();
    assert!(c.udp_queries > 2000, "{c:?}");
    assert!(
        c.dropped_malformed > 0 && c.formerr_sent > 0 && c.local_answers > 0,
        "{c:?}"
    );
}

#[test]
fn junk_over_tcp() {
    let res = TestResolver::start(Ipv4Addr::new(127, 0, 0, 62));
    let r = start_server(&[Ipv4Addr::new(127, 0, 0, 62)], res.addr.port(), |c| {
        c.timeout = Duration::from_millis(100);
        c.tcp_idle_timeout = Duration::from_millis(300);
    });
    let templates = templates();
    let mut rng = Rng(SEED ^ 2);
    for _ in 0..300 {
        let mut s = TcpStream::connect(r.tcp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut bytes = Vec::new();
        for _ in 0..=rng.below(3) {
            let m = junk(&mut rng, &templates);
            match rng.below(4) {
                // Raw, no length prefix.
                0 => bytes.extend_from_slice(&m),
                // A length that lies.
                1 => {
                    bytes.extend_from_slice(&(rng.next() as u16).to_be_bytes());
                    bytes.extend_from_slice(&m);
                }
                _ => {
                    bytes.extend_from_slice(&(m.len() as u16).to_be_bytes());
                    bytes.extend_from_slice(&m);
                }
            }
        }
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(Shutdown::Write);
        // The server answers what it can and closes: never waits past its idle timeout.
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    still_answers(r.udp, r.tcp);
    let c = r.server.counters();
    assert_eq!(c.tcp_rejected, 0);
    assert!(c.tcp_queries > 200, "{c:?}");
}
