//! A shard driven like the switch loop drives it, against real sockets on 127.0.0.1 only:
//! guest frames in as batches, frames for the guest back as batches (recycled), the NAT
//! policy, TCP setup/refusal/data/close, UDP echo and port unreachable, ICMP echo;
//! gateway services (TCP handed over as a unix stream, UDP NATed), active opens into the
//! guest, reverse UDP flows and closing by tag.

// Test code: a failed unwrap is a failed test; casts are of small values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Poll, Token, Waker};

use stack::batch::FrameBatch;
use stack::flow::{FlowHasher, FlowKey, Protocol};
use stack::nat::NatTable;
use stack::shard::{self, LocalConn, ShardConfig, ShardHandle, ShardMsg, SwitchMsg};
use stack::wire::{
    EthernetFrame, Icmpv4Packet, Icmpv4Repr, Icmpv4Type, IpProtocol, Ipv4FrameRepr, Ipv4Packet,
    MacAddr, SeqNumber, TcpFlags, TcpPacket, TcpRepr, UdpPacket, UdpRepr,
};

const GW_MAC: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]);
const GUEST_MAC: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]);
const GW_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);
const HOST_ALIAS: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
const WAIT: Duration = Duration::from_secs(5);

struct Harness {
    shard: ShardHandle,
    rx: Receiver<SwitchMsg>,
    _poll: Poll,
    /// Frames received and not yet looked at.
    pending: Vec<Vec<u8>>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(|_| {})
    }

    fn with(f: impl FnOnce(&mut ShardConfig)) -> Harness {
        Harness::shard(0, f)
    }

    /// Shard `id` (of `cfg.shards`).
    fn shard(id: usize, f: impl FnOnce(&mut ShardConfig)) -> Harness {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut cfg = ShardConfig::new(GW_MAC, GW_IP, 1500, NatTable::default());
        f(&mut cfg);
        let shard = shard::spawn(cfg, id, tx, waker).unwrap();
        Harness {
            shard,
            rx,
            _poll: poll,
            pending: Vec::new(),
        }
    }

    fn send(&self, frames: &[Vec<u8>]) {
        let mut b = FrameBatch::new();
        for f in frames {
            b.push(f);
        }
        assert!(self.shard.send(ShardMsg::Frames(b)));
    }

    /// Collects frames for up to `d`.
    fn collect(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while let Ok(msg) = self.rx.recv_deadline(end) {
            if let SwitchMsg::Frames { batch, .. } = msg {
                self.pending.extend(batch.iter().map(<[u8]>::to_vec));
                self.shard.send(ShardMsg::Recycle(batch));
            }
        }
    }

    /// The first frame matching `pred` within `WAIT` (others stay pending).
    fn expect(&mut self, what: &str, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let end = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.pending.iter().position(|f| pred(f)) {
                return self.pending.remove(i);
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {what} within {WAIT:?}");
            match self.rx.recv_timeout(left) {
                Ok(SwitchMsg::Frames { batch, .. }) => {
                    self.pending.extend(batch.iter().map(<[u8]>::to_vec));
                    self.shard.send(ShardMsg::Recycle(batch));
                }
                Ok(SwitchMsg::Recycle { .. }) => {}
                Err(_) => {}
            }
        }
    }

    fn stats(&self) -> shard::ShardStats {
        self.shard.stats(WAIT).unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shard.send(ShardMsg::Shutdown);
    }
}

fn frame_repr(dst: Ipv4Addr) -> Ipv4FrameRepr {
    Ipv4FrameRepr {
        src_mac: GUEST_MAC,
        dst_mac: GW_MAC,
        src_ip: GUEST_IP,
        dst_ip: dst,
        ttl: 64,
        ident: 7,
        dont_frag: true,
        dscp_ecn: 0,
    }
}

fn tcp_frame(dst: Ipv4Addr, repr: &TcpRepr, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; Ipv4FrameRepr::HEADER_LEN + repr.header_len() + payload.len()];
    let at = repr.frame_payload_offset();
    b[at..].copy_from_slice(payload);
    let n = repr
        .emit_frame(&mut b, &frame_repr(dst), payload.len())
        .unwrap();
    b.truncate(n);
    b
}

fn syn(dst_port: u16, src_port: u16, seq: u32) -> TcpRepr {
    TcpRepr {
        src_port,
        dst_port,
        seq: SeqNumber(seq),
        flags: TcpFlags::SYN,
        window: 64240,
        mss: Some(1460),
        window_scale: Some(7),
        sack_permitted: true,
        ..TcpRepr::default()
    }
}

fn udp_frame(dst: Ipv4Addr, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let repr = UdpRepr { src_port, dst_port };
    let mut b = vec![0u8; UdpRepr::frame_payload_offset() + payload.len()];
    b[UdpRepr::frame_payload_offset()..].copy_from_slice(payload);
    let n = repr
        .emit_frame(&mut b, &frame_repr(dst), payload.len())
        .unwrap();
    b.truncate(n);
    b
}

fn echo_frame(dst: Ipv4Addr, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let msg = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    };
    let mut b = vec![0u8; Ipv4FrameRepr::HEADER_LEN + msg.buffer_len()];
    msg.emit_frame(&mut b, &frame_repr(dst)).unwrap();
    b
}

type TcpView<'a> = (Ipv4Packet<&'a [u8]>, TcpPacket<&'a [u8]>);

