//! Flow identity: which connection a guest frame belongs to, and which shard owns it.
//!
//! A flow is (protocol, guest address:port, remote address:port) as the guest sees it: the
//! remote is the address the guest sent to (a virtual address such as 192.168.127.254, not
//! what the NAT turns it into). ICMP echo flows use the echo identifier as the guest "port"
//! and 0 as the remote port. Every frame of a flow hashes to the same shard, which owns the
//! flow's state and its host socket, so no lock is taken per packet.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::wire::{
    EtherType, EthernetFrame, Icmpv4Packet, Icmpv4Type, IpProtocol, Ipv4Packet, TcpPacket,
    UdpPacket,
};

/// The transport protocols the NAT carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    /// ICMP echo (other ICMP messages from the guest are not forwarded).
    Icmp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }

    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => IpProtocol::TCP,
            Protocol::Udp => IpProtocol::UDP,
            Protocol::Icmp => IpProtocol::ICMP,
        }
    }
}

/// One flow, from the guest's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: Protocol,
    /// The guest's address and port (ICMP: the echo identifier).
    pub guest: SocketAddrV4,
    /// The destination the guest addressed (ICMP: port 0).
    pub remote: SocketAddrV4,
}

impl FlowKey {
    /// The flow of an Ethernet + IPv4 frame carrying TCP, UDP or ICMP (any ICMP type: a
    /// message other than an echo request gets identifier 0). `None` for anything else or a
    /// frame too short to hold the ports. Checksums are not verified here (the gateway did).
    pub fn of_frame(frame: &[u8]) -> Option<FlowKey> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EtherType::IPV4 {
            return None;
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
        let (src, dst) = (ip.src(), ip.dst());
        let payload = ip.payload_slice();
        let (proto, sport, dport) = match ip.protocol() {
            IpProtocol::TCP => {
                let t = TcpPacket::new_checked(payload).ok()?;
                (Protocol::Tcp, t.src_port(), t.dst_port())
            }
            IpProtocol::UDP => {
                let u = UdpPacket::new_checked(payload).ok()?;
                (Protocol::Udp, u.src_port(), u.dst_port())
            }
            IpProtocol::ICMP => {
                let i = Icmpv4Packet::new_checked(payload).ok()?;
                let ident = if i.msg_type() == Icmpv4Type::ECHO_REQUEST {
                    i.echo_ident()
                } else {
                    0
                };
                (Protocol::Icmp, ident, 0)
            }
            _ => return None,
        };
        Some(FlowKey {
            proto,
            guest: SocketAddrV4::new(src, sport),
            remote: SocketAddrV4::new(dst, dport),
        })
    }

    /// An ICMP echo flow.
    pub fn icmp(guest: Ipv4Addr, ident: u16, remote: Ipv4Addr) -> FlowKey {
        FlowKey {
            proto: Protocol::Icmp,
            guest: SocketAddrV4::new(guest, ident),
            remote: SocketAddrV4::new(remote, 0),
        }
    }
}

/// For logs: `tcp 192.168.127.2:40000 -> 192.168.127.254:80`, `icmp 192.168.127.2 id 7 -> 1.2.3.4`.
impl std::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.proto {
            Protocol::Icmp => write!(
                f,
                "icmp {} id {} -> {}",
                self.guest.ip(),
                self.guest.port(),
                self.remote.ip()
            ),
            p => write!(f, "{} {} -> {}", p.name(), self.guest, self.remote),
        }
    }
}

/// A keyed hash of flow keys that picks a shard (and is good for hash tables).
///
/// Keyed so that a guest cannot choose ports that pile all its flows onto one shard; the
/// key is drawn once per process, so the mapping is stable while gvproxy runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHasher {
    k0: u64,
    k1: u64,
}

/// Multiply two words and fold the 128-bit product (the mixing step of foldhash/wyhash).
#[inline]
fn folded_multiply(x: u64, y: u64) -> u64 {
    let p = u128::from(x) * u128::from(y);
    // The low and high halves of the product: truncation is the point.
    #[allow(clippy::cast_possible_truncation)]
    let (lo, hi) = (p as u64, (p >> 64) as u64);
    lo ^ hi
}

impl FlowHasher {
    /// A hasher with a fixed key (tests, reproducible runs).
    pub fn with_key(k0: u64, k1: u64) -> FlowHasher {
        FlowHasher {
            k0: k0 | 1,
            k1: k1 | 1,
        }
    }

