//! Server tests with client messages built from the RFC 2131 layout, shaped like the ones
//! busybox udhcpc and ISC dhclient send, and replies checked byte by byte.

use std::collections::BTreeSet;

use super::wire::{FIXED_LEN, MAGIC_COOKIE, OPTIONS_OFFSET};
use super::*;

const GW: Ipv4Addr = DEFAULT_GATEWAY_IP;
const GW_MAC: MacAddr = DEFAULT_GATEWAY_MAC;
const STATIC_MAC: MacAddr = DEFAULT_GUEST_MAC;
const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
const MAC_C: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0c]);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 127, last)
}

// ---------------------------------------------------------------- client messages

/// A client message and the frame around it.
#[derive(Clone, Debug)]
struct Msg {
    op: u8,
    htype: u8,
    hlen: u8,
    xid: u32,
    secs: u16,
    flags: u16,
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    chaddr: MacAddr,
    sname: [u8; 64],
    file: [u8; 128],
    cookie: [u8; 4],
    /// (code, data), written in order, then END, then padding to 300 bytes.
    options: Vec<(u8, Vec<u8>)>,
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    src_port: u16,
}

impl Msg {
    fn new(kind: MessageType, mac: MacAddr) -> Msg {
        Msg {
            op: 1,
            htype: 1,
            hlen: 6,
            xid: 0x3903_f326,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            sname: [0; 64],
            file: [0; 128],
            cookie: MAGIC_COOKIE,
            options: vec![(53, vec![kind as u8])],
            src_mac: mac,
            dst_mac: MacAddr::BROADCAST,
            src_ip: Ipv4Addr::UNSPECIFIED,
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: 68,
        }
    }

    fn opt(mut self, code: u8, data: &[u8]) -> Msg {
        self.options.push((code, data.to_vec()));
        self
    }

    fn requested(self, a: Ipv4Addr) -> Msg {
        self.opt(50, &a.octets())
    }

    fn server_id(self, a: Ipv4Addr) -> Msg {
        self.opt(54, &a.octets())
    }

    fn broadcast(mut self) -> Msg {
        self.flags = 0x8000;
        self
    }

    /// Sent from a configured address, unicast to the server (RENEWING, RELEASE, INFORM).
    fn sent_from(mut self, a: Ipv4Addr) -> Msg {
        self.ciaddr = a;
        self.src_ip = a;
        self.dst_ip = GW;
        self.dst_mac = GW_MAC;
        self
    }

    /// The DHCP message: RFC 2131 figure 1.
    fn dhcp_bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(300);
        m.extend_from_slice(&[self.op, self.htype, self.hlen, 0]);
        m.extend_from_slice(&self.xid.to_be_bytes());
        m.extend_from_slice(&self.secs.to_be_bytes());
        m.extend_from_slice(&self.flags.to_be_bytes());
        m.extend_from_slice(&self.ciaddr.octets());
        m.extend_from_slice(&[0; 4]); // yiaddr
        m.extend_from_slice(&[0; 4]); // siaddr
        m.extend_from_slice(&self.giaddr.octets());
        m.extend_from_slice(&self.chaddr.0);
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&self.sname);
        m.extend_from_slice(&self.file);
        assert_eq!(m.len(), FIXED_LEN);
        m.extend_from_slice(&self.cookie);
        for (code, data) in &self.options {
            m.push(*code);
            m.push(u8::try_from(data.len()).unwrap());
            m.extend_from_slice(data);
        }
        m.push(255);
        // Both clients pad to the 300-byte BOOTP minimum.
        m.resize(m.len().max(300), 0);
        m
    }

    fn frame(&self) -> Vec<u8> {
        self.frame_with(&self.dhcp_bytes())
    }

    fn frame_with(&self, payload: &[u8]) -> Vec<u8> {
        let at = UdpRepr::frame_payload_offset();
        let mut buf = vec![0u8; at + payload.len()];
        buf[at..].copy_from_slice(payload);
        let n = UdpRepr {
            src_port: self.src_port,
            dst_port: 67,
        }
        .emit_frame(
            &mut buf,
            &Ipv4FrameRepr {
                src_mac: self.src_mac,
                dst_mac: self.dst_mac,
                src_ip: self.src_ip,
                dst_ip: self.dst_ip,
                ttl: 64,
                ident: 0,
                dont_frag: false,
                dscp_ecn: 0x10,
            },
            payload.len(),
        )
        .unwrap();
        assert_eq!(n, buf.len());
        buf
    }
}

/// busybox udhcpc 1.35 (`udhcpc -f -q -i eth0`): client id 01+MAC, max size 576, vendor
/// class, its default parameter list; broadcast flag clear.
fn udhcpc(kind: MessageType, mac: MacAddr) -> Msg {
    let mut cid = vec![1u8];
    cid.extend_from_slice(&mac.0);
    Msg::new(kind, mac)
        .opt(61, &cid)
        .opt(57, &576u16.to_be_bytes())
        .opt(60, b"udhcp 1.35.0")
        .opt(55, &[1, 3, 6, 12, 15, 28, 42])
}

/// ISC dhclient 4.4: host name and a long parameter list, no client id, no option 57.
fn dhclient(kind: MessageType, mac: MacAddr) -> Msg {
    let mut m = Msg::new(kind, mac)
        .opt(12, b"guest")
        .opt(55, &[1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42]);
    m.secs = 3;
    m
}

// ---------------------------------------------------------------- replies

/// A reply frame taken apart (with checksums verified).
#[derive(Debug)]
struct Rx {
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    dhcp: Vec<u8>,
}

