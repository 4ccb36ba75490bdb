//! Forwarding to the host's resolvers, against a test resolver of our own on 127.0.0.x:
//! answers through the server must be byte-identical to the resolver's own answers, over
//! UDP and TCP, with and without EDNS; TC relayed and retried over TCP; ids verified;
//! resolvers that are down give SERVFAIL within the retry budget.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dns_support;

use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use dns_support::*;
use services::dns::wire::{rcode, rtype, Header};

const T: Duration = Duration::from_secs(3);

/// Every query type the resolver knows, with and without EDNS.
fn cases() -> Vec<(&'static str, u16)> {
    vec![
        ("a.test.", rtype::A),
        ("a.test.", rtype::AAAA),
        ("a.test.", rtype::MX), // NODATA with SOA
        ("mx.test.", rtype::MX),
        ("txt.test.", rtype::TXT),
        ("_sip._tcp.test.", rtype::SRV),
        ("cname.test.", rtype::CNAME),
        ("cname.test.", rtype::A),
        ("caa.test.", rtype::CAA),
        ("1.0.0.10.in-addr.arpa.", rtype::PTR),
        ("test.", rtype::SOA),
        ("nx.test.", rtype::A),   // NXDOMAIN
        ("fail.test.", rtype::A), // SERVFAIL from the resolver itself
        ("refused.test.", rtype::A),
        ("MiXeD.TeSt.", rtype::A),
        ("big.test.", rtype::A), // TC over UDP
    ]
}

#[test]
fn udp_answers_are_byte_identical() {
    let res = TestResolver::start(Ipv4Addr::new(127, 0, 0, 53));
    let r = start_server(&[Ipv4Addr::new(127, 0, 0, 53)], res.addr.port(), |_| {});
    let mut id = 100u16;
    for (name, qt) in cases() {
        for edns in [None, Some((1232, false)), Some((4096, true))] {
            id += 1;
            let q = query(id, name, qt, edns);
            let direct = udp_exchange(res.addr, &q, T).expect("resolver answers");
            let ours = udp_exchange(r.udp, &q, T).expect("server answers");
            assert_eq!(ours, direct, "{name} type {qt} edns {edns:?}");
        }
    }
    // The TXT record over 255 bytes really is split in strings, and came through whole.
    let a = udp_exchange(r.udp, &query(1, "txt.test.", rtype::TXT, None), T).unwrap();
    let txt = &parse_answer(&a).answers[0].1;
    assert_eq!((txt.len(), txt[0], txt[256]), (357, 255, 100));
    let c = r.server.counters();
    assert_eq!(c.upstream_answers, c.forwarded);
    assert_eq!(c.servfail_sent, 0);
    assert_eq!(c.local_answers, 0);
}

#[test]
fn tcp_answers_are_byte_identical_and_forwarded_over_tcp() {
    let res = TestResolver::start(Ipv4Addr::new(127, 0, 0, 54));
    let r = start_server(&[Ipv4Addr::new(127, 0, 0, 54)], res.addr.port(), |_| {});
    // Several queries on one connection, as RFC 7766 allows.
    let mut conn = std::net::TcpStream::connect(r.tcp).unwrap();
    conn.set_read_timeout(Some(T)).unwrap();
    let mut id = 500u16;
    for (name, qt) in cases() {
        for edns in [None, Some((1232, true))] {
            id += 1;
            let q = query(id, name, qt, edns);
            let direct = tcp_exchange(res.addr, &q, T).expect("resolver answers");
            tcp_send(&mut conn, &q);
            let ours = tcp_recv(&mut conn).expect("server answers");
            assert_eq!(ours, direct, "{name} type {qt} edns {edns:?}");
        }
    }
    // Every query reached the resolver over TCP: the direct one and ours.
    let log = res.log.lock().unwrap().clone();
    assert!(!log.is_empty() && log.iter().all(|(_, tcp)| *tcp));
    assert_eq!(
        a_records(&tcp_exchange(res.addr, &query(1, "big.test.", rtype::A, None), T).unwrap())
            .len(),
        200
    );
}

#[test]
fn truncated_udp_answer_is_relayed_then_retried_over_tcp() {
    let res = TestResolver::start(Ipv4Addr::new(127, 0, 0, 55));
    let r = start_server(&[Ipv4Addr::new(127, 0, 0, 55)], res.addr.port(), |_| {});
    let q = query(77, "big.test.", rtype::A, Some((1232, false)));
    let udp = udp_exchange(r.udp, &q, T).unwrap();
    let h = Header::parse(&udp).unwrap();
    assert!(h.truncated(), "TC must be relayed");
    assert_eq!((h.id, h.ancount), (77, 0));
    assert_eq!(udp, udp_exchange(res.addr, &q, T).unwrap());
    // What a stub does next: the same query over TCP.
    let tcp = tcp_exchange(r.tcp, &q, T).unwrap();
    assert!(!Header::parse(&tcp).unwrap().truncated());
    assert_eq!(a_records(&tcp).len(), 200);
    assert_eq!(tcp, tcp_exchange(res.addr, &q, T).unwrap());
    // Upstream side: one UDP query from us, then TCP ones (ours and the direct one).
    let seen = res.queries_for("big.test.");
    assert_eq!(seen, vec![false, false, true, true]);
}