/// (IPv4 packet, TCP segment) of a TCP frame to the guest, checksums verified.
fn parse_tcp(f: &[u8]) -> Option<TcpView<'_>> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    if eth.dst() != GUEST_MAC || eth.src() != GW_MAC {
        return None;
    }
    let ip = Ipv4Packet::new_checked(&f[14..]).ok()?;
    if ip.protocol() != IpProtocol::TCP || ip.dst() != GUEST_IP || !ip.verify_checksum() {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload_slice()).ok()?;
    assert!(tcp.verify_checksum(ip.src(), ip.dst()));
    Some((ip, tcp))
}

fn is_tcp(f: &[u8], src: Ipv4Addr, sport: u16, dport: u16, flags: TcpFlags) -> bool {
    parse_tcp(f).is_some_and(|(ip, t)| {
        ip.src() == src && t.src_port() == sport && t.dst_port() == dport && t.flags() == flags
    })
}

fn icmp_of(f: &[u8]) -> Option<(Ipv4Addr, Vec<u8>)> {
    let ip = Ipv4Packet::new_checked(f.get(14..)?).ok()?;
    if ip.protocol() != IpProtocol::ICMP || ip.dst() != GUEST_IP {
        return None;
    }
    let icmp = Icmpv4Packet::new_checked(ip.payload_slice()).ok()?;
    assert!(icmp.verify_checksum());
    Some((ip.src(), ip.payload_slice().to_vec()))
}