impl Rx {
    fn parse(frame: &[u8]) -> Rx {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.ethertype(), EtherType::IPV4);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.protocol(), IpProtocol::UDP);
        assert_eq!(ip.ttl(), 64);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(ip.src(), ip.dst()));
        assert_ne!(udp.checksum(), 0);
        Rx {
            dst_mac: eth.dst(),
            src_mac: eth.src(),
            src_ip: ip.src(),
            dst_ip: ip.dst(),
            src_port: udp.src_port(),
            dst_port: udp.dst_port(),
            dhcp: udp.payload().to_vec(),
        }
    }

    fn op(&self) -> u8 {
        self.dhcp[0]
    }
    fn xid(&self) -> u32 {
        u32::from_be_bytes(self.dhcp[4..8].try_into().unwrap())
    }
    fn flags(&self) -> u16 {
        u16::from_be_bytes([self.dhcp[10], self.dhcp[11]])
    }
    fn addr(&self, at: usize) -> Ipv4Addr {
        Ipv4Addr::new(
            self.dhcp[at],
            self.dhcp[at + 1],
            self.dhcp[at + 2],
            self.dhcp[at + 3],
        )
    }
    fn ciaddr(&self) -> Ipv4Addr {
        self.addr(12)
    }
    fn yiaddr(&self) -> Ipv4Addr {
        self.addr(16)
    }
    fn siaddr(&self) -> Ipv4Addr {
        self.addr(20)
    }
    fn giaddr(&self) -> Ipv4Addr {
        self.addr(24)
    }

    /// The option bytes from after the cookie to the end option, inclusive.
    fn option_bytes(&self) -> &[u8] {
        assert_eq!(&self.dhcp[FIXED_LEN..OPTIONS_OFFSET], &MAGIC_COOKIE);
        let opts = &self.dhcp[OPTIONS_OFFSET..];
        let mut i = 0;
        while opts[i] != 255 {
            i += 2 + usize::from(opts[i + 1]);
        }
        // Only zero padding after the end.
        assert!(opts[i + 1..].iter().all(|&b| b == 0));
        &opts[..=i]
    }

    /// Options as (code, data), in wire order.
    fn options(&self) -> Vec<(u8, Vec<u8>)> {
        let o = self.option_bytes();
        let mut v = Vec::new();
        let mut i = 0;
        while o[i] != 255 {
            let len = usize::from(o[i + 1]);
            v.push((o[i], o[i + 2..i + 2 + len].to_vec()));
            i += 2 + len;
        }
        v
    }

    fn option(&self, code: u8) -> Option<Vec<u8>> {
        self.options()
            .into_iter()
            .find(|(c, _)| *c == code)
            .map(|(_, d)| d)
    }

    fn message_type(&self) -> u8 {
        self.option(53).unwrap()[0]
    }
}

struct Harness {
    server: DhcpServer,
    now: Instant,
    t0: Instant,
    out: FrameBatch,
}

impl Harness {
    fn new(cfg: DhcpConfig) -> Harness {
        let now = Instant::now();
        Harness {
            server: DhcpServer::new(cfg),
            now,
            t0: now,
            out: FrameBatch::new(),
        }
    }

    fn default() -> Harness {
        Harness::new(DhcpConfig::default())
    }

    fn at(&mut self, secs: u64) {
        self.now = self.t0 + Duration::from_secs(secs);
    }

    /// One frame in; the outcome and the reply, if any (never more than one).
    fn send(&mut self, m: &Msg) -> (DhcpOutcome, Option<Rx>) {
        self.send_raw(&m.frame())
    }

    fn send_raw(&mut self, frame: &[u8]) -> (DhcpOutcome, Option<Rx>) {
        self.out.clear();
        let outcome = self.server.process_frame(frame, self.now, &mut self.out);
        assert!(self.out.len() <= 1);
        let rx = self.out.get(0).map(Rx::parse);
        if let Some(rx) = &rx {
            assert_eq!(rx.op(), 2);
            let gw = self.server.config().gateway_ip;
            assert_eq!((rx.src_mac, rx.src_ip, rx.src_port), (GW_MAC, gw, 67));
            assert_eq!(
                &rx.dhcp[28..34],
                &frame[UdpRepr::frame_payload_offset() + 28..][..6]
            );
        }
        (outcome, rx)
    }

    /// DISCOVER, OFFER, REQUEST, ACK; returns the leased address.
    fn dora(&mut self, mac: MacAddr) -> Ipv4Addr {
        let (o, offer) = self.send(&udhcpc(MessageType::Discover, mac));
        let offer = offer.unwrap_or_else(|| panic!("no offer for {mac}: {o:?}"));
        assert_eq!(offer.message_type(), 2);
        let a = offer.yiaddr();
        assert_eq!(o, DhcpOutcome::Offered(a));
        let (o, ack) = self.send(&udhcpc(MessageType::Request, mac).requested(a).server_id(GW));
        assert_eq!(o, DhcpOutcome::Acked(a));
        let ack = ack.unwrap();
        assert_eq!(ack.message_type(), 5);
        assert_eq!(ack.yiaddr(), a);
        a
    }

    fn discover(&mut self, mac: MacAddr) -> DhcpOutcome {
        self.send(&udhcpc(MessageType::Discover, mac)).0
    }

    fn counters_balance(&self) {
        let c = self.server.counters();
        let sum = c.offers
            + c.acks
            + c.inform_acks
            + c.naks
            + c.releases
            + c.declines
            + c.other_server
            + c.ignored
            + c.pool_exhausted
            + c.dropped_total();
        assert_eq!(c.frames, sum, "{c:?}");
    }
}

// ---------------------------------------------------------------- DORA

