//! Shared by the DNS tests: a message builder, a small authoritative test resolver on a
//! 127.0.0.x address (UDP and TCP, same port), a private resolv.conf, and client helpers.
//!
//! The test resolver serves the zone `test.`:
//!
//! | name | answers |
//! |---|---|
//! | `a.test` | A 10.0.0.1, 10.0.0.2; AAAA fd00::1; other types NODATA + SOA |
//! | `mx.test` | MX 10 mail.test., 20 mail2.test. |
//! | `txt.test` | TXT ("x"×255, "y"×100) and TXT ("hello world") |
//! | `_sip._tcp.test` | SRV 0 5 5060 sip.test. |
//! | `cname.test` | CNAME a.test. (+ A of a.test for type A) |
//! | `caa.test` | CAA 0 issue "letsencrypt.org" |
//! | `1.0.0.10.in-addr.arpa` | PTR a.test. |
//! | `test` | SOA |
//! | `fail.test` | SERVFAIL |
//! | `refused.test` | REFUSED |
//! | `big.test` | 200 A records: TC over UDP when over the client's size, all over TCP |
//! | `mute.test` | never answers |
//! | `notcp.test` | A 10.0.0.7 over UDP; over TCP the connection is closed unanswered |
//! | `spoof.test` | over UDP: a wrong-id answer, a wrong-question answer and an answer from another port (all 6.6.6.6), then the real one (10.0.0.6) |
//! | anything else in `test.` | NXDOMAIN + SOA |
//!
//! Answers carry an OPT record (size 1232, one NSID option "testns") when the query has one.

// Test code: a failed unwrap is a failed test; casts are of small random values.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use services::dns::wire::{rtype, Header, Name, Query, CLASS_IN};
use services::dns::{DnsConfig, DnsServer, Zones};

pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);
pub const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);

// ---------------------------------------------------------------- message building

/// Builds DNS messages; names are written uncompressed unless `ptr_q` is used.
pub struct Msg {
    pub buf: Vec<u8>,
}

impl Msg {
    pub fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Msg {
        let mut buf = Vec::new();
        for v in [id, flags, qd, an, ns, ar] {
            buf.extend_from_slice(&v.to_be_bytes());
        }
        Msg { buf }
    }
    pub fn name(&mut self, name: &str) -> &mut Self {
        Name::from_text(name).unwrap().emit(&mut self.buf);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// A resource record; `owner` None = pointer to the question name (offset 12).
    pub fn rr(&mut self, owner: Option<&str>, rt: u16, ttl: u32, rdata: &[u8]) -> &mut Self {
        match owner {
            Some(n) => self.name(n),
            None => self.bytes(&[0xc0, 12]),
        };
        self.u16(rt).u16(CLASS_IN).u32(ttl);
        self.u16(u16::try_from(rdata.len()).unwrap()).bytes(rdata)
    }
    pub fn opt(&mut self, size: u16, do_bit: bool, options: &[u8]) -> &mut Self {
        self.bytes(&[0]).u16(rtype::OPT).u16(size);
        self.bytes(&[0, 0, if do_bit { 0x80 } else { 0 }, 0]);
        self.u16(u16::try_from(options.len()).unwrap())
            .bytes(options)
    }
}

pub fn name_wire(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    Name::from_text(name).unwrap().emit(&mut v);
    v
}

/// A standard query (RD set), optionally with an OPT record.
pub fn query(id: u16, name: &str, qtype: u16, edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut m = Msg::header(id, 0x0100, 1, 0, 0, u16::from(edns.is_some()));
    m.name(name).u16(qtype).u16(CLASS_IN);
    if let Some((size, do_bit)) = edns {
        m.opt(size, do_bit, &[]);
    }
    m.buf
}

// ---------------------------------------------------------------- reading answers

#[derive(Debug)]
pub struct Answer {
    pub header: Header,
    /// (type, rdata) of each answer record.
    pub answers: Vec<(u16, Vec<u8>)>,
}

pub fn parse_answer(msg: &[u8]) -> Answer {
    let header = Header::parse(msg).unwrap();
    let mut pos = 12;
    for _ in 0..header.qdcount {
        let (_, end) = services::dns::wire::Question::parse(msg, pos).unwrap();
        pos = end;
    }
    let mut answers = Vec::new();
    for _ in 0..header.ancount {
        let (_, p) = Name::parse(msg, pos).unwrap();
        let t = u16::from_be_bytes([msg[p], msg[p + 1]]);
        let len = usize::from(u16::from_be_bytes([msg[p + 8], msg[p + 9]]));
        answers.push((t, msg[p + 10..p + 10 + len].to_vec()));
        pos = p + 10 + len;
    }
    Answer { header, answers }
}

pub fn a_records(msg: &[u8]) -> Vec<Ipv4Addr> {
    parse_answer(msg)
        .answers
        .iter()
        .filter(|(t, _)| *t == rtype::A)
        .map(|(_, d)| Ipv4Addr::new(d[0], d[1], d[2], d[3]))
        .collect()
}

// ---------------------------------------------------------------- clients

pub fn udp_exchange(server: SocketAddr, msg: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.send_to(msg, server).unwrap();
    let mut buf = vec![0u8; 65535];
    match s.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

pub fn tcp_send(s: &mut TcpStream, msg: &[u8]) {
    let mut framed = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    s.write_all(&framed).unwrap();
}

pub fn tcp_recv(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg).ok()?;
    Some(msg)
}

pub fn tcp_exchange(server: SocketAddr, msg: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&server, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).unwrap();
    tcp_send(&mut s, msg);
    tcp_recv(&mut s)
}