#[test]
fn tcp_connects_moves_data_and_closes() {
    let mut h = Harness::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    h.send(&[tcp_frame(HOST_ALIAS, &syn(port, 40000, 1000), b"")]);
    let (mut conn, _) = listener.accept().unwrap();
    let f = h.expect("SYN-ACK", |f| {
        is_tcp(f, HOST_ALIAS, port, 40000, TcpFlags::SYN | TcpFlags::ACK)
    });
    let (_, t) = parse_tcp(&f).unwrap();
    assert_eq!(t.ack_number(), SeqNumber(1001));
    let iss = t.seq_number();
    // ACK + data.
    let ack = TcpRepr {
        src_port: 40000,
        dst_port: port,
        seq: SeqNumber(1001),
        ack: iss + 1,
        flags: TcpFlags::ACK | TcpFlags::PSH,
        window: 1000,
        ..TcpRepr::default()
    };
    h.send(&[tcp_frame(HOST_ALIAS, &ack, b"hello host")]);
    let mut buf = [0u8; 10];
    conn.set_read_timeout(Some(WAIT)).unwrap();
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello host");
    conn.write_all(b"hello guest").unwrap();
    let f = h.expect("data", |f| {
        parse_tcp(f).is_some_and(|(_, t)| t.src_port() == port && !t.payload().is_empty())
    });
    let (_, t) = parse_tcp(&f).unwrap();
    assert_eq!(t.payload(), b"hello guest");
    assert_eq!(t.seq_number(), iss + 1);
    assert_eq!(h.stats().tcp.flows_open, 1);
    // The host closes: FIN to the guest; the guest answers with FIN+ACK; last ACK.
    drop(conn);
    let f = h.expect("FIN", |f| {
        parse_tcp(f).is_some_and(|(_, t)| t.src_port() == port && t.fin())
    });
    let (_, t) = parse_tcp(&f).unwrap();
    let fin = TcpRepr {
        seq: SeqNumber(1011),
        ack: t.seq_number() + 1,
        flags: TcpFlags::ACK | TcpFlags::FIN,
        ..ack
    };
    h.send(&[tcp_frame(HOST_ALIAS, &fin, b"")]);
    let end = Instant::now() + WAIT;
    while h.stats().tcp.flows_open != 0 {
        assert!(Instant::now() < end, "flow not closed: {:?}", h.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = h.stats();
    assert_eq!((s.tcp.connects_ok, s.tcp.flows_closed), (1, 1));
    assert_eq!(s.tcp.bytes_to_host, 10);
    assert_eq!(s.tcp.bytes_from_host, 11);
}

#[test]
fn tcp_refused_and_policy_get_rst() {
    let mut h = Harness::new();
    // A port nobody listens on (bind, learn the port, close).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    h.send(&[tcp_frame(HOST_ALIAS, &syn(port, 40001, 5), b"")]);
    let f = h.expect("RST", |f| {
        is_tcp(f, HOST_ALIAS, port, 40001, TcpFlags::RST | TcpFlags::ACK)
    });
    assert_eq!(parse_tcp(&f).unwrap().1.ack_number(), SeqNumber(6));
    // The gateway itself (no services yet), an unused subnet address, link-local: RST,
    // never dialled.
    for (dst, sport) in [
        (GW_IP, 40002),
        (Ipv4Addr::new(192, 168, 127, 77), 40003),
        (Ipv4Addr::new(169, 254, 169, 254), 40004),
    ] {
        h.send(&[tcp_frame(dst, &syn(80, sport, 9), b"")]);
        h.expect("policy RST", |f| {
            is_tcp(f, dst, 80, sport, TcpFlags::RST | TcpFlags::ACK)
        });
    }
    // A segment of no connection: RST with SEQ = SEG.ACK.
    let stray = TcpRepr {
        src_port: 40005,
        dst_port: port,
        seq: SeqNumber(77),
        ack: SeqNumber(4242),
        flags: TcpFlags::ACK,
        window: 100,
        ..TcpRepr::default()
    };
    h.send(&[tcp_frame(HOST_ALIAS, &stray, b"x")]);
    let f = h.expect("RST for unknown", |f| {
        is_tcp(f, HOST_ALIAS, port, 40005, TcpFlags::RST)
    });
    assert_eq!(parse_tcp(&f).unwrap().1.seq_number(), SeqNumber(4242));
    let s = h.stats();
    assert_eq!(s.tcp.connects_refused, 1);
    assert_eq!(s.tcp.policy_rejected, 3);
    assert_eq!(s.tcp.rst_for_unknown, 1);
    assert_eq!(s.tcp.flows_open, 0);
}

#[test]
fn tcp_connect_timeout_is_per_flow() {
    let mut h = Harness::with(|c| c.connect_timeout = Duration::from_millis(300));
    // A listener whose backlog is full never answers further SYNs.
    let hang = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    hang.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    hang.listen(0).unwrap();
    let hang_port = hang.local_addr().unwrap().as_socket().unwrap().port();
    let mut frames = Vec::new();
    for i in 0..8u16 {
        frames.push(tcp_frame(HOST_ALIAS, &syn(hang_port, 41000 + i, 1), b""));
    }
    h.send(&frames);
    // Meanwhile another connection is set up at once.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t0 = Instant::now();
    h.send(&[tcp_frame(HOST_ALIAS, &syn(port, 42000, 1), b"")]);
    h.expect("SYN-ACK", |f| {
        is_tcp(f, HOST_ALIAS, port, 42000, TcpFlags::SYN | TcpFlags::ACK)
    });
    assert!(
        t0.elapsed() < Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    // The hanging ones (all but the one or two the backlog took) get RST after the timeout.
    let end = Instant::now() + WAIT;
    loop {
        h.collect(Duration::from_millis(50));
        let s = h.stats();
        if s.tcp.connects_timed_out >= 6 && s.tcp.connecting == 0 {
            break;
        }
        assert!(Instant::now() < end, "{s:?}");
    }
    let rsts = h
        .pending
        .iter()
        .filter(|f| parse_tcp(f).is_some_and(|(_, t)| t.src_port() == hang_port && t.rst()))
        .count();
    assert!(rsts >= 6, "{rsts}");
}

#[test]
fn udp_echo_and_port_unreachable() {
    let mut h = Harness::new();
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2000];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            let _ = server.send_to(&buf[..n], from);
        }
    });
    let data: Vec<u8> = (0..1472u32).map(|i| i as u8).collect();
    for (i, len) in [0usize, 1, 100, 1472].into_iter().enumerate() {
        h.send(&[udp_frame(HOST_ALIAS, 5000, port, &data[..len])]);
        let f = h.expect("UDP reply", |f| {
            Ipv4Packet::new_checked(&f[14..]).is_ok_and(|ip| {
                ip.protocol() == IpProtocol::UDP
                    && UdpPacket::new_checked(ip.payload_slice())
                        .is_ok_and(|u| u.payload().len() == len)
            })
        });
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert_eq!((ip.src(), ip.dst()), (HOST_ALIAS, GUEST_IP));
        let u = UdpPacket::new_checked(ip.payload_slice()).unwrap();
        assert!(u.verify_checksum(ip.src(), ip.dst()));
        assert_eq!((u.src_port(), u.dst_port()), (port, 5000));
        assert_eq!(u.payload(), &data[..len], "datagram {i}");
    }
    assert_eq!(h.stats().udp.flows_open, 1);

    // Closed host port: the host's ICMP error becomes ours.
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cport = closed.local_addr().unwrap().port();
    drop(closed);
    h.send(&[udp_frame(HOST_ALIAS, 5001, cport, b"anyone?")]);
    let (src, msg) = icmp_of(&h.expect("port unreachable", |f| icmp_of(f).is_some())).unwrap();
    assert_eq!(src, HOST_ALIAS);
    assert_eq!((msg[0], msg[1]), (Icmpv4Type::DST_UNREACHABLE, 3));
    let quoted = Ipv4Packet::new_checked(&msg[8..28]).err();
    assert!(quoted.is_some() || msg.len() >= 36);
    assert_eq!(&msg[8 + 12..8 + 16], &GUEST_IP.octets());
    assert_eq!(&msg[8 + 20..8 + 22], &5001u16.to_be_bytes());

    // The gateway (no services yet) and an unused address: port unreachable at once;
    // broadcast: nothing.
    for dst in [GW_IP, Ipv4Addr::new(192, 168, 127, 99)] {
        h.send(&[udp_frame(dst, 5002, 53, b"q")]);
        let (src, msg) = icmp_of(&h.expect("port unreachable", |f| icmp_of(f).is_some())).unwrap();
        assert_eq!(src, dst);
        assert_eq!((msg[0], msg[1]), (3, 3));
    }
    h.send(&[
        udp_frame(Ipv4Addr::BROADCAST, 68, 67, b"dhcp"),
        udp_frame(Ipv4Addr::new(169, 254, 169, 254), 5003, 80, b"md"),
    ]);
    h.collect(Duration::from_millis(200));
    assert!(h.pending.is_empty(), "{:?}", h.pending);
    let s = h.stats();
    assert_eq!(s.udp.broadcast_dropped, 1);
    assert_eq!(s.udp.policy_dropped, 1);
    assert_eq!(s.udp.port_unreachable_sent, 3);
}

