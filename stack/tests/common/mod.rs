//! Frame builders shared by the gateway tests.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use stack::wire::{
    ArpOperation, ArpRepr, EtherType, EthernetRepr, Icmpv4Repr, Ipv4FrameRepr, Ipv4Repr, MacAddr,
    SeqNumber, TcpFlags, TcpRepr, TcpTimestamps, UdpRepr,
};

pub const GW_MAC: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]);
pub const GUEST_MAC: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]);
pub const GW_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
pub const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

pub fn arp(op: u16, eth_dst: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![0u8; 42];
    EthernetRepr {
        src: GUEST_MAC,
        dst: eth_dst,
        ethertype: EtherType::ARP,
    }
    .emit(&mut b)
    .unwrap();
    ArpRepr {
        operation: op,
        sender_hw: GUEST_MAC,
        sender_ip,
        target_hw: MacAddr::ZERO,
        target_ip,
    }
    .emit(&mut b[14..])
    .unwrap();
    b
}

pub fn arp_request(target_ip: Ipv4Addr) -> Vec<u8> {
    arp(
        ArpOperation::REQUEST,
        MacAddr::BROADCAST,
        GUEST_IP,
        target_ip,
    )
}

pub fn frame_repr(dst_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr) -> Ipv4FrameRepr {
    Ipv4FrameRepr {
        src_mac: GUEST_MAC,
        dst_mac,
        src_ip: src,
        dst_ip: dst,
        ttl: 64,
        ident: 0x4242,
        dont_frag: true,
        dscp_ecn: 0,
    }
}

pub fn icmp_to(dst: Ipv4Addr, repr: Icmpv4Repr<'_>) -> Vec<u8> {
    let f = frame_repr(GW_MAC, GUEST_IP, dst);
    let mut b = vec![0u8; Ipv4FrameRepr::HEADER_LEN + repr.buffer_len()];
    repr.emit_frame(&mut b, &f).unwrap();
    b
}

pub fn echo_request(dst: Ipv4Addr, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    icmp_to(
        dst,
        Icmpv4Repr::EchoRequest {
            ident,
            seq_no,
            data,
        },
    )
}

pub fn udp(dst_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let f = frame_repr(dst_mac, src, dst);
    let off = UdpRepr::frame_payload_offset();
    let mut b = vec![0u8; off + payload.len()];
    b[off..].copy_from_slice(payload);
    UdpRepr {
        src_port: 40000,
        dst_port: dport,
    }
    .emit_frame(&mut b, &f, payload.len())
    .unwrap();
    b
}

pub fn dhcp_discover() -> Vec<u8> {
    udp(
        MacAddr::BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        67,
        &[1u8; 240],
    )
}

pub fn tcp_syn(dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    tcp(GW_MAC, dst, dport, TcpFlags::SYN, b"")
}

pub fn tcp(
    dst_mac: MacAddr,
    dst: Ipv4Addr,
    dport: u16,
    flags: TcpFlags,
    payload: &[u8],
) -> Vec<u8> {
    let f = frame_repr(dst_mac, GUEST_IP, dst);
    let repr = TcpRepr {
        src_port: 50000,
        dst_port: dport,
        seq: SeqNumber(1000),
        ack: SeqNumber(0),
        flags,
        window: 64240,
        mss: flags.contains(TcpFlags::SYN).then_some(1460),
        window_scale: flags.contains(TcpFlags::SYN).then_some(7),
        sack_permitted: flags.contains(TcpFlags::SYN),
        timestamps: Some(TcpTimestamps { tsval: 1, tsecr: 0 }),
        ..TcpRepr::default()
    };
    let off = repr.frame_payload_offset();
    let mut b = vec![0u8; off + payload.len()];
    b[off..].copy_from_slice(payload);
    repr.emit_frame(&mut b, &f, payload.len()).unwrap();
    b
}

/// A raw IPv4 frame with the given protocol and payload (header checksum valid).
pub fn ipv4_raw(dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 34 + payload.len()];
    EthernetRepr {
        src: GUEST_MAC,
        dst: GW_MAC,
        ethertype: EtherType::IPV4,
    }
    .emit(&mut b)
    .unwrap();
    Ipv4Repr {
        src: GUEST_IP,
        dst,
        protocol,
        payload_len: payload.len(),
        ttl: 64,
        ident: 1,
        dont_frag: false,
        dscp_ecn: 0,
    }
    .emit(&mut b[14..])
    .unwrap();
    b[34..].copy_from_slice(payload);
    b
}

/// Recompute the IPv4 header checksum of a frame after editing the header.
pub fn refill_ip_checksum(frame: &mut [u8]) {
    let mut ip = stack::wire::Ipv4Packet::new_checked(&mut frame[14..]).unwrap();
    ip.fill_checksum();
}

/// Seeded xorshift64 (deterministic, replayable from the seed).
pub struct XorShift(pub u64);

impl XorShift {
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
}