// ---------------------------------------------------------------- the test resolver

pub struct TestResolver {
    pub addr: SocketAddr,
    /// (lower-cased qname, over TCP?) of every query received.
    pub log: Arc<Mutex<Vec<(String, bool)>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for TestResolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl TestResolver {
    /// Serve on `ip` (a 127.0.0.x address) on a port free for both UDP and TCP.
    pub fn start(ip: Ipv4Addr) -> TestResolver {
        let (udp, tcp) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind((ip, 0)).ok()?;
                let port = udp.local_addr().ok()?.port();
                let tcp = TcpListener::bind((ip, port)).ok()?;
                Some((udp, tcp))
            })
            .expect("no port free for both UDP and TCP");
        let addr = udp.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        {
            let (log, stop) = (log.clone(), stop.clone());
            thread::spawn(move || {
                let side = UdpSocket::bind((ip, 0)).unwrap();
                let mut buf = vec![0u8; 65535];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    let q = &buf[..n];
                    let Ok(parsed) = Query::parse(q, true) else {
                        continue;
                    };
                    let qname = parsed.question.name.to_lowercase_text();
                    log.lock().unwrap().push((qname.clone(), false));
                    if qname == "spoof.test." {
                        let id = parsed.header.id;
                        let mut wrong_id = spoof_answer(q, [6, 6, 6, 6]);
                        wrong_id[..2].copy_from_slice(&id.wrapping_add(1).to_be_bytes());
                        udp.send_to(&wrong_id, from).unwrap();
                        let mut wrong_q = query(id, "evil.test.", rtype::A, None);
                        wrong_q[2] = 0x85;
                        wrong_q[3] = 0x80;
                        wrong_q[7] = 1;
                        wrong_q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                        wrong_q.extend_from_slice(&[6, 6, 6, 6]);
                        udp.send_to(&wrong_q, from).unwrap();
                        side.send_to(&spoof_answer(q, [6, 6, 6, 6]), from).unwrap();
                        thread::sleep(Duration::from_millis(20));
                        udp.send_to(&spoof_answer(q, [10, 0, 0, 6]), from).unwrap();
                        continue;
                    }
                    if let Some(r) = answer(q, false) {
                        udp.send_to(&r, from).unwrap();
                    }
                }
            });
        }
        {
            let (log, stop) = (log.clone(), stop.clone());
            tcp.set_nonblocking(true).unwrap();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = tcp.accept() else {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let log = log.clone();
                    thread::spawn(move || {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        while let Some(q) = tcp_recv(&mut s) {
                            let Ok(parsed) = Query::parse(&q, true) else {
                                return;
                            };
                            let qname = parsed.question.name.to_lowercase_text();
                            log.lock().unwrap().push((qname.clone(), true));
                            if qname == "notcp.test." {
                                return; // a UDP-only resolver: closes at once
                            }
                            match answer(&q, true) {
                                Some(r) => tcp_send(&mut s, &r),
                                None => thread::sleep(Duration::from_secs(5)),
                            }
                        }
                    });
                }
            });
        }
        TestResolver { addr, log, stop }
    }

    pub fn queries_for(&self, qname: &str) -> Vec<bool> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == qname)
            .map(|(_, tcp)| *tcp)
            .collect()
    }
}