#[test]
fn static_mac_gets_its_address() {
    let mut h = Harness::default();
    let (o, offer) = h.send(&udhcpc(MessageType::Discover, STATIC_MAC));
    assert_eq!(o, DhcpOutcome::Offered(ip(2)));
    let offer = offer.unwrap();
    assert_eq!(offer.message_type(), 2);
    assert_eq!(offer.xid(), 0x3903_f326);
    assert_eq!(offer.yiaddr(), ip(2));
    assert_eq!(offer.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(offer.siaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(offer.giaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(offer.dhcp.len(), 300);
    assert!(
        offer.dhcp[44..236].iter().all(|&b| b == 0),
        "sname/file empty"
    );
    // Broadcast flag clear, no ciaddr: unicast to yiaddr at chaddr.
    assert_eq!(
        (offer.dst_mac, offer.dst_ip, offer.dst_port),
        (STATIC_MAC, ip(2), 68)
    );

    let (o, ack) = h.send(
        &udhcpc(MessageType::Request, STATIC_MAC)
            .requested(ip(2))
            .server_id(GW),
    );
    assert_eq!(o, DhcpOutcome::Acked(ip(2)));
    let ack = ack.unwrap();
    assert_eq!(ack.message_type(), 5);
    assert_eq!(ack.yiaddr(), ip(2));
    assert_eq!(h.server.leases(), vec![(GW, GW_MAC), (ip(2), STATIC_MAC)]);
    // The static address never shows up as a dynamic binding.
    assert_eq!(h.server.binding(ip(2)), None);
}

#[test]
fn other_macs_get_the_first_free_addresses() {
    let mut h = Harness::default();
    assert_eq!(h.dora(MAC_A), ip(3));
    assert_eq!(h.dora(MAC_B), ip(4));
    // DORA again: same addresses.
    assert_eq!(h.dora(MAC_A), ip(3));
    assert_eq!(h.dora(MAC_B), ip(4));
    assert_eq!(
        h.server.leases(),
        vec![
            (GW, GW_MAC),
            (ip(2), STATIC_MAC),
            (ip(3), MAC_A),
            (ip(4), MAC_B)
        ]
    );
    h.counters_balance();
}

#[test]
fn dhclient_exchange() {
    let mut h = Harness::default();
    let (o, offer) = h.send(&dhclient(MessageType::Discover, MAC_A));
    assert_eq!(o, DhcpOutcome::Offered(ip(3)));
    // No client id: none echoed.
    assert_eq!(offer.unwrap().option(61), None);
    let (o, _) = h.send(
        &dhclient(MessageType::Request, MAC_A)
            .server_id(GW)
            .requested(ip(3)),
    );
    assert_eq!(o, DhcpOutcome::Acked(ip(3)));
}

#[test]
fn never_leases_network_gateway_host_or_broadcast() {
    let mut h = Harness::default();
    let mut got = BTreeSet::new();
    for i in 0..251u32 {
        let [_, _, hi, lo] = i.to_be_bytes();
        let mac = MacAddr([0x02, 1, 0, 0, hi, lo]);
        let DhcpOutcome::Offered(a) = h.discover(mac) else {
            panic!("no offer for #{i}");
        };
        assert!(got.insert(a), "{a} offered twice");
    }
    let want: BTreeSet<Ipv4Addr> = (3..=253).map(ip).collect();
    assert_eq!(got, want);
    assert_eq!(h.discover(MAC_C), DhcpOutcome::PoolExhausted);
    assert_eq!(h.server.counters().pool_exhausted, 1);
    // The static client is not affected by the exhaustion.
    assert_eq!(h.discover(STATIC_MAC), DhcpOutcome::Offered(ip(2)));
    h.counters_balance();
}

#[test]
fn small_subnet_runs_out() {
    let gw = Ipv4Addr::new(10, 0, 0, 1);
    let mut h = Harness::new(DhcpConfig {
        gateway_ip: gw,
        subnet: Ipv4Addr::new(10, 0, 0, 0),
        prefix_len: 29,
        host_ip: Ipv4Addr::new(10, 0, 0, 6),
        dns: vec![gw],
        static_leases: vec![],
        ..DhcpConfig::default()
    });
    let macs: Vec<MacAddr> = (1..=5).map(|i| MacAddr([2, 0, 0, 0, 1, i])).collect();
    for (i, &mac) in macs[..4].iter().enumerate() {
        let (o, offer) = h.send(&udhcpc(MessageType::Discover, mac));
        let want = Ipv4Addr::new(10, 0, 0, 2 + u8::try_from(i).unwrap());
        assert_eq!(o, DhcpOutcome::Offered(want));
        let offer = offer.unwrap();
        assert_eq!(offer.option(1).unwrap(), vec![255, 255, 255, 248]);
        assert_eq!(offer.option(3).unwrap(), gw.octets().to_vec());
        let (o, _) = h.send(
            &udhcpc(MessageType::Request, mac)
                .requested(want)
                .server_id(gw),
        );
        assert_eq!(o, DhcpOutcome::Acked(want));
    }
    assert_eq!(h.discover(macs[4]), DhcpOutcome::PoolExhausted);
    assert_eq!(h.discover(macs[4]), DhcpOutcome::PoolExhausted);
    let c = h.server.counters();
    assert_eq!((c.offers, c.acks, c.pool_exhausted), (4, 4, 2));
    // When the leases run out, the one that expired first goes to the waiting client.
    h.at(3600);
    assert_eq!(
        h.discover(macs[4]),
        DhcpOutcome::Offered(Ipv4Addr::new(10, 0, 0, 2))
    );
    h.counters_balance();
}

// ---------------------------------------------------------------- option bytes

#[test]
fn offer_options_exact() {
    let mut h = Harness::new(DhcpConfig {
        search_domains: vec!["example.com".into(), "corp.example.org.".into()],
        domain_name: Some("example.com".into()),
        ..DhcpConfig::default()
    });
    let (_, offer) = h.send(&udhcpc(MessageType::Discover, MAC_A).opt(82, &[1, 2, 0x41, 0x42]));
    let offer = offer.unwrap();
    #[rustfmt::skip]
    let want: &[u8] = &[
        1, 4, 255, 255, 255, 0,                     // subnet mask
        3, 4, 192, 168, 127, 1,                     // router
        6, 4, 192, 168, 127, 1,                     // DNS
        15, 11, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'c', b'o', b'm',
        26, 2, 0x05, 0xdc,                          // MTU 1500
        51, 4, 0, 0, 0x0e, 0x10,                    // lease 3600 s
        53, 1, 2,                                   // DHCPOFFER
        54, 4, 192, 168, 127, 1,                    // server id
        61, 7, 1, 2, 0, 0, 0, 0, 0x0a,              // client id echoed
        82, 4, 1, 2, 0x41, 0x42,                    // relay agent info echoed
        119, 31,                                    // RFC 3397 search list
        7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0,
        4, b'c', b'o', b'r', b'p', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'o', b'r', b'g', 0,
        255,
    ];
    assert_eq!(offer.option_bytes(), want);
    // Sorted by code, as upstream.
    let codes: Vec<u8> = offer.options().iter().map(|(c, _)| *c).collect();
    let mut sorted = codes.clone();
    sorted.sort_unstable();
    assert_eq!(codes, sorted);
}

#[test]
fn upstream_option_set_without_search_domains() {
    let mut h = Harness::default();
    let (_, offer) = h.send(&dhclient(MessageType::Discover, MAC_A));
    #[rustfmt::skip]
    let want: &[u8] = &[
        1, 4, 255, 255, 255, 0,
        3, 4, 192, 168, 127, 1,
        6, 4, 192, 168, 127, 1,
        26, 2, 0x05, 0xdc,
        51, 4, 0, 0, 0x0e, 0x10,
        53, 1, 2,
        54, 4, 192, 168, 127, 1,
        255,
    ];
    assert_eq!(offer.unwrap().option_bytes(), want);
}

#[test]
fn configured_values_reach_the_options() {
    let mut h = Harness::new(DhcpConfig {
        dns: vec![ip(1), Ipv4Addr::new(1, 1, 1, 1)],
        mtu: 9000,
        lease_time: Duration::from_secs(120),
        ..DhcpConfig::default()
    });
    let (_, offer) = h.send(&udhcpc(MessageType::Discover, MAC_A));
    let offer = offer.unwrap();
    assert_eq!(offer.option(6).unwrap(), vec![192, 168, 127, 1, 1, 1, 1, 1]);
    assert_eq!(offer.option(26).unwrap(), 9000u16.to_be_bytes().to_vec());
    assert_eq!(offer.option(51).unwrap(), 120u32.to_be_bytes().to_vec());
    // No DNS servers, an MTU below 68: those options are not sent. A zero lease is one second.
    let mut h = Harness::new(DhcpConfig {
        dns: vec![],
        mtu: 0,
        lease_time: Duration::ZERO,
        ..DhcpConfig::default()
    });
    let (_, offer) = h.send(&udhcpc(MessageType::Discover, MAC_A));
    let offer = offer.unwrap();
    assert_eq!(offer.option(6), None);
    assert_eq!(offer.option(26), None);
    assert_eq!(offer.option(51).unwrap(), vec![0, 0, 0, 1]);
    // An endless lease is sent as the longest finite one.
    let mut h = Harness::new(DhcpConfig {
        lease_time: Duration::MAX,
        ..DhcpConfig::default()
    });
    let (_, offer) = h.send(&udhcpc(MessageType::Discover, MAC_A));
    assert_eq!(
        offer.unwrap().option(51).unwrap(),
        vec![0xff, 0xff, 0xff, 0xfe]
    );
    assert_eq!(h.dora(MAC_A), ip(3));
}

#[test]
fn long_search_list_respects_the_client_limit() {
    let domains: Vec<String> = (0..10)
        .map(|i| format!("department-{i:02}.example-corporation.internal"))
        .collect();
    let mut h = Harness::new(DhcpConfig {
        search_domains: domains.clone(),
        domain_name: Some("example-corporation.internal".into()),
        ..DhcpConfig::default()
    });
    let list_len = wire::encode_search_list(&domains).0.len();
    assert!(list_len > 255, "needs two pieces: {list_len}");
    // udhcpc says 576: the list does not fit, it is left out rather than overflowing.
    let (_, offer) = h.send(&udhcpc(MessageType::Discover, MAC_A));
    let offer = offer.unwrap();
    assert_eq!(offer.option(119), None);
    assert!(offer.option(15).is_some());
    assert!(offer.dhcp.len() + 28 <= 576);
    // A client that takes 1500 bytes gets it, split in two options (RFC 3396).
    let mut m = udhcpc(MessageType::Discover, MAC_A);
    for (code, data) in &mut m.options {
        if *code == 57 {
            *data = 1500u16.to_be_bytes().to_vec();
        }
    }
    let (_, offer) = h.send(&m);
    let offer = offer.unwrap();
    let pieces: Vec<Vec<u8>> = offer
        .options()
        .into_iter()
        .filter(|(c, _)| *c == 119)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(pieces.len(), 2);
    assert_eq!(pieces[0].len(), 255);
    assert_eq!(pieces.concat(), wire::encode_search_list(&domains).0);
}

#[test]
fn invalid_search_domains_are_skipped() {
    let mut h = Harness::new(DhcpConfig {
        search_domains: vec!["".into(), "ok.example".into(), "bad..name".into()],
        ..DhcpConfig::default()
    });
    let (_, offer) = h.send(&udhcpc(MessageType::Discover, MAC_A));
    assert_eq!(
        offer.unwrap().option(119).unwrap(),
        b"\x02ok\x07example\x00".to_vec()
    );
    // Only invalid ones: no option at all.
    let mut h = Harness::new(DhcpConfig {
        search_domains: vec![".".into()],
        ..DhcpConfig::default()
    });
    let (_, offer) = h.send(&udhcpc(MessageType::Discover, MAC_A));
    assert_eq!(offer.unwrap().option(119), None);
}

#[test]
fn nak_options_exact() {
    let mut h = Harness::default();
    let (o, nak) = h.send(
        &udhcpc(MessageType::Request, MAC_A)
            .requested(Ipv4Addr::new(10, 0, 0, 5))
            .server_id(GW),
    );
    assert_eq!(o, DhcpOutcome::Naked(NakReason::WrongNetwork));
    let nak = nak.unwrap();
    let msg = NakReason::WrongNetwork.message().as_bytes();
    let mut want = vec![
        53,
        1,
        6,
        54,
        4,
        192,
        168,
        127,
        1,
        56,
        u8::try_from(msg.len()).unwrap(),
    ];
    want.extend_from_slice(msg);
    want.extend_from_slice(&[61, 7, 1, 2, 0, 0, 0, 0, 0x0a, 255]);
    assert_eq!(nak.option_bytes(), &want[..]);
    assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(nak.ciaddr(), Ipv4Addr::UNSPECIFIED);
}

// ---------------------------------------------------------------- RFC 2131 §4.1 addressing

#[test]
fn reply_addressing() {
    let mut h = Harness::default();
    // Broadcast bit set: broadcast at both layers.
    let (_, r) = h.send(&udhcpc(MessageType::Discover, MAC_A).broadcast());
    let r = r.unwrap();
    assert_eq!(
        (r.dst_mac, r.dst_ip, r.dst_port),
        (MacAddr::BROADCAST, Ipv4Addr::BROADCAST, 68)
    );
    assert_eq!(r.flags(), 0x8000, "flags echoed");
    // Bit clear, no ciaddr: unicast to yiaddr at chaddr.
    let (_, r) = h.send(&udhcpc(MessageType::Discover, MAC_A));
    let r = r.unwrap();
    assert_eq!((r.dst_mac, r.dst_ip, r.dst_port), (MAC_A, ip(3), 68));
    assert_eq!(r.flags(), 0);
    let (_, r) = h.send(
        &udhcpc(MessageType::Request, MAC_A)
            .requested(ip(3))
            .server_id(GW)
            .broadcast(),
    );
    let r = r.unwrap();
    assert_eq!(
        (r.dst_mac, r.dst_ip),
        (MacAddr::BROADCAST, Ipv4Addr::BROADCAST)
    );
    // RENEWING: ciaddr set, unicast to ciaddr (even with the broadcast bit).
    let (o, r) = h.send(
        &udhcpc(MessageType::Request, MAC_A)
            .sent_from(ip(3))
            .broadcast(),
    );
    assert_eq!(o, DhcpOutcome::Acked(ip(3)));
    let r = r.unwrap();
    assert_eq!((r.dst_mac, r.dst_ip, r.dst_port), (MAC_A, ip(3), 68));
    assert_eq!(r.ciaddr(), ip(3), "ACK copies ciaddr");
    assert_eq!(r.yiaddr(), ip(3));
    // DHCPNAK: always broadcast, even to a client with an address.
    let (o, r) = h.send(&udhcpc(MessageType::Request, MAC_A).sent_from(ip(9)));
    assert_eq!(o, DhcpOutcome::Naked(NakReason::NotYours));
    let r = r.unwrap();
    assert_eq!(
        (r.dst_mac, r.dst_ip, r.dst_port),
        (MacAddr::BROADCAST, Ipv4Addr::BROADCAST, 68)
    );
    // A DISCOVER with a ciaddr that is nobody's address here: not unicast there.
    let mut m = udhcpc(MessageType::Discover, MAC_B);
    m.ciaddr = Ipv4Addr::new(8, 8, 8, 8);
    let (_, r) = h.send(&m);
    let r = r.unwrap();
    assert_eq!((r.dst_mac, r.dst_ip), (MAC_B, ip(4)));
}

#[test]
fn relayed_requests_are_answered_to_the_relay() {
    let mut h = Harness::default();
    let relay_mac = MacAddr([0x02, 0, 0, 0, 0, 0x99]);
    let mut m = udhcpc(MessageType::Discover, MAC_A);
    m.giaddr = ip(50);
    m.src_mac = relay_mac;
    m.src_ip = ip(50);
    m.src_port = 67;
    let (_, r) = h.send(&m);
    let r = r.unwrap();
    assert_eq!((r.dst_mac, r.dst_ip, r.dst_port), (relay_mac, ip(50), 67));
    assert_eq!(r.giaddr(), ip(50));
    // A NAK through a relay carries the broadcast bit.
    let mut m = udhcpc(MessageType::Request, MAC_A)
        .requested(ip(200))
        .server_id(GW);
    m.giaddr = ip(50);
    m.src_mac = relay_mac;
    let (o, r) = h.send(&m);
    assert_eq!(o, DhcpOutcome::Naked(NakReason::NotYours));
    let r = r.unwrap();
    assert_eq!((r.dst_ip, r.dst_port, r.flags()), (ip(50), 67, 0x8000));
}

// ---------------------------------------------------------------- REQUEST checks

#[test]
fn requests_for_addresses_that_are_not_the_clients_get_nak() {
    let mut h = Harness::default();
    assert_eq!(h.dora(MAC_A), ip(3));
    assert_eq!(h.discover(MAC_B), DhcpOutcome::Offered(ip(4)));
    let nak = |h: &mut Harness, m: Msg, reason| {
        let (o, r) = h.send(&m);
        assert_eq!(o, DhcpOutcome::Naked(reason), "{m:?}");
        assert_eq!(r.unwrap().message_type(), 6);
    };
    // SELECTING with another address than offered.
    nak(
        &mut h,
        udhcpc(MessageType::Request, MAC_B)
            .requested(ip(5))
            .server_id(GW),
        NakReason::NotYours,
    );
    // SELECTING for another client's address.
    nak(
        &mut h,
        udhcpc(MessageType::Request, MAC_B)
            .requested(ip(3))
            .server_id(GW),
        NakReason::NotYours,
    );
    // INIT-REBOOT (no server id) with another client's address, or the gateway's, the host
    // alias, the static lease, the broadcast address; another network.
    for a in [ip(3), ip(1), ip(254), ip(2), ip(255), ip(0)] {
        nak(
            &mut h,
            dhclient(MessageType::Request, MAC_C).requested(a),
            NakReason::NotYours,
        );
    }
    nak(
        &mut h,
        dhclient(MessageType::Request, MAC_C).requested(Ipv4Addr::new(10, 0, 2, 15)),
        NakReason::WrongNetwork,
    );
    // RENEWING with a ciaddr that is not the client's.
    nak(
        &mut h,
        dhclient(MessageType::Request, MAC_A).sent_from(ip(4)),
        NakReason::NotYours,
    );
    // The static client asking for another address.
    nak(
        &mut h,
        udhcpc(MessageType::Request, STATIC_MAC).requested(ip(7)),
        NakReason::NotYours,
    );
    nak(
        &mut h,
        udhcpc(MessageType::Request, STATIC_MAC).requested(Ipv4Addr::new(10, 1, 1, 1)),
        NakReason::WrongNetwork,
    );
    // Neither option 50 nor ciaddr.
    nak(
        &mut h,
        udhcpc(MessageType::Request, MAC_A),
        NakReason::NoAddress,
    );
    // None of this disturbed the leases.
    assert_eq!(h.dora(MAC_A), ip(3));
    assert_eq!(h.dora(MAC_B), ip(4));
    h.counters_balance();
}

#[test]
fn request_naming_another_server_withdraws_the_offer() {
    let mut h = Harness::default();
    assert_eq!(h.discover(MAC_A), DhcpOutcome::Offered(ip(3)));
    let (o, r) = h.send(
        &udhcpc(MessageType::Request, MAC_A)
            .requested(ip(3))
            .server_id(Ipv4Addr::new(192, 168, 127, 100)),
    );
    assert_eq!(o, DhcpOutcome::OtherServer);
    assert!(r.is_none());
    // The offer is gone: .3 goes to the next client.
    assert_eq!(h.discover(MAC_B), DhcpOutcome::Offered(ip(3)));
    assert_eq!(h.server.counters().other_server, 1);
}

#[test]
fn init_reboot_and_renew_without_a_record_are_acked() {
    // gvproxy restarted: the guest still has its address and asks for it again.
    let mut h = Harness::default();
    let (o, r) = h.send(&dhclient(MessageType::Request, MAC_A).requested(ip(77)));
    assert_eq!(o, DhcpOutcome::Acked(ip(77)));
    assert_eq!(r.unwrap().yiaddr(), ip(77));
    let (o, _) = h.send(&udhcpc(MessageType::Request, MAC_B).sent_from(ip(78)));
    assert_eq!(o, DhcpOutcome::Acked(ip(78)));
    assert!(h.server.leases().contains(&(ip(77), MAC_A)));
    assert!(h.server.leases().contains(&(ip(78), MAC_B)));
    // A renewal extends the lease.
    h.at(3000);
    let (o, _) = h.send(&udhcpc(MessageType::Request, MAC_B).sent_from(ip(78)));
    assert_eq!(o, DhcpOutcome::Acked(ip(78)));
    h.at(3700);
    h.server.expire(h.now);
    assert!(!h.server.leases().contains(&(ip(77), MAC_A)));
    assert!(h.server.leases().contains(&(ip(78), MAC_B)));
}

#[test]
fn discover_honours_a_free_requested_address() {
    let mut h = Harness::default();
    let (o, _) = h.send(&dhclient(MessageType::Discover, MAC_A).requested(ip(40)));
    assert_eq!(o, DhcpOutcome::Offered(ip(40)));
    // Not when it is taken, reserved or elsewhere.
    for a in [ip(40), ip(2), ip(254), ip(255), Ipv4Addr::new(10, 0, 0, 1)] {
        let (o, _) = h.send(&dhclient(MessageType::Discover, MAC_B).requested(a));
        assert_eq!(o, DhcpOutcome::Offered(ip(3)));
    }
}

// ---------------------------------------------------------------- RELEASE, DECLINE, INFORM

#[test]
fn release_frees_the_address() {
    let mut h = Harness::default();
    assert_eq!(h.dora(MAC_A), ip(3));
    assert_eq!(h.dora(MAC_B), ip(4));
    let release = |mac, a| udhcpc(MessageType::Release, mac).sent_from(a).server_id(GW);
    // Someone else's address, or one the client does not have: ignored.
    assert_eq!(h.send(&release(MAC_B, ip(3))).0, DhcpOutcome::Ignored);
    assert_eq!(h.send(&release(MAC_A, ip(9))).0, DhcpOutcome::Ignored);
    let (o, r) = h.send(&release(MAC_A, ip(3)));
    assert_eq!(o, DhcpOutcome::Released(ip(3)));
    assert!(r.is_none());
    assert_eq!(
        h.server.leases(),
        vec![(GW, GW_MAC), (ip(2), STATIC_MAC), (ip(4), MAC_B)]
    );
    // The same client gets the same (first free) address again.
    assert_eq!(h.dora(MAC_A), ip(3));
    // Released again, the first free address goes to a newcomer.
    assert_eq!(
        h.send(&release(MAC_A, ip(3))).0,
        DhcpOutcome::Released(ip(3))
    );
    assert_eq!(h.dora(MAC_C), ip(3));
    // ...and the first client moves on to the next free one.
    assert_eq!(h.dora(MAC_A), ip(5));
    // Releasing the static address is fine and changes nothing.
    assert_eq!(
        h.send(&release(STATIC_MAC, ip(2))).0,
        DhcpOutcome::Released(ip(2))
    );
    assert_eq!(h.dora(STATIC_MAC), ip(2));
    // A RELEASE to another server is not ours to act on.
    let m = udhcpc(MessageType::Release, MAC_C)
        .sent_from(ip(3))
        .server_id(ip(100));
    assert_eq!(h.send(&m).0, DhcpOutcome::OtherServer);
    assert!(h.server.leases().contains(&(ip(3), MAC_C)));
    h.counters_balance();
}

#[test]
fn declined_address_is_held_back() {
    let mut h = Harness::default();
    assert_eq!(h.dora(MAC_A), ip(3));
    let decline = |mac, a| udhcpc(MessageType::Decline, mac).requested(a).server_id(GW);
    // Only the client's own address can be declined.
    assert_eq!(h.send(&decline(MAC_B, ip(3))).0, DhcpOutcome::Ignored);
    assert_eq!(h.send(&decline(STATIC_MAC, ip(2))).0, DhcpOutcome::Ignored);
    let (o, r) = h.send(&decline(MAC_A, ip(3)));
    assert_eq!(o, DhcpOutcome::Declined(ip(3)));
    assert!(r.is_none());
    assert!(matches!(
        h.server.binding(ip(3)),
        Some((MAC_A, BindingState::Declined { .. }))
    ));
    // The client starts over and gets another address; so does everyone else.
    assert_eq!(h.dora(MAC_A), ip(4));
    assert_eq!(h.dora(MAC_B), ip(5));
    let (o, _) = h.send(&dhclient(MessageType::Request, MAC_C).requested(ip(3)));
    assert_eq!(o, DhcpOutcome::Naked(NakReason::NotYours));
    // After the hold, .3 is free again.
    h.at(600);
    assert_eq!(h.dora(MAC_C), ip(3));
    // A DECLINE without option 50 cannot say what it declines.
    let mut m = decline(MAC_C, ip(3));
    m.options.retain(|(c, _)| *c != 50);
    assert_eq!(h.send(&m).0, DhcpOutcome::Ignored);
    h.counters_balance();
}

#[test]
fn inform_gets_configuration_without_lease() {
    let mut h = Harness::new(DhcpConfig {
        search_domains: vec!["example.com".into()],
        ..DhcpConfig::default()
    });
    let (o, r) = h.send(&dhclient(MessageType::Inform, MAC_A).sent_from(ip(50)));
    assert_eq!(o, DhcpOutcome::Informed);
    let r = r.unwrap();
    assert_eq!(r.message_type(), 5);
    assert_eq!(r.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.ciaddr(), ip(50));
    assert_eq!((r.dst_mac, r.dst_ip, r.dst_port), (MAC_A, ip(50), 68));
    let codes: Vec<u8> = r.options().iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, vec![1, 3, 6, 26, 53, 54, 119]);
    // No lease was made.
    assert_eq!(h.server.binding(ip(50)), None);
    // ciaddr left empty: answered at the IP source.
    let mut m = dhclient(MessageType::Inform, MAC_A).sent_from(ip(51));
    m.ciaddr = Ipv4Addr::UNSPECIFIED;
    let (_, r) = h.send(&m);
    let r = r.unwrap();
    assert_eq!((r.dst_mac, r.dst_ip), (MAC_A, ip(51)));
    // ...and with no address at all, broadcast.
    let (_, r) = h.send(&dhclient(MessageType::Inform, MAC_A));
    assert_eq!(r.unwrap().dst_ip, Ipv4Addr::BROADCAST);
}

// ---------------------------------------------------------------- time

#[test]
fn offers_and_leases_expire() {
    let mut h = Harness::default();
    // An offer is held for 60 s.
    assert_eq!(h.discover(MAC_A), DhcpOutcome::Offered(ip(3)));
    h.at(59);
    assert_eq!(h.discover(MAC_B), DhcpOutcome::Offered(ip(4)));
    // MAC_A re-DISCOVERs within the hold: same address, hold restarted.
    assert_eq!(h.discover(MAC_A), DhcpOutcome::Offered(ip(3)));
    h.at(118);
    assert_eq!(h.discover(MAC_C), DhcpOutcome::Offered(ip(5)));
    // At 119 s both earlier offers ran out (at 120 s, the first free address is .3 again).
    h.at(119);
    h.server.expire(h.now);
    assert_eq!(h.server.binding(ip(3)), None);
    h.at(120);
    let d = MacAddr([2, 0, 0, 0, 0, 0xd]);
    assert_eq!(h.discover(d), DhcpOutcome::Offered(ip(3)));
    assert_eq!(h.server.binding(ip(4)), None);

    // A lease lasts lease_time from the ACK.
    let mut h = Harness::default();
    assert_eq!(h.dora(MAC_A), ip(3));
    h.at(3599);
    h.server.expire(h.now);
    assert!(h.server.leases().contains(&(ip(3), MAC_A)));
    assert_eq!(
        h.server.next_deadline(),
        Some(h.t0 + Duration::from_secs(3600))
    );
    h.at(3600);
    h.server.expire(h.now);
    assert!(!h.server.leases().contains(&(ip(3), MAC_A)));
    assert!(matches!(
        h.server.binding(ip(3)),
        Some((MAC_A, BindingState::Expired { .. }))
    ));
    // A client that quit after its lease (udhcpc -q) may still use the address: others get
    // fresh addresses first...
    assert_eq!(h.dora(MAC_B), ip(4));
    // ...while the client itself gets it back, by DISCOVER or by asking for it.
    let (o, _) = h.send(&udhcpc(MessageType::Request, MAC_A).sent_from(ip(3)));
    assert_eq!(o, DhcpOutcome::Acked(ip(3)));
    // A renewal moves the deadline.
    h.at(5000);
    let (o, _) = h.send(&udhcpc(MessageType::Request, MAC_A).sent_from(ip(3)));
    assert_eq!(o, DhcpOutcome::Acked(ip(3)));
    h.at(8599);
    h.server.expire(h.now);
    assert!(h.server.leases().contains(&(ip(3), MAC_A)));
    h.at(8600);
    h.server.expire(h.now);
    assert!(!h.server.leases().contains(&(ip(3), MAC_A)));
}

#[test]
fn renewal_floods_keep_state_bounded() {
    let mut h = Harness::default();
    assert_eq!(h.dora(MAC_A), ip(3));
    for i in 0..10_000u64 {
        h.now = h.t0 + Duration::from_millis(i);
        let (o, _) = h.send(&udhcpc(MessageType::Request, MAC_A).sent_from(ip(3)));
        assert_eq!(o, DhcpOutcome::Acked(ip(3)));
    }
    assert!(h.server.pool.deadlines_len() < 100);
    assert_eq!(h.server.pool.len(), 1);
}

// ---------------------------------------------------------------- malformed input

#[test]
fn unreadable_messages_are_dropped_and_counted() {
    let mut h = Harness::default();
    let base = udhcpc(MessageType::Discover, MAC_A);
    let cases: Vec<(Msg, DhcpDrop)> = vec![
        (
            {
                let mut m = base.clone();
                m.op = 2;
                m
            },
            DhcpDrop::NotRequest,
        ),
        (
            {
                let mut m = base.clone();
                m.htype = 6;
                m
            },
            DhcpDrop::UnsupportedHardware,
        ),
        (
            {
                let mut m = base.clone();
                m.hlen = 16;
                m
            },
            DhcpDrop::UnsupportedHardware,
        ),
        (
            {
                let mut m = base.clone();
                m.cookie = [99, 130, 83, 98];
                m
            },
            DhcpDrop::BadMagicCookie,
        ),
        (
            {
                let mut m = base.clone();
                m.options.remove(0);
                m
            },
            DhcpDrop::NoMessageType,
        ),
        (
            {
                let mut m = base.clone();
                m.options[0].1 = vec![2];
                m
            },
            DhcpDrop::UnexpectedMessageType,
        ),
        (
            {
                let mut m = base.clone();
                m.options[0].1 = vec![9];
                m
            },
            DhcpDrop::UnexpectedMessageType,
        ),
        (
            {
                let mut m = base.clone();
                m.chaddr = MacAddr::BROADCAST;
                m
            },
            DhcpDrop::BadClientAddress,
        ),
        (
            {
                let mut m = base.clone();
                m.chaddr = MacAddr::ZERO;
                m
            },
            DhcpDrop::BadClientAddress,
        ),
        (base.clone().opt(50, &[1, 2, 3]), DhcpDrop::BadOptions),
    ];
    for (m, reason) in &cases {
        let (o, r) = h.send(m);
        assert_eq!(o, DhcpOutcome::Dropped(*reason), "{m:?}");
        assert!(r.is_none());
    }
    // An option length running past the end of the datagram.
    let mut bytes = base.dhcp_bytes();
    bytes.truncate(OPTIONS_OFFSET + 3);
    bytes.extend_from_slice(&[12, 50, b'x']);
    assert_eq!(
        h.send_raw(&base.frame_with(&bytes)).0,
        DhcpOutcome::Dropped(DhcpDrop::BadOptions)
    );
    // Truncated message.
    let bytes = base.dhcp_bytes();
    assert_eq!(
        h.send_raw(&base.frame_with(&bytes[..239])).0,
        DhcpOutcome::Dropped(DhcpDrop::Truncated)
    );
    // Not UDP to 67 at all.
    let frame = base.frame();
    for bad in [&frame[..13], &frame[..30], &frame[..40]] {
        assert_eq!(h.send_raw(bad).0, DhcpOutcome::Dropped(DhcpDrop::NotDhcp));
    }
    let mut other_port = frame.clone();
    other_port[36..38].copy_from_slice(&53u16.to_be_bytes());
    assert_eq!(
        h.send_raw(&other_port).0,
        DhcpOutcome::Dropped(DhcpDrop::NotDhcp)
    );
    let c = h.server.counters();
    assert_eq!(c.dropped(DhcpDrop::UnsupportedHardware), 2);
    assert_eq!(c.dropped(DhcpDrop::BadOptions), 2);
    assert_eq!(c.dropped(DhcpDrop::NotDhcp), 4);
    assert_eq!(c.dropped_total(), c.frames);
    let names: Vec<&str> = c.iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"dhcp_bad_magic_cookie") && names.contains(&"dhcp_offers"));
    h.counters_balance();
}

