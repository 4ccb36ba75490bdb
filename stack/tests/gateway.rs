//! The gateway, frame in and reply (or verdict) out, with hand-built frames.

// Test code: a failed unwrap is a failed test; casts are of small random values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use common::*;
use stack::wire::{
    ArpOperation, ArpPacket, EtherType, EthernetFrame, Icmpv4Packet, Icmpv4Repr, Icmpv4Type,
    IpProtocol, Ipv4Packet, MacAddr, TcpFlags,
};
use stack::{DropReason, FrameBatch, Gateway, GatewayConfig, Verdict};
use std::net::Ipv4Addr;

fn gw() -> Gateway {
    Gateway::new(GatewayConfig::default())
}

/// Run one frame; assert the drop bookkeeping matches the verdict.
fn run(g: &mut Gateway, frame: &[u8]) -> (Verdict, FrameBatch) {
    let mut out = FrameBatch::new();
    let before = g.drops().clone();
    let v = g.process_frame(frame, &mut out);
    match v {
        Verdict::Dropped(r) => {
            assert_eq!(g.drops().total(), before.total() + 1);
            assert_eq!(g.drops().get(r), before.get(r) + 1);
            assert!(out.is_empty());
        }
        Verdict::Handled | Verdict::Transport => assert_eq!(g.drops(), &before),
    }
    (v, out)
}

fn dropped(frame: &[u8]) -> DropReason {
    match run(&mut gw(), frame).0 {
        Verdict::Dropped(r) => r,
        v => panic!("expected a drop, got {v:?}"),
    }
}

#[test]
fn defaults_are_upstreams() {
    let c = GatewayConfig::default();
    assert_eq!(c.mac.to_string(), "5a:94:ef:e4:0c:dd");
    assert_eq!(c.ip, GW_IP);
    assert_eq!(c.prefix_len, 24);
    assert_eq!(c.virtual_ips, vec![HOST_IP]);
    assert_eq!(c.mtu, 1500);
    let g = gw();
    assert!(g.is_gateway_ip(GW_IP));
    assert!(g.is_gateway_ip(HOST_IP));
    assert!(!g.is_gateway_ip(GUEST_IP));
}