#[test]
fn udp_burst_leaves_in_segmented_sends_in_order() {
    // One batch: a run of one size (with a shorter last datagram), another flow in the
    // middle, then mixed sizes; each flow's datagrams arrive whole and in order.
    let h = Harness::new();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    let (pa, pb) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    let dgram = |i: usize, len: usize| -> Vec<u8> { (0..len).map(|j| (i + j) as u8).collect() };
    let mut sizes_a: Vec<usize> = vec![1000; 70];
    sizes_a.push(300);
    sizes_a.extend([1472, 1, 1472, 1472, 0, 0, 9, 9]);
    let mut frames = Vec::new();
    for (i, &len) in sizes_a.iter().enumerate() {
        frames.push(udp_frame(HOST_ALIAS, 6000, pa, &dgram(i, len)));
        if i == 35 {
            for k in 0..3 {
                frames.push(udp_frame(HOST_ALIAS, 6001, pb, &dgram(100 + k, 50)));
            }
        }
    }
    h.send(&frames);
    let mut buf = [0u8; 2000];
    for (i, &len) in sizes_a.iter().enumerate() {
        let n = match a.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => panic!("datagram {i} of flow a: {e}: {:?}", h.stats().udp),
        };
        assert_eq!(&buf[..n], &dgram(i, len)[..], "datagram {i}");
    }
    for k in 0..3 {
        let n = b.recv(&mut buf).expect("every datagram of flow b");
        assert_eq!(&buf[..n], &dgram(100 + k, 50)[..]);
    }
    let s = h.stats();
    assert_eq!(s.udp.datagrams_to_host, sizes_a.len() as u64 + 3);
    assert_eq!(s.udp.send_errors, 0);
    // 36 + 35 (the run split by flow b, then 64 at most per send) ...: a few sends.
    assert!(s.udp.gso_sends >= 2, "{:?}", s.udp);
}

#[test]
fn udp_flows_expire_when_idle() {
    let mut h = Harness::with(|c| c.udp_idle = Duration::from_millis(200));
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    h.send(&[udp_frame(HOST_ALIAS, 6000, port, b"x")]);
    let mut buf = [0u8; 10];
    server.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(server.recv_from(&mut buf).unwrap().0, 1);
    assert_eq!(h.stats().udp.flows_open, 1);
    h.collect(Duration::from_millis(500));
    let s = h.stats();
    assert_eq!((s.udp.flows_open, s.udp.flows_expired), (0, 1));
}

#[test]
fn icmp_echo_through_a_ping_socket() {
    let mut h = Harness::new();
    h.send(&[echo_frame(HOST_ALIAS, 0x1c46, 3, b"ping payload")]);
    h.collect(Duration::from_millis(500));
    let s = h.stats();
    if s.icmp.not_permitted > 0 {
        eprintln!("ping sockets not permitted here (net.ipv4.ping_group_range): skipped");
        return;
    }
    let (src, msg) = icmp_of(&h.expect("echo reply", |f| icmp_of(f).is_some())).unwrap();
    assert_eq!(src, HOST_ALIAS);
    let p = Icmpv4Packet::new_checked(&msg[..]).unwrap();
    assert_eq!(p.msg_type(), Icmpv4Type::ECHO_REPLY);
    assert_eq!((p.echo_ident(), p.echo_seq_no()), (0x1c46, 3));
    assert_eq!(p.data(), b"ping payload");
    // Unused addresses are never pinged.
    h.send(&[echo_frame(Ipv4Addr::new(192, 168, 127, 99), 1, 1, b"")]);
    h.collect(Duration::from_millis(200));
    assert!(h.pending.is_empty());
    let s = h.stats();
    assert_eq!((s.icmp.echo_replies, s.icmp.policy_dropped), (1, 1));
}

#[test]
fn garbage_never_panics() {
    let mut h = Harness::new();
    let good = tcp_frame(HOST_ALIAS, &syn(9, 40000, 1), b"");
    let mut frames = Vec::new();
    for len in 0..good.len() {
        frames.push(good[..len].to_vec());
    }
    let mut x = 0x1234_5678u32;
    for _ in 0..200 {
        let mut f = good.clone();
        // Never the IP header nor the ports: a random destination would be dialled.
        for b in f.iter_mut().skip(14 + 20 + 4) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        frames.push(f);
    }
    h.send(&frames);
    h.collect(Duration::from_millis(300));
    let s = h.stats();
    assert_eq!(s.frames.frames_in, frames.len() as u64);
}

// ---- gateway services, active opens, reverse UDP, close by tag ----

/// (dst MAC, IPv4 packet, TCP segment) of any TCP frame from the gateway to the guest.
fn parse_tcp_to_guest(f: &[u8]) -> Option<(MacAddr, TcpView<'_>)> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    if eth.src() != GW_MAC {
        return None;
    }
    let ip = Ipv4Packet::new_checked(&f[14..]).ok()?;
    if ip.protocol() != IpProtocol::TCP || ip.dst() != GUEST_IP || !ip.verify_checksum() {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload_slice()).ok()?;
    assert!(tcp.verify_checksum(ip.src(), ip.dst()));
    Some((eth.dst(), (ip, tcp)))
}

/// (dst MAC, source, destination, payload) of a UDP frame to the guest.
fn parse_udp_to_guest(f: &[u8]) -> Option<(MacAddr, SocketAddrV4, SocketAddrV4, Vec<u8>)> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    let ip = Ipv4Packet::new_checked(&f[14..]).ok()?;
    if ip.protocol() != IpProtocol::UDP || ip.dst() != GUEST_IP {
        return None;
    }
    let u = UdpPacket::new_checked(ip.payload_slice()).ok()?;
    assert!(u.verify_checksum(ip.src(), ip.dst()));
    Some((
        eth.dst(),
        SocketAddrV4::new(ip.src(), u.src_port()),
        SocketAddrV4::new(ip.dst(), u.dst_port()),
        u.payload().to_vec(),
    ))
}