#[test]
fn overloaded_options_are_read() {
    let mut h = Harness::default();
    // Message type and requested address in `file`, announced by option 52.
    let mut m = Msg::new(MessageType::Discover, MAC_A);
    m.options = vec![(52, vec![1])];
    m.file[..10].copy_from_slice(&[53, 1, 1, 50, 4, 192, 168, 127, 33, 255]);
    assert_eq!(h.send(&m).0, DhcpOutcome::Offered(ip(33)));
    m.file[9] = 12; // no end: a host name option running past the field
    m.file[10] = 200;
    assert_eq!(h.send(&m).0, DhcpOutcome::Dropped(DhcpDrop::BadOptions));
}

/// xorshift64*: a fixed, dependency-free random sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

#[test]
fn random_input_never_panics_and_every_frame_is_counted() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut h = Harness::new(DhcpConfig {
        prefix_len: 28,
        subnet: Ipv4Addr::new(192, 168, 127, 0),
        search_domains: vec!["example.com".into()],
        domain_name: Some("example.com".into()),
        ..DhcpConfig::default()
    });
    let kinds = [
        MessageType::Discover,
        MessageType::Request,
        MessageType::Release,
        MessageType::Decline,
        MessageType::Inform,
    ];
    let frames = 60_000u64;
    let mut replies = 0u64;
    for i in 0..frames {
        h.now = h.t0 + Duration::from_millis(i * 50);
        let mac = MacAddr([2, 0, 0, 0, 0, rng.byte() % 24]);
        let mut m = udhcpc(kinds[rng.below(kinds.len())], mac);
        if rng.below(2) == 0 {
            m = m.requested(ip(rng.byte() % 20));
        }
        if rng.below(3) == 0 {
            m = m.server_id(if rng.below(4) == 0 { ip(9) } else { GW });
        }
        if rng.below(4) == 0 {
            m.ciaddr = ip(rng.byte() % 20);
        }
        if rng.below(5) == 0 {
            m = m.broadcast();
        }
        let mut frame = m.frame();
        match rng.below(4) {
            // A valid message.
            0 => {}
            // Random bytes over the DHCP payload (checksum recomputed: the gateway passed it).
            1 => {
                let mut payload = m.dhcp_bytes();
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(payload.len());
                    payload[at] = rng.byte();
                }
                if rng.below(3) == 0 {
                    payload.truncate(rng.below(payload.len()));
                }
                frame = m.frame_with(&payload);
            }
            // Random option soup after the cookie.
            2 => {
                let mut payload = m.dhcp_bytes();
                payload.truncate(OPTIONS_OFFSET);
                let n = rng.below(80);
                payload.extend((0..n).map(|_| rng.byte()));
                if rng.below(2) == 0 {
                    // A message type at the front so that the rest is exercised.
                    payload.splice(OPTIONS_OFFSET..OPTIONS_OFFSET, [53, 1, 1 + rng.byte() % 8]);
                }
                frame = m.frame_with(&payload);
            }
            // Anything at all.
            _ => {
                let n = rng.below(400);
                frame = (0..n).map(|_| rng.byte()).collect();
            }
        }
        h.out.clear();
        let _ = h.server.process_frame(&frame, h.now, &mut h.out);
        assert!(h.out.len() <= 1);
        for f in h.out.iter() {
            Rx::parse(f);
            replies += 1;
        }
    }
    let c = h.server.counters();
    assert_eq!(c.frames, frames);
    assert_eq!(c.offers + c.acks + c.inform_acks + c.naks, replies);
    h.counters_balance();
    assert!(
        c.offers > 500 && c.acks > 20 && c.naks > 500 && c.dropped_total() > 1000,
        "{c:?}"
    );
    // The pool stayed consistent: no address leased twice, none outside the range.
    let leases = h.server.leases();
    let addrs: BTreeSet<Ipv4Addr> = leases.iter().map(|&(a, _)| a).collect();
    assert_eq!(addrs.len(), leases.len());
    for (a, mac) in leases {
        assert!(
            a == GW || a == ip(2) || (3..=14).contains(&a.octets()[3]),
            "{a} {mac}"
        );
    }
}