fn check_arp_reply(out: &FrameBatch, asked: Ipv4Addr, to_ip: Ipv4Addr) {
    assert_eq!(out.len(), 1);
    let b = out.get(0).unwrap();
    assert_eq!(b.len(), 42);
    // Field by field, straight from the bytes.
    assert_eq!(&b[0..6], &GUEST_MAC.0, "eth dst = requester");
    assert_eq!(&b[6..12], &GW_MAC.0, "eth src = gateway");
    assert_eq!(&b[12..14], &[0x08, 0x06], "ethertype ARP");
    assert_eq!(&b[14..16], &[0, 1], "htype Ethernet");
    assert_eq!(&b[16..18], &[0x08, 0x00], "ptype IPv4");
    assert_eq!((b[18], b[19]), (6, 4), "hlen, plen");
    assert_eq!(&b[20..22], &[0, 2], "op reply");
    assert_eq!(&b[22..28], &GW_MAC.0, "sha");
    assert_eq!(&b[28..32], &asked.octets(), "spa = the address asked for");
    assert_eq!(&b[32..38], &GUEST_MAC.0, "tha");
    assert_eq!(&b[38..42], &to_ip.octets(), "tpa");
    // And through etherparse.
    let s = etherparse::SlicedPacket::from_ethernet(b).unwrap();
    match s.net {
        Some(etherparse::NetSlice::Arp(a)) => {
            assert_eq!(a.operation(), etherparse::ArpOperation::REPLY);
            assert_eq!(a.sender_protocol_addr(), &asked.octets());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn arp_for_gateway_and_virtual_ip_answered() {
    let mut g = gw();
    for ip in [GW_IP, HOST_IP] {
        let (v, out) = run(&mut g, &arp_request(ip));
        assert_eq!(v, Verdict::Handled);
        check_arp_reply(&out, ip, GUEST_IP);
    }
    assert_eq!(g.counters().arp_replies, 2);
    // Unicast (a cache refresh) and Ethernet-padded requests too.
    let mut f = arp(ArpOperation::REQUEST, GW_MAC, GUEST_IP, GW_IP);
    f.resize(60, 0);
    let (v, out) = run(&mut g, &f);
    assert_eq!(v, Verdict::Handled);
    check_arp_reply(&out, GW_IP, GUEST_IP);
}

#[test]
fn arp_probe_answered_rfc5227() {
    let mut g = gw();
    let f = arp(
        ArpOperation::REQUEST,
        MacAddr::BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        GW_IP,
    );
    let (v, out) = run(&mut g, &f);
    assert_eq!(v, Verdict::Handled);
    check_arp_reply(&out, GW_IP, Ipv4Addr::UNSPECIFIED);
}

#[test]
fn arp_for_other_addresses_not_answered() {
    for ip in [
        Ipv4Addr::new(192, 168, 127, 77),
        GUEST_IP,
        Ipv4Addr::new(192, 168, 127, 255),
        Ipv4Addr::new(8, 8, 8, 8),
    ] {
        let f = arp(
            ArpOperation::REQUEST,
            MacAddr::BROADCAST,
            Ipv4Addr::new(192, 168, 127, 3),
            ip,
        );
        assert_eq!(dropped(&f), DropReason::ArpNotForUs, "{ip}");
    }
}

#[test]
fn gratuitous_arp_ignored() {
    // Announcement of the guest's own address, as a request and as a reply.
    let f = arp(
        ArpOperation::REQUEST,
        MacAddr::BROADCAST,
        GUEST_IP,
        GUEST_IP,
    );
    assert_eq!(dropped(&f), DropReason::ArpGratuitous);
    let f = arp(ArpOperation::REPLY, MacAddr::BROADCAST, GUEST_IP, GUEST_IP);
    assert_eq!(dropped(&f), DropReason::ArpUnsupportedOp);
    // Even one claiming the gateway's address: nothing is learned, nothing sent.
    let f = arp(ArpOperation::REQUEST, MacAddr::BROADCAST, GW_IP, GW_IP);
    assert_eq!(dropped(&f), DropReason::ArpGratuitous);
}

#[test]
fn arp_malformed_and_other_ops() {
    let f = arp(ArpOperation::REPLY, GW_MAC, GUEST_IP, GW_IP);
    assert_eq!(dropped(&f), DropReason::ArpUnsupportedOp);
    let f = arp(3, GW_MAC, GUEST_IP, GW_IP);
    assert_eq!(dropped(&f), DropReason::ArpUnsupportedOp);
    let mut f = arp_request(GW_IP);
    f[14 + 1] = 6; // htype 6 (IEEE 802)
    assert_eq!(dropped(&f), DropReason::ArpMalformed);
    let mut f = arp_request(GW_IP);
    f[14 + 5] = 16; // plen 16
    assert_eq!(dropped(&f), DropReason::ArpMalformed);
    let f = arp_request(GW_IP);
    assert_eq!(dropped(&f[..41]), DropReason::ArpMalformed);
    let mut f = arp_request(GW_IP);
    f[22] |= 1; // multicast sender hardware address
    assert_eq!(dropped(&f), DropReason::ArpMalformed);
}

fn check_echo_reply(out: &FrameBatch, from: Ipv4Addr, ident: u16, seq: u16, data: &[u8]) -> u16 {
    assert_eq!(out.len(), 1);
    let b = out.get(0).unwrap();
    let eth = EthernetFrame::new_checked(b).unwrap();
    assert_eq!(eth.dst(), GUEST_MAC);
    assert_eq!(eth.src(), GW_MAC);
    assert_eq!(eth.ethertype(), EtherType::IPV4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.header_len(), 20);
    assert_eq!(ip.total_len(), b.len() - 14, "no padding in replies");
    assert_eq!(ip.src(), from);
    assert_eq!(ip.dst(), GUEST_IP);
    assert_eq!(ip.ttl(), 64);
    assert_eq!(ip.protocol(), IpProtocol::ICMP);
    assert!(!ip.is_fragment());
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.msg_type(), Icmpv4Type::ECHO_REPLY);
    assert_eq!(icmp.code(), 0);
    assert_eq!(icmp.echo_ident(), ident);
    assert_eq!(icmp.echo_seq_no(), seq);
    assert_eq!(icmp.data(), data);
    // etherparse agrees the checksums are right.
    let s = etherparse::SlicedPacket::from_ethernet(b).unwrap();
    match s.transport {
        Some(etherparse::TransportSlice::Icmpv4(i)) => {
            assert_eq!(i.checksum(), i.icmp_type().calc_checksum(i.payload()));
        }
        other => panic!("{other:?}"),
    }
    ip.ident()
}

#[test]
fn echo_to_gateway_and_virtual_ip_answered() {
    let mut g = gw();
    let data: Vec<u8> = (0..56).collect();
    let (v, out) = run(&mut g, &echo_request(GW_IP, 0x1c46, 1, &data));
    assert_eq!(v, Verdict::Handled);
    let id1 = check_echo_reply(&out, GW_IP, 0x1c46, 1, &data);
    let (v, out) = run(&mut g, &echo_request(GW_IP, 7, 65535, b""));
    assert_eq!(v, Verdict::Handled);
    let id2 = check_echo_reply(&out, GW_IP, 7, 65535, b"");
    assert_eq!(id2, id1.wrapping_add(1), "IP ident from a counter");
    assert_eq!(g.counters().echo_replies, 2);
    // The host alias is NATed to 127.0.0.1: the NAT forwards its echo, the host answers.
    let (v, out) = run(&mut g, &echo_request(HOST_IP, 7, 1, b""));
    assert_eq!(v, Verdict::Transport);
    assert!(out.is_empty());
    // A virtual IP that is not NATed is answered here.
    let mut g = Gateway::new(GatewayConfig {
        nat_ips: vec![],
        ..GatewayConfig::default()
    });
    let (v, out) = run(&mut g, &echo_request(HOST_IP, 7, 65535, b""));
    assert_eq!(v, Verdict::Handled);
    check_echo_reply(&out, HOST_IP, 7, 65535, b"");
}

#[test]
fn echo_big_and_padded() {
    let mut g = gw();
    // Jumbo echo (MTU 65520 links).
    let data = vec![0xa5u8; 65_000];
    let (v, out) = run(&mut g, &echo_request(GW_IP, 1, 2, &data));
    assert_eq!(v, Verdict::Handled);
    check_echo_reply(&out, GW_IP, 1, 2, &data);
    // A tiny echo padded to the Ethernet minimum: the padding is not echoed.
    let mut f = echo_request(GW_IP, 3, 4, b"ab");
    f.resize(60, 0xee);
    let (v, out) = run(&mut g, &f);
    assert_eq!(v, Verdict::Handled);
    check_echo_reply(&out, GW_IP, 3, 4, b"ab");
}

#[test]
fn echo_with_ip_options_answered() {
    // 24-byte header with a NOP NOP NOP EOL option area.
    let mut f = echo_request(GW_IP, 9, 9, b"opt");
    f.splice(34..34, [1u8, 1, 1, 0]);
    f[14] = 0x46;
    let total = u16::from_be_bytes([f[16], f[17]]) + 4;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    refill_ip_checksum(&mut f);
    let (v, out) = run(&mut gw(), &f);
    assert_eq!(v, Verdict::Handled);
    check_echo_reply(&out, GW_IP, 9, 9, b"opt");
}

#[test]
fn echo_with_bad_checksums_dropped_and_counted() {
    let mut g = gw();
    let mut f = echo_request(GW_IP, 1, 1, b"x");
    f[14 + 10] ^= 0xff;
    let (v, _) = run(&mut g, &f);
    assert_eq!(v, Verdict::Dropped(DropReason::Ipv4BadChecksum));
    let mut f = echo_request(GW_IP, 1, 1, b"x");
    f[34 + 2] ^= 0xff;
    let (v, _) = run(&mut g, &f);
    assert_eq!(v, Verdict::Dropped(DropReason::IcmpBadChecksum));
    assert_eq!(g.drops().get(DropReason::Ipv4BadChecksum), 1);
    assert_eq!(g.drops().get(DropReason::IcmpBadChecksum), 1);
    assert_eq!(g.counters().dropped, 2);
    assert_eq!(g.counters().echo_replies, 0);
}

#[test]
fn fragments_counted() {
    let mut g = gw();
    for (flags_hi, off_lo) in [(0x20u8, 0u8), (0x00, 0x10), (0x20, 0x01)] {
        let mut f = echo_request(GW_IP, 1, 1, b"frag");
        f[14 + 6] = flags_hi;
        f[14 + 7] = off_lo;
        refill_ip_checksum(&mut f);
        let (v, _) = run(&mut g, &f);
        assert_eq!(v, Verdict::Dropped(DropReason::Ipv4Fragment));
    }
    assert_eq!(g.drops().get(DropReason::Ipv4Fragment), 3);
}

#[test]
fn icmp_other_types_to_gateway_dropped() {
    let orig = tcp_syn(REMOTE_IP, 80);
    for repr in [
        Icmpv4Repr::EchoReply {
            ident: 1,
            seq_no: 1,
            data: b"",
        },
        Icmpv4Repr::dst_unreachable(3, &orig[14..]).unwrap(),
        Icmpv4Repr::time_exceeded(&orig[14..]).unwrap(),
    ] {
        assert_eq!(
            dropped(&icmp_to(GW_IP, repr)),
            DropReason::IcmpUnsupportedType
        );
        assert_eq!(
            dropped(&icmp_to(HOST_IP, repr)),
            DropReason::IcmpUnsupportedType
        );
        // The same to elsewhere is the NAT's to judge.
        assert_eq!(
            run(&mut gw(), &icmp_to(REMOTE_IP, repr)).0,
            Verdict::Transport
        );
    }
    // Timestamp request (type 13): an 8-byte header is enough to be well formed.
    let mut raw = [
        13u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let mut p = Icmpv4Packet::new_checked(&mut raw[..]).unwrap();
    p.fill_checksum();
    assert_eq!(
        dropped(&ipv4_raw(GW_IP, IpProtocol::ICMP, &raw)),
        DropReason::IcmpUnsupportedType
    );
    // Echo with a non-zero code is not an echo request (RFC 792: code 0).
    let mut f = echo_request(GW_IP, 1, 1, b"");
    f[35] = 1;
    let mut p = Icmpv4Packet::new_checked(&mut f[34..]).unwrap();
    p.fill_checksum();
    assert_eq!(dropped(&f), DropReason::IcmpUnsupportedType);
    // Shorter than an ICMP header.
    assert_eq!(
        dropped(&ipv4_raw(GW_IP, IpProtocol::ICMP, &[8, 0, 0xf7])),
        DropReason::IcmpMalformed
    );
}

#[test]
fn transport_verdicts() {
    let mut g = gw();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("syn to the internet", tcp_syn(REMOTE_IP, 443)),
        ("syn to the host alias", tcp_syn(HOST_IP, 22)),
        ("syn to the API", tcp_syn(GW_IP, 80)),
        (
            "data to the internet",
            tcp(
                GW_MAC,
                REMOTE_IP,
                443,
                TcpFlags::ACK | TcpFlags::PSH,
                b"hello",
            ),
        ),
        (
            "DNS to the gateway",
            udp(GW_MAC, GUEST_IP, GW_IP, 53, b"query"),
        ),
        (
            "UDP to the internet",
            udp(GW_MAC, GUEST_IP, REMOTE_IP, 123, b"ntp"),
        ),
        ("DHCP discover", dhcp_discover()),
        (
            "UDP to the subnet broadcast",
            udp(
                MacAddr::BROADCAST,
                GUEST_IP,
                Ipv4Addr::new(192, 168, 127, 255),
                137,
                b"",
            ),
        ),
        ("ping to the internet", echo_request(REMOTE_IP, 1, 1, b"p")),
    ];
    for (name, f) in &cases {
        let (v, out) = run(&mut g, f);
        assert_eq!(v, Verdict::Transport, "{name}");
        assert!(out.is_empty(), "{name}");
    }
    assert_eq!(g.counters().transport, cases.len() as u64);
    assert_eq!(g.counters().frames, cases.len() as u64);
}

#[test]
fn etherparse_built_frames_accepted() {
    let mut g = gw();
    let b = etherparse::PacketBuilder::ethernet2(GUEST_MAC.0, GW_MAC.0)
        .ipv4(GUEST_IP.octets(), REMOTE_IP.octets(), 64)
        .tcp(41000, 443, 12345, 64240)
        .syn()
        .options(&[
            etherparse::TcpOptionElement::MaximumSegmentSize(1460),
            etherparse::TcpOptionElement::SelectiveAcknowledgementPermitted,
            etherparse::TcpOptionElement::Timestamp(1, 0),
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::WindowScale(7),
        ])
        .unwrap();
    let mut f = Vec::new();
    b.write(&mut f, &[]).unwrap();
    assert_eq!(run(&mut g, &f).0, Verdict::Transport);

    let b = etherparse::PacketBuilder::ethernet2(GUEST_MAC.0, GW_MAC.0)
        .ipv4(GUEST_IP.octets(), GW_IP.octets(), 64)
        .icmpv4_echo_request(0x77, 3);
    let mut f = Vec::new();
    b.write(&mut f, b"etherparse").unwrap();
    let (v, out) = run(&mut g, &f);
    assert_eq!(v, Verdict::Handled);
    check_echo_reply(&out, GW_IP, 0x77, 3, b"etherparse");

    let b = etherparse::PacketBuilder::ethernet2(GUEST_MAC.0, GW_MAC.0)
        .ipv4(GUEST_IP.octets(), GW_IP.octets(), 64)
        .udp(5353, 53);
    let mut f = Vec::new();
    b.write(&mut f, b"dns").unwrap();
    assert_eq!(run(&mut g, &f).0, Verdict::Transport);
}

#[test]
fn broadcast_and_multicast_rules() {
    let mdns = Ipv4Addr::new(224, 0, 0, 251);
    let mdns_mac = MacAddr([0x01, 0, 0x5e, 0, 0, 0xfb]);
    assert_eq!(
        dropped(&udp(mdns_mac, GUEST_IP, mdns, 5353, b"")),
        DropReason::Ipv4NotForGateway
    );
    assert_eq!(
        dropped(&tcp(
            MacAddr::BROADCAST,
            Ipv4Addr::new(192, 168, 127, 255),
            80,
            TcpFlags::SYN,
            b""
        )),
        DropReason::Ipv4NotForGateway
    );
    assert_eq!(
        dropped(&tcp(
            MacAddr::BROADCAST,
            Ipv4Addr::BROADCAST,
            80,
            TcpFlags::SYN,
            b""
        )),
        DropReason::Ipv4NotForGateway
    );
    // Ping to broadcast: ignored like Linux's icmp_echo_ignore_broadcasts.
    let mut f = echo_request(Ipv4Addr::BROADCAST, 1, 1, b"");
    f[..6].copy_from_slice(&[0xff; 6]);
    assert_eq!(dropped(&f), DropReason::Ipv4NotForGateway);
    // Unicast IP inside a link-layer broadcast (RFC 1122 §3.3.6).
    assert_eq!(
        dropped(&udp(MacAddr::BROADCAST, GUEST_IP, GW_IP, 53, b"")),
        DropReason::Ipv4NotForGateway
    );
    let mut f = echo_request(GW_IP, 1, 1, b"");
    f[..6].copy_from_slice(&[0xff; 6]);
    assert_eq!(dropped(&f), DropReason::Ipv4NotForGateway);
}

#[test]
fn l4_errors_counted() {
    let mut f = tcp_syn(REMOTE_IP, 80);
    let last = f.len() - 1;
    f[last] ^= 0x55; // inside the options: checksum breaks
    assert_eq!(dropped(&f), DropReason::TcpBadChecksum);
    let mut f = tcp_syn(REMOTE_IP, 80);
    f[34 + 20] = 2;
    f[34 + 21] = 0; // MSS with length 0
    assert_eq!(dropped(&f), DropReason::TcpMalformed);
    let mut f = tcp_syn(REMOTE_IP, 80);
    f[34 + 12] = 0x40; // data offset 4
    assert_eq!(dropped(&f), DropReason::TcpMalformed);
    assert_eq!(
        dropped(&ipv4_raw(REMOTE_IP, IpProtocol::TCP, &[0; 19])),
        DropReason::TcpMalformed
    );

    let mut f = udp(GW_MAC, GUEST_IP, GW_IP, 53, b"query");
    f[34 + 8] ^= 1;
    assert_eq!(dropped(&f), DropReason::UdpBadChecksum);
    let mut f = udp(GW_MAC, GUEST_IP, GW_IP, 53, b"query");
    f[34 + 4..34 + 6].copy_from_slice(&100u16.to_be_bytes());
    assert_eq!(dropped(&f), DropReason::UdpMalformed);
    assert_eq!(
        dropped(&ipv4_raw(GW_IP, IpProtocol::UDP, &[0; 7])),
        DropReason::UdpMalformed
    );
    // A zero UDP checksum means "none" (RFC 768) and passes.
    let mut f = udp(GW_MAC, GUEST_IP, GW_IP, 53, b"query");
    f[34 + 6] = 0;
    f[34 + 7] = 0;
    assert_eq!(run(&mut gw(), &f).0, Verdict::Transport);
}

#[test]
fn link_and_network_errors_counted() {
    assert_eq!(dropped(&[0u8; 13]), DropReason::EthernetTooShort);
    assert_eq!(dropped(&[]), DropReason::EthernetTooShort);
    let mut f = echo_request(GW_IP, 1, 1, b"");
    f[6] |= 1;
    assert_eq!(dropped(&f), DropReason::EthernetBadSource);
    let mut f = echo_request(GW_IP, 1, 1, b"");
    f[6..12].copy_from_slice(&GW_MAC.0);
    assert_eq!(dropped(&f), DropReason::EthernetBadSource);
    let mut f = echo_request(GW_IP, 1, 1, b"");
    f[..6].copy_from_slice(&[0x5a, 0x94, 0xef, 0xe4, 0x0c, 0x01]);
    assert_eq!(dropped(&f), DropReason::EthernetNotForUs);
    let mut f = echo_request(GW_IP, 1, 1, b"");
    f[12..14].copy_from_slice(&[0x81, 0x00]);
    assert_eq!(dropped(&f), DropReason::VlanTagged);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(dropped(&f), DropReason::Ipv6Unsupported);
    f[12..14].copy_from_slice(&[0x88, 0xcc]); // LLDP
    assert_eq!(dropped(&f), DropReason::UnknownEthertype);
    f[12..14].copy_from_slice(&[0x00, 0x26]); // 802.3 length field (STP)
    assert_eq!(dropped(&f), DropReason::UnknownEthertype);

    let mut f = echo_request(GW_IP, 1, 1, b"");
    f[14] = 0x65;
    assert_eq!(dropped(&f), DropReason::Ipv4Malformed);
    assert_eq!(dropped(&f[..14]), DropReason::Ipv4Malformed);
    assert_eq!(
        dropped(&ipv4_raw(REMOTE_IP, 47, &[0; 8])),
        DropReason::Ipv4UnsupportedProtocol
    );
    for bad_src in [
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::new(192, 168, 127, 255),
    ] {
        let mut f = echo_request(GW_IP, 1, 1, b"");
        f[26..30].copy_from_slice(&bad_src.octets());
        refill_ip_checksum(&mut f);
        // The ICMP checksum does not cover IP addresses.
        assert_eq!(dropped(&f), DropReason::Ipv4BadSource, "{bad_src}");
    }
    // 0.0.0.0 is a valid source only for UDP (DHCP).
    let mut f = echo_request(GW_IP, 1, 1, b"");
    f[26..30].copy_from_slice(&[0; 4]);
    refill_ip_checksum(&mut f);
    assert_eq!(dropped(&f), DropReason::Ipv4BadSource);
    for bad_dst in [
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(127, 1, 2, 3),
        Ipv4Addr::UNSPECIFIED,
    ] {
        assert_eq!(
            dropped(&tcp_syn(bad_dst, 22)),
            DropReason::Ipv4BadDestination,
            "{bad_dst}"
        );
    }
}

#[test]
fn other_subnets_and_prefixes() {
    let cfg = GatewayConfig {
        ip: Ipv4Addr::new(10, 0, 2, 2),
        prefix_len: 31,
        virtual_ips: vec![],
        ..GatewayConfig::default()
    };
    let mut g = Gateway::new(cfg);
    assert!(!g.is_gateway_ip(HOST_IP));
    let (v, _) = run(&mut g, &arp_request(HOST_IP));
    assert_eq!(v, Verdict::Dropped(DropReason::ArpNotForUs));
    let (v, _) = run(&mut g, &arp_request(Ipv4Addr::new(10, 0, 2, 2)));
    assert_eq!(v, Verdict::Handled);
    // /31 has no directed broadcast: 10.0.2.3 is an ordinary host.
    let (v, _) = run(&mut g, &tcp_syn(Ipv4Addr::new(10, 0, 2, 3), 80));
    assert_eq!(v, Verdict::Transport);
    for prefix in [0u8, 1, 8, 30, 32, 33, 255] {
        let mut g = Gateway::new(GatewayConfig {
            prefix_len: prefix,
            ..GatewayConfig::default()
        });
        let (v, _) = run(&mut g, &echo_request(GW_IP, 1, 1, b""));
        assert_eq!(v, Verdict::Handled, "/{prefix}");
    }
}

/// Every proper prefix of a valid frame is dropped (and counted); the whole frame is not.
#[test]
fn every_truncation_is_counted_never_panics() {
    let frames = vec![
        arp_request(GW_IP),
        echo_request(GW_IP, 1, 2, b"0123456789abcdef"),
        echo_request(REMOTE_IP, 1, 2, b"0123456789"),
        tcp_syn(REMOTE_IP, 443),
        tcp(GW_MAC, REMOTE_IP, 443, TcpFlags::ACK, b"payload bytes"),
        udp(GW_MAC, GUEST_IP, GW_IP, 53, b"dns query"),
        dhcp_discover(),
    ];
    let mut g = gw();
    for f in &frames {
        let (v, _) = run(&mut g, f);
        assert!(matches!(v, Verdict::Handled | Verdict::Transport));
        for len in 0..f.len() {
            let (v, out) = run(&mut g, &f[..len]);
            assert!(
                matches!(v, Verdict::Dropped(_)),
                "len {len} of {f:02x?} -> {v:?}"
            );
            assert!(out.is_empty());
        }
    }
    let c = g.counters();
    assert_eq!(
        c.frames,
        c.arp_replies + c.echo_replies + c.transport + c.dropped
    );
    assert_eq!(c.dropped, g.drops().total());
}

#[test]
fn replies_parse_as_arp_via_our_views() {
    let (_, out) = run(&mut gw(), &arp_request(HOST_IP));
    let eth = EthernetFrame::new_checked(out.get(0).unwrap()).unwrap();
    let a = ArpPacket::new_checked(eth.payload()).unwrap();
    assert_eq!(a.operation(), ArpOperation::REPLY);
    assert_eq!(a.sender_proto_addr(), HOST_IP);
}

#[test]
fn offloaded_frames_skip_only_the_l4_checksum() {
    // A kernel's frame over a virtio-net TAP carries a partial TCP/UDP checksum: the
    // gateway takes it without verifying that checksum, and still checks the rest.
    let mut g = gw();
    let mut out = FrameBatch::new();
    let mut f = tcp_syn(REMOTE_IP, 80);
    f[34 + 16] ^= 0x5a;
    assert_eq!(
        g.process_frame(&f, &mut out),
        Verdict::Dropped(DropReason::TcpBadChecksum)
    );
    assert_eq!(g.process_offloaded_frame(&f, &mut out), Verdict::Transport);
    let mut u = udp(GW_MAC, GUEST_IP, GW_IP, 53, b"query");
    u[34 + 6] ^= 0x5a;
    assert_eq!(g.process_offloaded_frame(&u, &mut out), Verdict::Transport);
    // The IPv4 header checksum is never left to offload.
    f[24] ^= 1;
    assert_eq!(
        g.process_offloaded_frame(&f, &mut out),
        Verdict::Dropped(DropReason::Ipv4BadChecksum)
    );
    let mut m = tcp_syn(REMOTE_IP, 80);
    m[34 + 12] = 0x40;
    assert_eq!(
        g.process_offloaded_frame(&m, &mut out),
        Verdict::Dropped(DropReason::TcpMalformed)
    );
    assert!(out.is_empty());
}