/// A guest segment with ACK.
fn guest_seg(sport: u16, dport: u16, seq: SeqNumber, ack: SeqNumber) -> TcpRepr {
    TcpRepr {
        src_port: sport,
        dst_port: dport,
        seq,
        ack,
        flags: TcpFlags::ACK,
        window: 5000,
        ..TcpRepr::default()
    }
}

fn wait_for(h: &mut Harness, what: &str, pred: impl Fn(&shard::ShardStats) -> bool) {
    let end = Instant::now() + WAIT;
    loop {
        let s = h.stats();
        if pred(&s) {
            return;
        }
        assert!(Instant::now() < end, "{what}: {s:?}");
        h.collect(Duration::from_millis(20));
    }
}

#[test]
fn gateway_tcp_service_gets_a_unix_stream() {
    let (tx, rx) = crossbeam_channel::bounded::<LocalConn>(4);
    let (dead_tx, dead_rx) = crossbeam_channel::bounded::<LocalConn>(1);
    drop(dead_rx);
    let mut h = Harness::with(|c| {
        c.services.tcp.push((80, tx));
        c.services.tcp.push((81, dead_tx));
    });
    h.send(&[tcp_frame(GW_IP, &syn(80, 40100, 1000), b"")]);
    let f = h.expect("SYN-ACK", |f| {
        is_tcp(f, GW_IP, 80, 40100, TcpFlags::SYN | TcpFlags::ACK)
    });
    let (_, t) = parse_tcp(&f).unwrap();
    assert_eq!(t.ack_number(), SeqNumber(1001));
    let iss = t.seq_number();
    let conn = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(conn.guest, SocketAddrV4::new(GUEST_IP, 40100));
    let mut stream = conn.stream;
    stream.set_read_timeout(Some(WAIT)).unwrap();

    // Guest → service.
    let mut seg = guest_seg(40100, 80, SeqNumber(1001), iss + 1);
    seg.flags |= TcpFlags::PSH;
    h.send(&[tcp_frame(GW_IP, &seg, b"GET / HTTP/1.0\r\n\r\n")]);
    let mut buf = [0u8; 18];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"GET / HTTP/1.0\r\n\r\n");

    // Service → guest.
    stream.write_all(b"HTTP/1.0 200 OK\r\n").unwrap();
    let f = h.expect("data", |f| {
        parse_tcp(f).is_some_and(|(_, t)| t.src_port() == 80 && !t.payload().is_empty())
    });
    let (ip, t) = parse_tcp(&f).unwrap();
    assert_eq!(ip.src(), GW_IP);
    assert_eq!(t.payload(), b"HTTP/1.0 200 OK\r\n");
    assert_eq!(t.seq_number(), iss + 1);

    // The guest's FIN: the service reads EOF.
    let fin = TcpRepr {
        seq: SeqNumber(1019),
        ack: iss + 18,
        flags: TcpFlags::ACK | TcpFlags::FIN,
        ..seg
    };
    h.send(&[tcp_frame(GW_IP, &fin, b"")]);
    assert_eq!(stream.read(&mut buf).unwrap(), 0);
    // The service closes its side: FIN to the guest, whose ACK ends the connection.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let f = h.expect("FIN", |f| {
        parse_tcp(f).is_some_and(|(_, t)| t.src_port() == 80 && t.fin())
    });
    let (_, t) = parse_tcp(&f).unwrap();
    assert_eq!(t.ack_number(), SeqNumber(1020));
    let last = TcpRepr {
        seq: SeqNumber(1020),
        ack: t.seq_number() + 1,
        flags: TcpFlags::ACK,
        ..seg
    };
    h.send(&[tcp_frame(GW_IP, &last, b"")]);
    wait_for(&mut h, "flow closed", |s| s.tcp.flows_open == 0);

    // A service whose channel is gone, and a port without a service: RST.
    h.send(&[
        tcp_frame(GW_IP, &syn(81, 40101, 5), b""),
        tcp_frame(GW_IP, &syn(82, 40102, 5), b""),
    ]);
    h.expect("RST (service gone)", |f| {
        is_tcp(f, GW_IP, 81, 40101, TcpFlags::RST | TcpFlags::ACK)
    });
    h.expect("RST (no service)", |f| {
        is_tcp(f, GW_IP, 82, 40102, TcpFlags::RST | TcpFlags::ACK)
    });
    let s = h.stats();
    assert_eq!((s.forward.local_accepted, s.forward.local_refused), (1, 1));
    assert_eq!(s.tcp.policy_rejected, 1);
    assert_eq!(s.tcp.bytes_to_host, 18);
    assert_eq!(s.tcp.bytes_from_host, 17);
}