    /// A hasher keyed from the process's random hash seed.
    pub fn random() -> FlowHasher {
        use std::hash::{BuildHasher, Hasher};
        let state = std::collections::hash_map::RandomState::new();
        let mut a = state.build_hasher();
        a.write_u64(0x9e37_79b9_7f4a_7c15);
        let mut b = state.build_hasher();
        b.write_u64(0xc2b2_ae3d_27d4_eb4f);
        FlowHasher::with_key(a.finish(), b.finish())
    }

    pub fn hash(&self, key: &FlowKey) -> u64 {
        let a =
            (u64::from(u32::from(*key.guest.ip())) << 32) | u64::from(u32::from(*key.remote.ip()));
        let b = (u64::from(key.proto.number()) << 32)
            | (u64::from(key.guest.port()) << 16)
            | u64::from(key.remote.port());
        let h = folded_multiply(a ^ self.k0, b ^ self.k1);
        folded_multiply(h ^ self.k1, 0x9e37_79b9_7f4a_7c15 ^ self.k0)
    }

    /// The shard (0..shards) that owns `key`. `shards == 0` is treated as 1.
    pub fn shard_of(&self, key: &FlowKey, shards: usize) -> usize {
        let n = u64::try_from(shards.max(1)).unwrap_or(u64::MAX);
        // Lemire's multiply-shift range reduction: uniform, no division.
        let i = (u128::from(self.hash(key)) * u128::from(n)) >> 64;
        usize::try_from(i).unwrap_or(0)
    }
}

impl Default for FlowHasher {
    fn default() -> Self {
        FlowHasher::random()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Icmpv4Repr, Ipv4FrameRepr, MacAddr, TcpFlags, TcpRepr, UdpRepr};

    const GUEST: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);

    fn frame_repr() -> Ipv4FrameRepr {
        Ipv4FrameRepr {
            src_mac: MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]),
            dst_mac: MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]),
            src_ip: GUEST,
            dst_ip: REMOTE,
            ttl: 64,
            ident: 1,
            dont_frag: true,
            dscp_ecn: 0,
        }
    }

    #[test]
    fn keys_of_tcp_udp_icmp_frames() {
        let mut buf = vec![0u8; 200];
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 8080,
            flags: TcpFlags::SYN,
            ..TcpRepr::default()
        };
        let n = tcp.emit_frame(&mut buf, &frame_repr(), 0).unwrap();
        let k = FlowKey::of_frame(&buf[..n]).unwrap();
        assert_eq!(k.proto, Protocol::Tcp);
        assert_eq!(k.guest, SocketAddrV4::new(GUEST, 40000));
        assert_eq!(k.remote, SocketAddrV4::new(REMOTE, 8080));

        let udp = UdpRepr {
            src_port: 5353,
            dst_port: 53,
        };
        let n = udp.emit_frame(&mut buf, &frame_repr(), 4).unwrap();
        let k = FlowKey::of_frame(&buf[..n]).unwrap();
        assert_eq!(k.proto, Protocol::Udp);
        assert_eq!((k.guest.port(), k.remote.port()), (5353, 53));

        let echo = Icmpv4Repr::EchoRequest {
            ident: 0x1c46,
            seq_no: 9,
            data: b"abc",
        };
        let n = echo.emit_frame(&mut buf, &frame_repr()).unwrap();
        let k = FlowKey::of_frame(&buf[..n]).unwrap();
        assert_eq!(k, FlowKey::icmp(GUEST, 0x1c46, REMOTE));
        assert_eq!(k.proto.name(), "icmp");

        // Truncations never panic and never yield a key from a partial header.
        for len in 0..n {
            let _ = FlowKey::of_frame(&buf[..len]);
        }
        assert_eq!(FlowKey::of_frame(&buf[..n - 12]), None);
        assert_eq!(FlowKey::of_frame(&[]), None);
    }

    #[test]
    fn shard_choice_is_stable_in_range_and_spread() {
        let h = FlowHasher::with_key(1, 2);
        let mut counts = [0usize; 4];
        for port in 0..4000u16 {
            let k = FlowKey {
                proto: Protocol::Tcp,
                guest: SocketAddrV4::new(GUEST, 30000 + port),
                remote: SocketAddrV4::new(REMOTE, 80),
            };
            let s = h.shard_of(&k, 4);
            assert_eq!(s, h.shard_of(&k, 4));
            assert_eq!(h.shard_of(&k, 1), 0);
            assert_eq!(h.shard_of(&k, 0), 0);
            counts[s] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
        // Different keys, different mapping (with overwhelming probability).
        let r = FlowHasher::random();
        let k = FlowKey::icmp(GUEST, 1, REMOTE);
        assert!(r.shard_of(&k, 7) < 7);
        assert_ne!(
            FlowHasher::with_key(3, 4).hash(&k),
            FlowHasher::with_key(5, 6).hash(&k)
        );
    }
}
