//! The virtual gateway's own link-level and network-level duties.
//!
//! It owns the gateway MAC and IP (plus "virtual" IPs such as the host alias) and answers
//! what a router on the guest's segment must answer itself: ARP for its addresses and ICMP
//! echo to them. Everything else that is valid IPv4 TCP/UDP/ICMP is handed back to the
//! caller as [`Verdict::Transport`] for the NAT/flow layer and the services (DHCP, DNS,
//! API); everything invalid is dropped under one named [`DropReason`].
//!
//! Unlike upstream (gVisor with RX checksum offload) we verify IPv4, ICMP, UDP and TCP
//! checksums here, so the layers after us see only sound packets.

use std::net::Ipv4Addr;

use crate::batch::FrameBatch;
use crate::counters::{DropCounters, DropReason};
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, EthernetRepr, Icmpv4Packet,
    Icmpv4Repr, Icmpv4Type, IpProtocol, Ipv4FrameRepr, Ipv4Packet, MacAddr, TcpPacket, UdpPacket,
};

/// TTL of packets the gateway originates (Linux's default, `net.ipv4.ip_default_ttl`).
pub const DEFAULT_TTL: u8 = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// Subnet prefix length (24 for 192.168.127.0/24); values above 32 act as 32.
    pub prefix_len: u8,
    /// Further addresses the gateway owns (ARP and echo), e.g. the host alias.
    pub virtual_ips: Vec<Ipv4Addr>,
    /// Virtual IPs the NAT maps to a host address: ARP is still answered here, but ICMP
    /// echo to them goes to the NAT (`Verdict::Transport`), so the host answers it.
    pub nat_ips: Vec<Ipv4Addr>,
    pub mtu: u16,
}

impl Default for GatewayConfig {
    /// Upstream gvproxy's defaults.
    fn default() -> Self {
        GatewayConfig {
            mac: MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]),
            ip: Ipv4Addr::new(192, 168, 127, 1),
            prefix_len: 24,
            virtual_ips: vec![Ipv4Addr::new(192, 168, 127, 254)],
            nat_ips: vec![Ipv4Addr::new(192, 168, 127, 254)],
            mtu: 1500,
        }
    }
}

/// What became of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Consumed; replies (if any) were pushed to `out`.
    Handled,
    /// Also counted in the gateway's [`DropCounters`].
    Dropped(DropReason),
    /// A valid IPv4 TCP/UDP/ICMP packet not for the gateway itself (or TCP/UDP to one of its
    /// addresses, for the services): the caller hands it to the NAT/flow layer.
    Transport,
}

/// Frame-level counters for `/stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayCounters {
    /// Frames given to `process_frame`.
    pub frames: u64,
    pub arp_replies: u64,
    pub echo_replies: u64,
    /// Frames returned as `Verdict::Transport`.
    pub transport: u64,
    /// Frames dropped (the sum of the drop counters).
    pub dropped: u64,
}

/// Where an IPv4 destination points, from the gateway's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    /// The gateway IP or a virtual IP.
    Gateway,
    /// 255.255.255.255 or the subnet's directed broadcast.
    Broadcast,
    Multicast,
    /// Any other unicast address: the NAT's business.
    Elsewhere,
}

pub struct Gateway {
    cfg: GatewayConfig,
    /// Subnet directed broadcast; none for /31 and /32 (RFC 3021).
    subnet_broadcast: Option<Ipv4Addr>,
    drops: DropCounters,
    counters: GatewayCounters,
    next_ident: u16,
}