#[test]
fn spoofed_answers_are_ignored() {
    let res = TestResolver::start(Ipv4Addr::new(127, 0, 0, 56));
    let r = start_server(&[Ipv4Addr::new(127, 0, 0, 56)], res.addr.port(), |_| {});
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    client
        .send_to(&query(0x5151, "spoof.test.", rtype::A, None), r.udp)
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(a_records(&buf[..n]), vec![Ipv4Addr::new(10, 0, 0, 6)]);
    assert_eq!(Header::parse(&buf[..n]).unwrap().id, 0x5151);
    // Exactly one answer reached the client.
    assert!(client.recv_from(&mut buf).is_err());
    // Wrong id, wrong question, wrong source port.
    assert_eq!(r.server.counters().upstream_mismatched, 3);
}

#[test]
fn resolvers_down_give_servfail_within_the_budget() {
    // Two resolvers, nothing listening: 2 × 2 attempts × 300 ms.
    let dead = [Ipv4Addr::new(127, 0, 9, 1), Ipv4Addr::new(127, 0, 9, 2)];
    let r = start_server(&dead, 5300, |_| {});
    let q = query(0x0102, "example.com.", rtype::A, Some((1232, false)));
    let start = Instant::now();
    let a = udp_exchange(r.udp, &q, Duration::from_secs(5)).expect("SERVFAIL, not silence");
    let took = start.elapsed();
    let h = Header::parse(&a).unwrap();
    assert_eq!((h.id, h.rcode(), h.qdcount), (0x0102, rcode::SERVFAIL, 1));
    assert_eq!(&a[12..q.len() - 11], &q[12..q.len() - 11], "same question");
    assert!(
        took >= Duration::from_millis(1100),
        "gave up early: {took:?}"
    );
    assert!(took < Duration::from_millis(2500), "too slow: {took:?}");
    let c = r.server.counters();
    assert_eq!(
        (c.forwarded, c.upstream_retries, c.servfail_sent),
        (1, 3, 1)
    );

    // Over TCP: connection refused by both; the UDP fallback's connected socket gets the
    // ICMP port-unreachable as ECONNREFUSED, so SERVFAIL comes at once.
    let start = Instant::now();
    let a = tcp_exchange(r.tcp, &q, Duration::from_secs(5)).expect("SERVFAIL over TCP");
    assert_eq!(Header::parse(&a).unwrap().rcode(), rcode::SERVFAIL);
    assert_eq!(&a[12..q.len() - 11], &q[12..q.len() - 11], "same question");
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn tcp_query_to_a_udp_only_resolver_falls_back_to_udp() {
    let res = TestResolver::start(Ipv4Addr::new(127, 0, 0, 64));
    let r = start_server(&[Ipv4Addr::new(127, 0, 0, 64)], res.addr.port(), |_| {});
    let q = query(21, "notcp.test.", rtype::A, Some((1232, false)));
    let start = Instant::now();
    let ours = tcp_exchange(r.tcp, &q, T).expect("an answer over TCP");
    assert!(start.elapsed() < Duration::from_millis(250));
    assert_eq!(ours, udp_exchange(res.addr, &q, T).unwrap());
    assert_eq!(a_records(&ours), vec![Ipv4Addr::new(10, 0, 0, 7)]);
    // TCP tried first, then UDP; then the direct UDP query of this test.
    assert_eq!(res.queries_for("notcp.test."), vec![true, false, false]);
}

#[test]
fn mute_resolver_gives_servfail_over_tcp_and_udp() {
    let res = TestResolver::start(Ipv4Addr::new(127, 0, 0, 57));
    let r = start_server(&[Ipv4Addr::new(127, 0, 0, 57)], res.addr.port(), |c| {
        c.timeout = Duration::from_millis(200);
    });
    let q = query(3, "mute.test.", rtype::A, None);
    for tcp in [false, true] {
        let start = Instant::now();
        let a = if tcp {
            tcp_exchange(r.tcp, &q, Duration::from_secs(5))
        } else {
            udp_exchange(r.udp, &q, Duration::from_secs(5))
        }
        .expect("an answer");
        let took = start.elapsed();
        assert_eq!(
            Header::parse(&a).unwrap().rcode(),
            rcode::SERVFAIL,
            "tcp {tcp}"
        );
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
            "tcp {tcp}: {took:?}"
        );
    }
    assert_eq!(
        res.queries_for("mute.test."),
        vec![false, false, true, true]
    );
}