fn spoof_answer(q: &[u8], ip: [u8; 4]) -> Vec<u8> {
    let p = Query::parse(q, true).unwrap();
    let mut m = Msg::header(p.header.id, 0x8580, 1, 1, 0, 0);
    m.name("spoof.test.").u16(rtype::A).u16(CLASS_IN);
    m.rr(None, rtype::A, 60, &ip);
    m.buf
}

fn soa_rdata() -> Vec<u8> {
    let mut r = name_wire("ns.test.");
    r.extend(name_wire("hostmaster.test."));
    for v in [2024010101u32, 3600, 600, 86400, 60] {
        r.extend_from_slice(&v.to_be_bytes());
    }
    r
}

fn txt_rdata(strings: &[&str]) -> Vec<u8> {
    let mut r = Vec::new();
    for s in strings {
        r.push(u8::try_from(s.len()).unwrap());
        r.extend_from_slice(s.as_bytes());
    }
    r
}

/// The test resolver's answer to `q`, `None` for no answer at all.
pub fn answer(q: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let p = Query::parse(q, true).ok()?;
    let qname = p.question.name.to_lowercase_text();
    let qt = p.question.qtype;
    // Question section exactly as received (case kept), found by re-parsing.
    let (_, qend) = services::dns::wire::Question::parse(q, 12).ok()?;
    let question = &q[12..qend];

    let mut an: Vec<(Option<String>, u16, Vec<u8>)> = Vec::new();
    let mut ns: Vec<(Option<String>, u16, Vec<u8>)> = Vec::new();
    let mut rc = 0u16;
    let soa = || (Some("test.".to_string()), rtype::SOA, soa_rdata());
    match (qname.as_str(), qt) {
        ("mute.test.", _) => return None,
        ("fail.test.", _) => rc = 2,
        ("refused.test.", _) => rc = 5,
        ("a.test.", rtype::A) => {
            an.push((None, rtype::A, vec![10, 0, 0, 1]));
            an.push((None, rtype::A, vec![10, 0, 0, 2]));
        }
        ("a.test.", rtype::AAAA) => {
            let mut v = vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            v.truncate(16);
            an.push((None, rtype::AAAA, v));
        }
        ("mx.test.", rtype::MX) => {
            let mut r = 10u16.to_be_bytes().to_vec();
            r.extend(name_wire("mail.test."));
            an.push((None, rtype::MX, r));
            let mut r = 20u16.to_be_bytes().to_vec();
            r.extend(name_wire("mail2.test."));
            an.push((None, rtype::MX, r));
        }
        ("txt.test.", rtype::TXT) => {
            let x = "x".repeat(255);
            let y = "y".repeat(100);
            an.push((None, rtype::TXT, txt_rdata(&[&x, &y])));
            an.push((None, rtype::TXT, txt_rdata(&["hello world"])));
        }
        ("_sip._tcp.test.", rtype::SRV) => {
            let mut r = Vec::new();
            for v in [0u16, 5, 5060] {
                r.extend_from_slice(&v.to_be_bytes());
            }
            r.extend(name_wire("sip.test."));
            an.push((None, rtype::SRV, r));
        }
        ("cname.test.", rtype::CNAME) => an.push((None, rtype::CNAME, name_wire("a.test."))),
        ("cname.test.", rtype::A) => {
            an.push((None, rtype::CNAME, name_wire("a.test.")));
            an.push((Some("a.test.".into()), rtype::A, vec![10, 0, 0, 1]));
        }
        ("caa.test.", rtype::CAA) => {
            let mut r = vec![0, 5];
            r.extend_from_slice(b"issue");
            r.extend_from_slice(b"letsencrypt.org");
            an.push((None, rtype::CAA, r));
        }
        ("1.0.0.10.in-addr.arpa.", rtype::PTR) => an.push((None, rtype::PTR, name_wire("a.test."))),
        ("notcp.test.", rtype::A) => an.push((None, rtype::A, vec![10, 0, 0, 7])),
        ("test.", rtype::SOA) => an.push((None, rtype::SOA, soa_rdata())),
        ("big.test.", rtype::A) => {
            for i in 0..200u16 {
                let [hi, lo] = i.to_be_bytes();
                an.push((None, rtype::A, vec![10, 1, hi, lo]));
            }
        }
        ("a.test." | "mx.test." | "txt.test." | "cname.test." | "caa.test." | "test.", _) => {
            ns.push(soa())
        }
        (n, _) if n.ends_with(".test.") => {
            rc = 3;
            ns.push(soa());
        }
        _ => rc = 5,
    }

    let build = |an: &[(Option<String>, u16, Vec<u8>)], tc: bool| {
        let ar = u16::from(p.edns.is_some());
        let flags = 0x8400 | (p.header.flags & 0x0100) | rc | if tc { 0x0200 } else { 0 };
        let mut m = Msg::header(
            p.header.id,
            flags,
            1,
            u16::try_from(an.len()).unwrap(),
            u16::try_from(ns.len()).unwrap(),
            ar,
        );
        m.bytes(question);
        for (owner, t, rd) in an.iter().chain(ns.iter()) {
            m.rr(owner.as_deref(), *t, 300, rd);
        }
        if let Some(e) = p.edns {
            // NSID option (3) with a payload, to see options pass through.
            m.opt(
                1232,
                e.dnssec_ok,
                &[0, 3, 0, 6, b't', b'e', b's', b't', b'n', b's'],
            );
        }
        m.buf
    };
    let full = build(&an, false);
    let limit = match p.edns {
        Some(e) => usize::from(e.udp_size.max(512)),
        None => 512,
    };
    if !tcp && full.len() > limit {
        return Some(build(&[], true));
    }
    Some(full)
}