impl Gateway {
    pub fn new(cfg: GatewayConfig) -> Self {
        let prefix = u32::from(cfg.prefix_len.min(32));
        let subnet_broadcast = (prefix <= 30).then(|| {
            let host_mask = u32::MAX.checked_shr(prefix).unwrap_or(0);
            Ipv4Addr::from(u32::from(cfg.ip) | host_mask)
        });
        Gateway {
            cfg,
            subnet_broadcast,
            drops: DropCounters::default(),
            counters: GatewayCounters::default(),
            next_ident: 1,
        }
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// The gateway IP or one of the virtual IPs.
    pub fn is_gateway_ip(&self, ip: Ipv4Addr) -> bool {
        ip == self.cfg.ip || self.cfg.virtual_ips.contains(&ip)
    }

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    pub fn counters(&self) -> GatewayCounters {
        self.counters
    }

    /// One frame whose destination MAC is the gateway's or broadcast/multicast.
    ///
    /// ARP: answer requests whose target is the gateway IP or a virtual IP (RFC 826), never
    /// any other address; learn nothing. IPv4: verify the header checksum; drop fragments;
    /// ICMP echo request to a gateway address -> echo reply in `out` (RFC 792), never
    /// forwarded (except to a NATed virtual IP: `Transport`). Replies go to the frame's source MAC.
    pub fn process_frame(&mut self, frame: &[u8], out: &mut FrameBatch) -> Verdict {
        self.process(frame, true, out)
    }

    /// [`Gateway::process_frame`] for a frame whose TCP/UDP checksum the sending kernel
    /// left to offload (virtio-net `NEEDS_CSUM` over a local TAP or socket): not verified,
    /// as a kernel does not verify its own offloaded frames.
    pub fn process_offloaded_frame(&mut self, frame: &[u8], out: &mut FrameBatch) -> Verdict {
        self.process(frame, false, out)
    }

    fn process(&mut self, frame: &[u8], verify_l4: bool, out: &mut FrameBatch) -> Verdict {
        self.counters.frames += 1;
        match self.classify(frame, verify_l4, out) {
            Ok(Verdict::Transport) => {
                self.counters.transport += 1;
                Verdict::Transport
            }
            Ok(v) => v,
            Err(reason) => {
                log::trace!("gateway: drop {}", reason.name());
                self.drops.count(reason);
                self.counters.dropped += 1;
                Verdict::Dropped(reason)
            }
        }
    }

    fn classify(
        &mut self,
        frame: &[u8],
        verify_l4: bool,
        out: &mut FrameBatch,
    ) -> Result<Verdict, DropReason> {
        let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::EthernetTooShort)?;
        let src_mac = eth.src();
        if src_mac.is_multicast() || src_mac == self.cfg.mac {
            return Err(DropReason::EthernetBadSource);
        }
        let dst_mac = eth.dst();
        if dst_mac.is_unicast() && dst_mac != self.cfg.mac {
            return Err(DropReason::EthernetNotForUs);
        }
        if eth.is_vlan_tagged() {
            return Err(DropReason::VlanTagged);
        }
        match eth.ethertype() {
            EtherType::ARP => self.process_arp(&eth, out),
            EtherType::IPV4 => self.process_ipv4(&eth, verify_l4, out),
            EtherType::IPV6 => Err(DropReason::Ipv6Unsupported),
            _ => Err(DropReason::UnknownEthertype),
        }
    }

    fn process_arp(
        &mut self,
        eth: &EthernetFrame<&[u8]>,
        out: &mut FrameBatch,
    ) -> Result<Verdict, DropReason> {
        let arp = ArpPacket::new_checked(eth.payload()).map_err(|_| DropReason::ArpMalformed)?;
        let req = ArpRepr::parse(&arp);
        if req.operation != ArpOperation::REQUEST {
            return Err(DropReason::ArpUnsupportedOp);
        }
        if req.sender_hw.is_multicast() {
            return Err(DropReason::ArpMalformed);
        }
        // RFC 5227 §2.3: an announcement asks nothing. (A probe, sender 0.0.0.0, is answered
        // like any request: RFC 5227 §2.1.1, the reply tells the prober the address is taken.)
        if req.is_gratuitous() {
            return Err(DropReason::ArpGratuitous);
        }
        // Unlike promiscuous gVisor, answer only for our own addresses, never for the guests'.
        if !self.is_gateway_ip(req.target_ip) {
            return Err(DropReason::ArpNotForUs);
        }
        let reply = req.reply(self.cfg.mac);
        let eth_repr = EthernetRepr {
            src: self.cfg.mac,
            dst: eth.src(),
            ethertype: EtherType::ARP,
        };
        out.try_push_with(EthernetRepr::HEADER_LEN + ArpRepr::LEN, |buf| {
            eth_repr.emit(buf)?;
            let body = buf
                .get_mut(EthernetRepr::HEADER_LEN..)
                .ok_or(crate::wire::WireError::Exhausted)?;
            reply.emit(body)?;
            Ok::<usize, crate::wire::WireError>(EthernetRepr::HEADER_LEN + ArpRepr::LEN)
        })
        .map_err(|_| DropReason::ReplyBuildFailed)?;
        self.counters.arp_replies += 1;
        Ok(Verdict::Handled)
    }

    fn dest(&self, ip: Ipv4Addr) -> Dest {
        if self.is_gateway_ip(ip) {
            Dest::Gateway
        } else if ip.is_broadcast() || Some(ip) == self.subnet_broadcast {
            Dest::Broadcast
        } else if ip.is_multicast() {
            Dest::Multicast
        } else {
            Dest::Elsewhere
        }
    }