#[test]
fn gateway_udp_service_is_nated_to_its_host_address() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = match server.local_addr().unwrap() {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!(),
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 2000];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            let mut reply = b"re: ".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = server.send_to(&reply, from);
        }
    });
    let mut h = Harness::with(|c| c.services.udp.push((53, addr)));
    h.send(&[udp_frame(GW_IP, 5353, 53, b"query")]);
    let f = h.expect("reply", |f| parse_udp_to_guest(f).is_some());
    let (mac, src, dst, data) = parse_udp_to_guest(&f).unwrap();
    assert_eq!(mac, GUEST_MAC);
    assert_eq!(src, SocketAddrV4::new(GW_IP, 53));
    assert_eq!(dst, SocketAddrV4::new(GUEST_IP, 5353));
    assert_eq!(data, b"re: query");
    // Another gateway port: still port unreachable.
    h.send(&[udp_frame(GW_IP, 5353, 54, b"q")]);
    let (src, msg) = icmp_of(&h.expect("port unreachable", |f| icmp_of(f).is_some())).unwrap();
    assert_eq!((src, msg[0], msg[1]), (GW_IP, 3, 3));
    let s = h.stats();
    assert_eq!((s.forward.service_udp_flows, s.udp.flows_open), (1, 1));
}

/// A connected TCP pair on 127.0.0.1: (the client the test keeps, the accepted end).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (a, _) = l.accept().unwrap();
    (c, a)
}

const SHARDS: usize = 4;
const SHARD_ID: usize = 2;
const GUEST_PORT: u16 = 22;

fn hasher() -> FlowHasher {
    FlowHasher::with_key(0x1234, 0x5678)
}

/// Shard 2 of 4, with a fixed hasher.
fn sharded(f: impl FnOnce(&mut ShardConfig)) -> Harness {
    Harness::shard(SHARD_ID, |c| {
        c.shards = SHARDS;
        c.hasher = hasher();
        f(c);
    })
}

/// Sends OpenTcp and completes the handshake as the guest. Returns (gateway port, the
/// next sequence numbers: ours as the guest, the shard's).
fn open_into_guest(h: &mut Harness, host: OwnedFd, tag: u64) -> (u16, SeqNumber, SeqNumber) {
    let guest = SocketAddrV4::new(GUEST_IP, GUEST_PORT);
    assert!(h.shard.send(ShardMsg::OpenTcp { host, guest, tag }));
    let f = h.expect("SYN to the guest", |f| {
        parse_tcp_to_guest(f).is_some_and(|(_, (_, t))| t.syn() && t.dst_port() == GUEST_PORT)
    });
    let (mac, (ip, t)) = parse_tcp_to_guest(&f).unwrap();
    assert_eq!(mac, MacAddr::ZERO, "the switch fills in the MAC");
    assert_eq!(ip.src(), GW_IP);
    assert!(!t.ack());
    let port = t.src_port();
    assert!(port >= 49152, "{port}");
    let key = FlowKey {
        proto: Protocol::Tcp,
        guest,
        remote: SocketAddrV4::new(GW_IP, port),
    };
    assert_eq!(hasher().shard_of(&key, SHARDS), SHARD_ID);
    let iss = t.seq_number();
    let synack = TcpRepr {
        src_port: GUEST_PORT,
        dst_port: port,
        seq: SeqNumber(7000),
        ack: iss + 1,
        flags: TcpFlags::SYN | TcpFlags::ACK,
        window: 64240,
        mss: Some(1460),
        ..TcpRepr::default()
    };
    h.send(&[tcp_frame(GW_IP, &synack, b"")]);
    let f = h.expect("ACK of the SYN-ACK", |f| {
        parse_tcp_to_guest(f).is_some_and(|(_, (_, t))| t.dst_port() == GUEST_PORT && t.ack())
    });
    let (mac, (_, t)) = parse_tcp_to_guest(&f).unwrap();
    assert_eq!(mac, GUEST_MAC, "learned from the SYN-ACK");
    assert_eq!(t.ack_number(), SeqNumber(7001));
    (port, SeqNumber(7001), iss + 1)
}

#[test]
fn open_tcp_into_the_guest() {
    let mut h = sharded(|_| {});
    let (mut client, accepted) = tcp_pair();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let (port, gseq, sseq) = open_into_guest(&mut h, OwnedFd::from(accepted), 1);
    // Host client → guest.
    client.write_all(b"SSH-2.0-client\r\n").unwrap();
    let f = h.expect("data to the guest", |f| {
        parse_tcp(f).is_some_and(|(_, t)| t.src_port() == port && !t.payload().is_empty())
    });
    let (_, t) = parse_tcp(&f).unwrap();
    assert_eq!(t.payload(), b"SSH-2.0-client\r\n");
    assert_eq!(t.seq_number(), sseq);
    // Guest → host client.
    let mut seg = guest_seg(GUEST_PORT, port, gseq, sseq + 16);
    seg.flags |= TcpFlags::PSH;
    h.send(&[tcp_frame(GW_IP, &seg, b"SSH-2.0-server\r\n")]);
    let mut buf = [0u8; 16];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"SSH-2.0-server\r\n");
    // The host client closes: FIN to the guest; the guest's FIN reaches the client as EOF.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let f = h.expect("FIN", |f| {
        parse_tcp(f).is_some_and(|(_, t)| t.src_port() == port && t.fin())
    });
    let (_, t) = parse_tcp(&f).unwrap();
    let fin = TcpRepr {
        seq: gseq + 16,
        ack: t.seq_number() + 1,
        flags: TcpFlags::ACK | TcpFlags::FIN,
        ..seg
    };
    h.send(&[tcp_frame(GW_IP, &fin, b"")]);
    assert_eq!(client.read(&mut buf).unwrap(), 0);
    wait_for(&mut h, "flow closed", |s| s.tcp.flows_open == 0);
    let s = h.stats();
    assert_eq!(
        (s.forward.active_opens, s.forward.active_open_established),
        (1, 1)
    );
    assert_eq!(s.forward.active_open_failed, 0);
}