// ---------------------------------------------------------------- cross-check

#[test]
fn etherparse_reads_our_replies() {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let mut h = Harness::new(DhcpConfig {
        search_domains: vec!["example.com".into()],
        ..DhcpConfig::default()
    });
    for m in [
        udhcpc(MessageType::Discover, MAC_A).broadcast(),
        udhcpc(MessageType::Discover, MAC_A),
        udhcpc(MessageType::Request, MAC_A)
            .requested(ip(3))
            .server_id(GW),
        udhcpc(MessageType::Request, MAC_A)
            .requested(ip(9))
            .server_id(GW),
    ] {
        h.out.clear();
        h.server.process_frame(&m.frame(), h.now, &mut h.out);
        let frame = h.out.get(0).unwrap();
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(NetSlice::Ipv4(ipv4)) = &p.net else {
            panic!("not IPv4")
        };
        let hdr = ipv4.header();
        assert_eq!(hdr.source_addr(), GW);
        assert_eq!(
            hdr.to_header().calc_header_checksum(),
            hdr.header_checksum()
        );
        let Some(TransportSlice::Udp(udp)) = &p.transport else {
            panic!("not UDP")
        };
        assert_eq!((udp.source_port(), udp.destination_port()), (67, 68));
        let want = udp
            .to_header()
            .calc_checksum_ipv4(&hdr.to_header(), udp.payload())
            .unwrap();
        assert_eq!(udp.checksum(), want);
        assert_eq!(usize::from(udp.length()), 8 + udp.payload().len());
        assert_eq!(usize::from(hdr.total_len()), frame.len() - 14);
        // And the DHCP message through our own reader, as a client's view of it.
        let mut reply = udp.payload().to_vec();
        reply[0] = 1; // pretend it is a request so that DhcpMessage accepts it
        let d = DhcpMessage::parse(&reply).unwrap();
        assert!(matches!(
            d.message_type,
            Some(MessageType::Offer | MessageType::Ack | MessageType::Nak)
        ));
        assert_eq!(d.xid, m.xid);
        assert_eq!(d.chaddr, MAC_A);
    }
}