// ---------------------------------------------------------------- our server

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A resolv.conf of the test's own.
pub struct ResolvConf {
    pub path: PathBuf,
}

impl ResolvConf {
    pub fn new(nameservers: &[Ipv4Addr]) -> ResolvConf {
        let path = std::env::temp_dir().join(format!(
            "gvproxy-dns-test-{}-{}.conf",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let rc = ResolvConf { path };
        rc.write(nameservers);
        rc
    }
    pub fn write(&self, nameservers: &[Ipv4Addr]) {
        let mut text = String::from("# test\nsearch example.invalid\n");
        for ns in nameservers {
            text.push_str(&format!("nameserver {ns}\n"));
        }
        std::fs::write(&self.path, text).unwrap();
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub struct Running {
    pub server: Arc<DnsServer>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub resolv: ResolvConf,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.shutdown();
    }
}

/// Our server on 127.0.0.1 (UDP and TCP, ephemeral ports), with the default zones and a
/// resolv.conf listing `nameservers` on `port`.
pub fn start_server(
    nameservers: &[Ipv4Addr],
    port: u16,
    tweak: impl FnOnce(&mut DnsConfig),
) -> Running {
    let resolv = ResolvConf::new(nameservers);
    let mut cfg = DnsConfig {
        resolv_conf: resolv.path.clone(),
        resolver_port: port,
        timeout: Duration::from_millis(300),
        attempts: 2,
        ..DnsConfig::default()
    };
    tweak(&mut cfg);
    let server = DnsServer::new(cfg, Zones::gvproxy_defaults(GATEWAY, HOST));
    // UDP and TCP on the same port, as a real DNS server (dig retries TCP on the same port).
    let (udp, tcp) = (0..50)
        .find_map(|_| {
            let probe = UdpSocket::bind("127.0.0.1:0").ok()?;
            let port = probe.local_addr().ok()?.port();
            let tcp = server
                .bind_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .ok()?;
            drop(probe);
            let udp = server
                .bind_udp(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .ok()?;
            Some((udp, tcp))
        })
        .expect("no port free for both UDP and TCP");
    Running {
        server,
        udp,
        tcp,
        resolv,
    }
}

/// A seeded xorshift generator (replayable failures).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