#[test]
fn open_tcp_failures_close_the_host_socket() {
    // One port in the range: a second open to the same guest address finds none free.
    let mut h = sharded(|c| {
        let free = (49152..=65535u16)
            .find(|&p| {
                let key = FlowKey {
                    proto: Protocol::Tcp,
                    guest: SocketAddrV4::new(GUEST_IP, GUEST_PORT),
                    remote: SocketAddrV4::new(GW_IP, p),
                };
                hasher().shard_of(&key, SHARDS) == SHARD_ID
            })
            .unwrap();
        c.ephemeral_ports = free..=free;
    });
    let (mut a, accepted) = tcp_pair();
    let guest = SocketAddrV4::new(GUEST_IP, GUEST_PORT);
    assert!(h.shard.send(ShardMsg::OpenTcp {
        host: OwnedFd::from(accepted),
        guest,
        tag: 1
    }));
    let f = h.expect("SYN", |f| {
        parse_tcp_to_guest(f).is_some_and(|(_, (_, t))| t.syn())
    });
    let (_, (_, t)) = parse_tcp_to_guest(&f).unwrap();
    let (port, iss) = (t.src_port(), t.seq_number());
    let (mut b, accepted) = tcp_pair();
    assert!(h.shard.send(ShardMsg::OpenTcp {
        host: OwnedFd::from(accepted),
        guest,
        tag: 2
    }));
    b.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 4];
    let r = b.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    // The guest refuses the first: RST+ACK → the host client is reset.
    let rst = TcpRepr {
        src_port: GUEST_PORT,
        dst_port: port,
        seq: SeqNumber(0),
        ack: iss + 1,
        flags: TcpFlags::RST | TcpFlags::ACK,
        ..TcpRepr::default()
    };
    h.send(&[tcp_frame(GW_IP, &rst, b"")]);
    a.set_read_timeout(Some(WAIT)).unwrap();
    let r = a.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    // Not a guest address (the gateway itself), and a datagram socket: refused.
    let (mut c, accepted) = tcp_pair();
    assert!(h.shard.send(ShardMsg::OpenTcp {
        host: OwnedFd::from(accepted),
        guest: SocketAddrV4::new(GW_IP, 22),
        tag: 3
    }));
    c.set_read_timeout(Some(WAIT)).unwrap();
    let r = c.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(h.shard.send(ShardMsg::OpenTcp {
        host: OwnedFd::from(udp),
        guest,
        tag: 4
    }));
    wait_for(&mut h, "all failed", |s| {
        s.forward.active_opens == 4 && s.tcp.flows_open == 0
    });
    let s = h.stats();
    assert_eq!(s.forward.active_open_no_port, 1);
    assert_eq!(s.forward.active_open_failed, 3);
    assert_eq!(s.forward.active_open_established, 0);
}

#[test]
fn open_tcp_gives_up_when_the_guest_never_answers() {
    let mut h = sharded(|c| {
        c.tcp.syn_retries = 1;
        c.tcp.rto_initial = Duration::from_millis(100);
        c.tcp.rto_min = Duration::from_millis(100);
    });
    let (mut client, accepted) = tcp_pair();
    let guest = SocketAddrV4::new(GUEST_IP, GUEST_PORT);
    assert!(h.shard.send(ShardMsg::OpenTcp {
        host: OwnedFd::from(accepted),
        guest,
        tag: 1
    }));
    client.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 4];
    let t0 = Instant::now();
    let r = client.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    h.collect(Duration::from_millis(50));
    let syns = h
        .pending
        .iter()
        .filter(|f| parse_tcp_to_guest(f).is_some_and(|(_, (_, t))| t.syn()))
        .count();
    assert_eq!(syns, 2, "the SYN and one retry");
    wait_for(&mut h, "gave up", |s| {
        s.forward.active_open_failed == 1 && s.tcp.flows_open == 0
    });
}

#[test]
fn serve_udp_gives_each_client_a_flow() {
    let mut h = sharded(|_| {});
    let serve = UdpSocket::bind("127.0.0.1:0").unwrap();
    let serve_addr = serve.local_addr().unwrap();
    let guest = SocketAddrV4::new(GUEST_IP, 8053);
    assert!(h.shard.send(ShardMsg::ServeUdp {
        socket: serve,
        guest,
        tag: 9
    }));
    let clients: Vec<UdpSocket> = (0..2)
        .map(|_| {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.set_read_timeout(Some(WAIT)).unwrap();
            c
        })
        .collect();
    let mut ports = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let msg = format!("hello {i}");
        c.send_to(msg.as_bytes(), serve_addr).unwrap();
        let f = h.expect("datagram to the guest", |f| {
            parse_udp_to_guest(f).is_some_and(|(_, _, _, d)| d == msg.as_bytes())
        });
        let (mac, src, dst, _) = parse_udp_to_guest(&f).unwrap();
        assert_eq!(dst, guest);
        assert_eq!(*src.ip(), GW_IP);
        let key = FlowKey {
            proto: Protocol::Udp,
            guest,
            remote: src,
        };
        assert_eq!(hasher().shard_of(&key, SHARDS), SHARD_ID);
        // The first flow to an unknown guest: the switch fills in the MAC; the second
        // client's flow uses the MAC learned from the guest's reply on the first.
        assert_eq!(mac, if i == 0 { MacAddr::ZERO } else { GUEST_MAC });
        ports.push(src.port());
        // The guest answers: the client gets it from the serve socket's address.
        let reply = format!("reply {i}");
        h.send(&[udp_frame(GW_IP, 8053, src.port(), reply.as_bytes())]);
        let mut buf = [0u8; 100];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], reply.as_bytes());
        assert_eq!(from, serve_addr);
    }
    assert_ne!(ports[0], ports[1]);
    // A second datagram from the first client uses its flow.
    clients[0].send_to(b"again", serve_addr).unwrap();
    let f = h.expect("again", |f| {
        parse_udp_to_guest(f).is_some_and(|(_, _, _, d)| d == b"again")
    });
    assert_eq!(parse_udp_to_guest(&f).unwrap().1.port(), ports[0]);
    let s = h.stats();
    assert_eq!(s.forward.reverse_flows_created, 2);
    assert_eq!(s.forward.reverse_flows_open, 2);
    assert_eq!(s.forward.serve_sockets_open, 1);
    assert_eq!(s.forward.reverse_datagrams_to_guest, 3);
    assert_eq!(s.forward.reverse_datagrams_to_client, 2);
    assert_eq!(s.udp.flows_open, 2);
}