#[test]
fn config_guards() {
    // A static lease on the gateway or host address, or for a group MAC, is ignored.
    let h = Harness::new(DhcpConfig {
        static_leases: vec![
            (GW, MAC_A),
            (ip(254), MAC_B),
            (ip(9), MacAddr::BROADCAST),
            (ip(10), MAC_C),
        ],
        ..DhcpConfig::default()
    });
    assert_eq!(h.server.leases(), vec![(GW, GW_MAC), (ip(10), MAC_C)]);
    // Prefix lengths that leave no dynamic addresses: only static leases work, nothing panics.
    for prefix_len in [31, 32, 40] {
        let mut h = Harness::new(DhcpConfig {
            prefix_len,
            ..DhcpConfig::default()
        });
        assert_eq!(h.discover(MAC_A), DhcpOutcome::PoolExhausted);
        assert_eq!(h.discover(STATIC_MAC), DhcpOutcome::Offered(ip(2)));
        let (o, _) = h.send(&dhclient(MessageType::Request, MAC_A).requested(ip(3)));
        assert_eq!(o, DhcpOutcome::Naked(NakReason::WrongNetwork));
    }
    // A /0 pool does not try to walk four billion addresses.
    let mut h = Harness::new(DhcpConfig {
        prefix_len: 0,
        ..DhcpConfig::default()
    });
    assert_eq!(
        h.discover(MAC_A),
        DhcpOutcome::Offered(Ipv4Addr::new(0, 0, 0, 1))
    );
}