#[test]
fn next_resolver_is_used_and_then_preferred() {
    let res = TestResolver::start(Ipv4Addr::new(127, 0, 0, 58));
    let dead = Ipv4Addr::new(127, 0, 9, 3);
    let r = start_server(
        &[dead, Ipv4Addr::new(127, 0, 0, 58)],
        res.addr.port(),
        |_| {},
    );
    let q = query(11, "a.test.", rtype::A, None);
    let start = Instant::now();
    let a = udp_exchange(r.udp, &q, T).unwrap();
    assert_eq!(a_records(&a).len(), 2);
    assert!(
        start.elapsed() >= Duration::from_millis(550),
        "two attempts on the dead one first"
    );
    // The resolver that answered is tried first from now on.
    let start = Instant::now();
    let a = udp_exchange(r.udp, &query(12, "mx.test.", rtype::MX, None), T).unwrap();
    assert_eq!(parse_answer(&a).answers.len(), 2);
    assert!(start.elapsed() < Duration::from_millis(250));
    let start = Instant::now();
    assert!(tcp_exchange(r.tcp, &q, T).is_some());
    assert!(start.elapsed() < Duration::from_millis(250));
}

#[test]
fn resolv_conf_is_reread_when_it_changes() {
    let res = TestResolver::start(Ipv4Addr::new(127, 0, 0, 59));
    let r = start_server(&[Ipv4Addr::new(127, 0, 9, 4)], res.addr.port(), |c| {
        c.timeout = Duration::from_millis(100);
        c.attempts = 1;
    });
    let q = query(13, "a.test.", rtype::A, None);
    let a = udp_exchange(r.udp, &q, T).unwrap();
    assert_eq!(Header::parse(&a).unwrap().rcode(), rcode::SERVFAIL);
    r.resolv.write(&[Ipv4Addr::new(127, 0, 0, 59)]);
    thread::sleep(Duration::from_millis(1100));
    let a = udp_exchange(r.udp, &q, T).unwrap();
    assert_eq!(a_records(&a).len(), 2);
    assert_eq!(r.server.resolvers(), vec![res.addr]);
}

#[test]
fn a_slow_resolver_does_not_hold_up_local_answers_and_inflight_is_bounded() {
    let res = TestResolver::start(Ipv4Addr::new(127, 0, 0, 60));
    let r = start_server(&[Ipv4Addr::new(127, 0, 0, 60)], res.addr.port(), |c| {
        c.timeout = Duration::from_secs(2);
        c.max_inflight = 8;
    });
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..20u16 {
        client
            .send_to(&query(i, "mute.test.", rtype::A, None), r.udp)
            .unwrap();
    }
    thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let a = udp_exchange(
        r.udp,
        &query(1, "host.containers.internal.", rtype::A, None),
        T,
    )
    .unwrap();
    assert_eq!(a_records(&a), vec![HOST]);
    assert!(start.elapsed() < Duration::from_millis(200));
    let c = r.server.counters();
    assert_eq!((c.forwarded, c.dropped_overload), (8, 12));
}

#[test]
fn tcp_connections_are_bounded_and_idle_ones_closed() {
    let r = start_server(&[Ipv4Addr::new(127, 0, 9, 5)], 53, |c| {
        c.max_tcp_connections = 2;
        c.tcp_idle_timeout = Duration::from_millis(300);
    });
    let mut a = std::net::TcpStream::connect(r.tcp).unwrap();
    let _b = std::net::TcpStream::connect(r.tcp).unwrap();
    thread::sleep(Duration::from_millis(100));
    let mut c = std::net::TcpStream::connect(r.tcp).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let q = query(1, "host.containers.internal.", rtype::A, None);
    let mut framed = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    // The server may already have closed it: a failed write is fine too.
    let _ = std::io::Write::write_all(&mut c, &framed);
    assert!(tcp_recv(&mut c).is_none(), "third connection is closed");
    assert_eq!(r.server.counters().tcp_rejected, 1);
    // Idle connections go after the idle timeout; then there is room again.
    a.set_read_timeout(Some(T)).unwrap();
    assert!(tcp_recv(&mut a).is_none());
    thread::sleep(Duration::from_millis(100));
    let ans = tcp_exchange(
        r.tcp,
        &query(1, "host.containers.internal.", rtype::A, None),
        T,
    );
    assert_eq!(a_records(&ans.unwrap()), vec![HOST]);
}

#[test]
fn serve_stream_over_a_unix_socketpair() {
    let r = start_server(&[Ipv4Addr::new(127, 0, 9, 6)], 53, |_| {});
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    r.server.serve_stream(theirs);
    ours.set_read_timeout(Some(T)).unwrap();
    use std::io::{Read, Write};
    for name in ["gateway.containers.internal.", "host.docker.internal."] {
        let q = query(3, name, rtype::A, None);
        let mut framed = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        ours.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        ours.read_exact(&mut len).unwrap();
        let mut a = vec![0u8; usize::from(u16::from_be_bytes(len))];
        ours.read_exact(&mut a).unwrap();
        assert_eq!(a_records(&a).len(), 1, "{name}");
    }
}
