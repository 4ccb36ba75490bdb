//! Seeded random frames through `Gateway::process_frame`: never a panic, and every frame is
//! handled, handed to transport, or counted under exactly one drop reason.

// Test code: a failed unwrap is a failed test; casts are of small random values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use common::*;
use stack::wire::{EthernetFrame, Icmpv4Packet, Ipv4Packet, MacAddr, TcpFlags};
use stack::{FrameBatch, Gateway, GatewayConfig, Verdict};

const FRAMES: usize = 100_000;

fn templates() -> Vec<Vec<u8>> {
    vec![
        arp_request(GW_IP),
        arp_request(HOST_IP),
        echo_request(GW_IP, 1, 2, b"0123456789abcdef"),
        echo_request(HOST_IP, 3, 4, &[0u8; 64]),
        echo_request(REMOTE_IP, 1, 2, b"x"),
        tcp_syn(REMOTE_IP, 443),
        tcp_syn(GW_IP, 80),
        tcp(
            GW_MAC,
            REMOTE_IP,
            443,
            TcpFlags::ACK | TcpFlags::PSH,
            b"some payload",
        ),
        udp(GW_MAC, GUEST_IP, GW_IP, 53, b"dns query"),
        udp(
            MacAddr([1, 0, 0x5e, 0, 0, 0xfb]),
            GUEST_IP,
            std::net::Ipv4Addr::new(224, 0, 0, 251),
            5353,
            b"m",
        ),
        dhcp_discover(),
    ]
}

fn mutate(rng: &mut XorShift, t: &[u8]) -> Vec<u8> {
    let mut f = t.to_vec();
    match rng.below(5) {
        // Header flips with the checksums fixed up, to reach the checks behind them.
        4 => {
            let hdr = f.len().min(80);
            for _ in 0..1 + rng.below(2) {
                let i = 14 + rng.below(hdr - 14);
                f[i] ^= 1 << rng.below(8);
            }
            fix_checksums(&mut f);
        }
        // A few bit flips anywhere.
        0 | 1 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
        }
        // Flips in the headers only (past Ethernet), where parsers live.
        2 => {
            let hdr = f.len().min(80);
            for _ in 0..1 + rng.below(3) {
                let i = 14 + rng.below(hdr - 14);
                f[i] = rng.next() as u8;
            }
        }
        // Untouched (must succeed) or padded.
        _ => {
            if rng.below(2) == 0 {
                f.resize(f.len() + rng.below(40), rng.next() as u8);
            }
        }
    }
    if rng.below(4) == 0 {
        let n = rng.below(f.len() + 1);
        f.truncate(n);
    }
    f
}

fn fix_checksums(f: &mut [u8]) {
    use stack::wire::{TcpPacket, UdpPacket};
    if f.len() < 14 || f[12..14] != [0x08, 0x00] {
        return;
    }
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut f[14..]) else {
        return;
    };
    ip.fill_checksum();
    let (src, dst, proto) = (ip.src(), ip.dst(), ip.protocol());
    let l4 = ip.payload_mut();
    match proto {
        1 => {
            if let Ok(mut p) = Icmpv4Packet::new_checked(l4) {
                p.fill_checksum();
            }
        }
        6 => {
            if let Ok(mut p) = TcpPacket::new_checked(l4) {
                p.fill_checksum(src, dst);
            }
        }
        17 => {
            if let Ok(mut p) = UdpPacket::new_checked(l4) {
                p.fill_checksum(src, dst);
            }
        }
        _ => {}
    }
}

fn random_frame(rng: &mut XorShift) -> Vec<u8> {
    let len = rng.below(160);
    let mut f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    // Often make it reach the IPv4/ARP parsers rather than die at the MAC check.
    if f.len() >= 14 && rng.below(2) == 0 {
        f[..6].copy_from_slice(&GW_MAC.0);
        f[6..12].copy_from_slice(&GUEST_MAC.0);
        let et: [u8; 2] = if rng.below(2) == 0 {
            [0x08, 0x00]
        } else {
            [0x08, 0x06]
        };
        f[12..14].copy_from_slice(&et);
        if et == [0x08, 0x00] && f.len() > 14 && rng.below(2) == 0 {
            f[14] = 0x45;
        }
    }
    f
}

#[test]
fn hundred_thousand_frames() {
    let mut rng = XorShift(0x5eed_0f9a_7e3a_1234_u64);
    let templates = templates();
    let mut g = Gateway::new(GatewayConfig::default());
    let mut out = FrameBatch::with_capacity(1 << 16, 64);
    let (mut handled, mut transport, mut dropped) = (0u64, 0u64, 0u64);
    for n in 0..FRAMES {
        let f = if rng.below(3) == 0 {
            random_frame(&mut rng)
        } else {
            let t = &templates[rng.below(templates.len())];
            mutate(&mut rng, t)
        };
        let before = g.drops().clone();
        out.clear();
        let v = g.process_frame(&f, &mut out);
        match v {
            Verdict::Dropped(r) => {
                dropped += 1;
                assert_eq!(g.drops().total(), before.total() + 1, "frame {n}: {f:02x?}");
                assert_eq!(g.drops().get(r), before.get(r) + 1, "frame {n}");
                assert!(out.is_empty(), "frame {n}");
            }
            Verdict::Handled => {
                handled += 1;
                assert_eq!(g.drops(), &before, "frame {n}");
                assert_eq!(out.len(), 1, "frame {n}: one reply");
                check_reply(out.get(0).unwrap());
            }
            Verdict::Transport => {
                transport += 1;
                assert_eq!(g.drops(), &before, "frame {n}");
                assert!(out.is_empty(), "frame {n}");
            }
        }
    }
    let c = g.counters();
    assert_eq!(c.frames, FRAMES as u64);
    assert_eq!(c.dropped, dropped);
    assert_eq!(c.transport, transport);
    assert_eq!(c.arp_replies + c.echo_replies, handled);
    assert_eq!(g.drops().total(), dropped);
    eprintln!(
        "{c:?}\n{:?}",
        g.drops().iter().filter(|&(_, n)| n > 0).collect::<Vec<_>>()
    );
    // The mix exercised every outcome.
    assert!(
        handled > 1000 && transport > 1000 && dropped > 10_000,
        "{c:?}"
    );
    let reasons = g.drops().iter().filter(|&(_, n)| n > 0).count();
    assert!(
        reasons >= 20,
        "only {reasons} distinct reasons hit: {:?}",
        g.drops()
    );
}

/// A reply always goes back to the guest from the gateway, with valid checksums.
fn check_reply(b: &[u8]) {
    let eth = EthernetFrame::new_checked(b).unwrap();
    assert_eq!(eth.src(), GW_MAC);
    assert!(eth.dst().is_unicast());
    if eth.ethertype() == 0x0800 {
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.msg_type(), 0);
    } else {
        assert_eq!(eth.ethertype(), 0x0806);
        assert_eq!(b.len(), 42);
    }
}