#[test]
fn serve_udp_flows_idle_out_and_clients_are_bounded() {
    let mut h = sharded(|c| {
        c.udp_idle = Duration::from_millis(300);
        c.max_udp_clients = 1;
    });
    let serve = UdpSocket::bind("127.0.0.1:0").unwrap();
    let serve_addr = serve.local_addr().unwrap();
    let guest = SocketAddrV4::new(GUEST_IP, 8053);
    assert!(h.shard.send(ShardMsg::ServeUdp {
        socket: serve,
        guest,
        tag: 9
    }));
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.send_to(b"a", serve_addr).unwrap();
    h.expect("a", |f| {
        parse_udp_to_guest(f).is_some_and(|(_, _, _, d)| d == b"a")
    });
    b.send_to(b"b", serve_addr).unwrap();
    wait_for(&mut h, "b dropped", |s| s.forward.reverse_dropped == 1);
    wait_for(&mut h, "a expired", |s| {
        s.forward.reverse_flows_expired == 1
    });
    b.send_to(b"b2", serve_addr).unwrap();
    h.expect("b2", |f| {
        parse_udp_to_guest(f).is_some_and(|(_, _, _, d)| d == b"b2")
    });
    let s = h.stats();
    assert_eq!(s.forward.reverse_flows_created, 2);
    assert_eq!(s.forward.reverse_flows_open, 1);
}

#[test]
fn close_tag_resets_connections_and_closes_sockets() {
    let mut h = sharded(|_| {});
    let (mut client, accepted) = tcp_pair();
    let (port, gseq, sseq) = open_into_guest(&mut h, OwnedFd::from(accepted), 7);
    // A unix stream client with the same tag, and one with another tag.
    let (mut ux, ux_ours) = UnixStream::pair().unwrap();
    let (mut other, other_ours) = UnixStream::pair().unwrap();
    let guest = SocketAddrV4::new(GUEST_IP, GUEST_PORT);
    for (fd, tag) in [(OwnedFd::from(ux_ours), 7), (OwnedFd::from(other_ours), 8)] {
        assert!(h.shard.send(ShardMsg::OpenTcp {
            host: fd,
            guest,
            tag
        }));
    }
    let serve = UdpSocket::bind("127.0.0.1:0").unwrap();
    let serve_addr = serve.local_addr().unwrap();
    assert!(h.shard.send(ShardMsg::ServeUdp {
        socket: serve,
        guest: SocketAddrV4::new(GUEST_IP, 8053),
        tag: 7
    }));
    let udp_client = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp_client.connect(serve_addr).unwrap();
    udp_client.set_read_timeout(Some(WAIT)).unwrap();
    udp_client.send(b"x").unwrap();
    h.expect("datagram", |f| {
        parse_udp_to_guest(f).is_some_and(|(_, _, _, d)| d == b"x")
    });
    wait_for(&mut h, "set up", |s| {
        s.tcp.flows_open == 3 && s.forward.reverse_flows_open == 1
    });
    h.collect(Duration::from_millis(50));
    h.pending.clear();

    assert!(h.shard.send(ShardMsg::CloseTag(7)));
    let f = h.expect("RST", |f| {
        parse_tcp(f).is_some_and(|(_, t)| t.src_port() == port && t.rst())
    });
    let (_, t) = parse_tcp(&f).unwrap();
    assert_eq!(t.seq_number(), sseq);
    assert!(!t.ack() || t.ack_number() == gseq);
    // The TCP client is reset; the unix client sees EOF; the other tag lives on.
    client.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 4];
    let r = client.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    ux.set_read_timeout(Some(WAIT)).unwrap();
    assert!(matches!(ux.read(&mut buf), Ok(0) | Err(_)));
    other
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let r = other.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "{r:?}"
    );
    // The serve socket is closed: the port refuses now.
    udp_client.send(b"y").unwrap();
    let r = udp_client.recv(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "{r:?}"
    );
    let s = h.stats();
    assert_eq!(s.forward.close_tag_msgs, 1);
    assert_eq!(s.forward.tag_closed_tcp, 2);
    assert_eq!(s.forward.tag_closed_udp, 1);
    assert_eq!(s.forward.tag_closed_serve_sockets, 1);
    assert_eq!(s.forward.serve_sockets_open, 0);
    assert_eq!(s.tcp.flows_open, 1);
    assert_eq!(s.udp.flows_open, 0);
}