    fn process_ipv4(
        &mut self,
        eth: &EthernetFrame<&[u8]>,
        verify_l4: bool,
        out: &mut FrameBatch,
    ) -> Result<Verdict, DropReason> {
        let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| DropReason::Ipv4Malformed)?;
        if !ip.verify_checksum() {
            return Err(DropReason::Ipv4BadChecksum);
        }
        if ip.is_fragment() {
            return Err(DropReason::Ipv4Fragment);
        }
        let (src, dst, protocol) = (ip.src(), ip.dst(), ip.protocol());
        // RFC 1122 §3.2.1.3: discard datagrams whose source is broadcast, multicast or
        // loopback; 0.0.0.0 is allowed only while a host learns its address (DHCP, UDP).
        if src.is_multicast()
            || src.is_broadcast()
            || src.is_loopback()
            || Some(src) == self.subnet_broadcast
            || (src.is_unspecified() && protocol != IpProtocol::UDP)
        {
            return Err(DropReason::Ipv4BadSource);
        }
        // Never let a guest reach the host's loopback (only a virtual IP maps to it) or
        // "this network".
        if dst.is_unspecified() || dst.is_loopback() {
            return Err(DropReason::Ipv4BadDestination);
        }
        let dest = self.dest(dst);
        // RFC 1122 §3.3.6: discard a datagram received via a link-layer broadcast that does
        // not name an IP broadcast or multicast destination.
        if eth.dst().is_multicast() && matches!(dest, Dest::Gateway | Dest::Elsewhere) {
            return Err(DropReason::Ipv4NotForGateway);
        }
        let payload = ip.payload_slice();
        match protocol {
            IpProtocol::ICMP => self.process_icmp(eth, &ip, dest, payload, out),
            IpProtocol::UDP => {
                let udp = UdpPacket::new_checked(payload).map_err(|_| DropReason::UdpMalformed)?;
                if verify_l4 && !udp.verify_checksum(src, dst) {
                    return Err(DropReason::UdpBadChecksum);
                }
                match dest {
                    // DHCP and DNS live on the gateway's address and on broadcast.
                    Dest::Gateway | Dest::Broadcast | Dest::Elsewhere => Ok(Verdict::Transport),
                    Dest::Multicast => Err(DropReason::Ipv4NotForGateway),
                }
            }
            IpProtocol::TCP => {
                let tcp = TcpPacket::new_checked(payload).map_err(|_| DropReason::TcpMalformed)?;
                if tcp.options_iter().any(|o| o.is_err()) {
                    return Err(DropReason::TcpMalformed);
                }
                if verify_l4 && !tcp.verify_checksum(src, dst) {
                    return Err(DropReason::TcpBadChecksum);
                }
                match dest {
                    Dest::Gateway | Dest::Elsewhere => Ok(Verdict::Transport),
                    // RFC 1122 §4.2.3.10: a SYN to a broadcast or multicast address is
                    // ignored; no TCP connection has such an endpoint.
                    Dest::Broadcast | Dest::Multicast => Err(DropReason::Ipv4NotForGateway),
                }
            }
            _ => Err(DropReason::Ipv4UnsupportedProtocol),
        }
    }

    fn process_icmp(
        &mut self,
        eth: &EthernetFrame<&[u8]>,
        ip: &Ipv4Packet<&[u8]>,
        dest: Dest,
        payload: &[u8],
        out: &mut FrameBatch,
    ) -> Result<Verdict, DropReason> {
        let icmp = Icmpv4Packet::new_checked(payload).map_err(|_| DropReason::IcmpMalformed)?;
        if !icmp.verify_checksum() {
            return Err(DropReason::IcmpBadChecksum);
        }
        match dest {
            Dest::Gateway => {}
            // RFC 1122 §3.2.2.6: an echo request to a broadcast or multicast address MAY be
            // silently discarded (Linux does by default).
            Dest::Broadcast | Dest::Multicast => return Err(DropReason::Ipv4NotForGateway),
            Dest::Elsewhere => return Ok(Verdict::Transport),
        }
        if icmp.msg_type() != Icmpv4Type::ECHO_REQUEST || icmp.code() != 0 {
            return Err(DropReason::IcmpUnsupportedType);
        }
        // The NAT forwards echo to a NATed virtual IP: the host behind it answers.
        if self.cfg.nat_ips.contains(&ip.dst()) {
            return Ok(Verdict::Transport);
        }
        // RFC 792: "the source and destination addresses are simply reversed, the type code
        // changed to 0, and the checksum recomputed"; identifier, sequence and data echoed.
        let reply = Icmpv4Repr::EchoReply {
            ident: icmp.echo_ident(),
            seq_no: icmp.echo_seq_no(),
            data: icmp.data_slice(),
        };
        let frame = Ipv4FrameRepr {
            src_mac: self.cfg.mac,
            dst_mac: eth.src(),
            src_ip: ip.dst(),
            dst_ip: ip.src(),
            ttl: DEFAULT_TTL,
            ident: self.take_ident(),
            dont_frag: false,
            dscp_ecn: 0,
        };
        out.try_push_with(Ipv4FrameRepr::HEADER_LEN + reply.buffer_len(), |buf| {
            reply.emit_frame(buf, &frame)
        })
        .map_err(|_| DropReason::ReplyBuildFailed)?;
        self.counters.echo_replies += 1;
        Ok(Verdict::Handled)
    }

    fn take_ident(&mut self) -> u16 {
        let id = self.next_ident;
        self.next_ident = self.next_ident.wrapping_add(1);
        id
    }
}
