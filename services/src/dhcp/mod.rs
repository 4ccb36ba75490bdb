//! DHCP server of the virtual gateway (RFC 2131, options RFC 2132).
//!
//! Pure, like the stack: a guest frame in, reply frames out into a [`FrameBatch`], time as a
//! parameter, no panic on any input, every frame counted once in [`DhcpCounters`].
//!
//! ```text
//!  guest frame (UDP to port 67) ──> DhcpServer::process_frame ──> DhcpOutcome (+ counters)
//!     │ Ethernet/IPv4/UDP view, DhcpMessage::parse (cookie, options, overload)
//!     ├─ DISCOVER ─> static lease or Pool::offer ──────────────> DHCPOFFER ─┐
//!     ├─ REQUEST ──> server id ours? address the client's? ─┬──> DHCPACK ───┤
//!     │                                                     └──> DHCPNAK ───┤──> FrameBatch
//!     ├─ INFORM ───> configuration only (no lease) ──────────────> DHCPACK ───┘  (RFC 2131 §4.1
//!     ├─ RELEASE ──> Pool::release (no reply)                                     addressing)
//!     ├─ DECLINE ──> Pool::decline (no reply)
//!     └─ anything unreadable ──> Dropped(DhcpDrop), counted by name
//! ```
//!
//! Compared with upstream gvproxy (insomniacslk server4): the same reply layout (options sorted
//! by code, 61 and 82 echoed, 26 as u16), but the host alias, network and broadcast addresses
//! are never leased, a REQUEST for an address that is not the client's gets a DHCPNAK,
//! RELEASE and DECLINE are honoured, leases expire, INFORM is answered, replies are addressed
//! per RFC 2131 §4.1 instead of "broadcast if the source was 0.0.0.0", and option 119 is sent
//! only when there are search domains.
//!
//! The server is authoritative for its subnet (it is the only DHCP server on the virtual
//! link): a client in INIT-REBOOT or RENEWING that we have no record of (gvproxy restarted)
//! gets its address back if no one else holds it, instead of the silence RFC 2131 §4.3.2
//! asks of servers that share a wire.

mod pool;
pub mod wire;

#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use log::{debug, warn};
use stack::batch::FrameBatch;
use stack::wire::{
    EtherType, EthernetFrame, IpProtocol, Ipv4FrameRepr, Ipv4Packet, MacAddr, UdpPacket, UdpRepr,
    WireError,
};

use pool::Pool;
pub use pool::{BindingState, ClaimError, MAX_BINDINGS};
use wire::{DhcpMessage, MessageType, OptionCode, OptionList, ParseError, ReplyHeader};

/// Everything the server announces and hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpConfig {
    /// Router (option 3), server identifier (54), source of every reply.
    pub gateway_ip: Ipv4Addr,
    pub gateway_mac: MacAddr,
    pub subnet: Ipv4Addr,
    /// Clamped to 32.
    pub prefix_len: u8,
    /// The host alias (NAT to the host's loopback): never leased.
    pub host_ip: Ipv4Addr,
    /// Option 6; none sent when empty.
    pub dns: Vec<Ipv4Addr>,
    /// Option 26 (RFC 2132 §5.1: at least 68; not sent below that).
    pub mtu: u16,
    /// Option 51; clamped to 1 s ..= 0xfffffffe s (0xffffffff would mean "infinite").
    pub lease_time: Duration,
    /// Option 119, when not empty.
    pub search_domains: Vec<String>,
    /// Option 15, when set.
    pub domain_name: Option<String>,
    /// (address, MAC): the client with this MAC always gets this address.
    pub static_leases: Vec<(Ipv4Addr, MacAddr)>,
    /// How long an offered address is held for the client before it may go to another.
    pub offer_hold: Duration,
    /// How long a declined address stays out of the pool.
    pub decline_hold: Duration,
}

pub const DEFAULT_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);
pub const DEFAULT_GATEWAY_MAC: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]);
pub const DEFAULT_GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
pub const DEFAULT_GUEST_MAC: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]);
pub const DEFAULT_HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);

impl Default for DhcpConfig {
    /// Upstream's legacy-mode network (UPSTREAM.md §3).
    fn default() -> Self {
        DhcpConfig {
            gateway_ip: DEFAULT_GATEWAY_IP,
            gateway_mac: DEFAULT_GATEWAY_MAC,
            subnet: Ipv4Addr::new(192, 168, 127, 0),
            prefix_len: 24,
            host_ip: DEFAULT_HOST_IP,
            dns: vec![DEFAULT_GATEWAY_IP],
            mtu: 1500,
            lease_time: Duration::from_secs(3600),
            search_domains: Vec::new(),
            domain_name: None,
            static_leases: vec![(DEFAULT_GUEST_IP, DEFAULT_GUEST_MAC)],
            offer_hold: Duration::from_secs(60),
            decline_hold: Duration::from_secs(600),
        }
    }
}

/// What one frame led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpOutcome {
    /// DHCPOFFER of this address.
    Offered(Ipv4Addr),
    /// DHCPACK: this address is leased.
    Acked(Ipv4Addr),
    /// DHCPACK to a DHCPINFORM: configuration only (RFC 2131 §4.3.5).
    Informed,
    /// DHCPNAK.
    Naked(NakReason),
    /// DHCPRELEASE of this address (no reply).
    Released(Ipv4Addr),
    /// DHCPDECLINE of this address: kept out of the pool for a while (no reply).
    Declined(Ipv4Addr),
    /// A REQUEST, RELEASE or DECLINE naming another server (RFC 2131 §4.3.2: the client
    /// chose another offer): no reply, our offer is withdrawn.
    OtherServer,
    /// A RELEASE or DECLINE of an address the client does not hold: no reply.
    Ignored,
    /// DISCOVER with no address left to offer: no reply.
    PoolExhausted,
    /// The frame was not a DHCP client message we can read (or the reply could not be built).
    Dropped(DhcpDrop),
}

/// Why a REQUEST was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NakReason {
    /// The address is not on our subnet.
    WrongNetwork,
    /// The address is another client's, reserved, or not the one this client holds.
    NotYours,
    /// Neither a requested address (option 50) nor `ciaddr`.
    NoAddress,
}

impl NakReason {
    /// The text of option 56 in the DHCPNAK.
    pub fn message(self) -> &'static str {
        match self {
            NakReason::WrongNetwork => "requested address is not on this network",
            NakReason::NotYours => "requested address is not available to this client",
            NakReason::NoAddress => "no address requested",
        }
    }
}

macro_rules! dhcp_drops {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Why a frame was dropped without an answer. Each is a counter.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum DhcpDrop {
            $($(#[$doc])* $variant,)*
        }

        impl DhcpDrop {
            pub const ALL: &'static [DhcpDrop] = &[$(DhcpDrop::$variant,)*];

            /// The `/stats` name.
            pub fn name(self) -> &'static str {
                match self {
                    $(DhcpDrop::$variant => $name,)*
                }
            }
        }
    };
}

dhcp_drops! {
    /// Not an Ethernet/IPv4/UDP datagram to port 67 (the gateway should not pass these).
    NotDhcp => "dhcp_not_udp_67",
    /// Shorter than the fixed fields and the magic cookie.
    Truncated => "dhcp_truncated",
    /// `op` is not BOOTREQUEST.
    NotRequest => "dhcp_not_request",
    /// Hardware type other than Ethernet, or an address length other than 6.
    UnsupportedHardware => "dhcp_unsupported_hardware",
    BadMagicCookie => "dhcp_bad_magic_cookie",
    /// An option longer than its area, or a known option with a wrong length.
    BadOptions => "dhcp_bad_options",
    /// BOOTP (no option 53): not served.
    NoMessageType => "dhcp_no_message_type",
    /// A server's message type (OFFER, ACK, NAK) or an unknown one.
    UnexpectedMessageType => "dhcp_unexpected_message_type",
    /// `chaddr` is a group address or zero: no client has it.
    BadClientAddress => "dhcp_bad_client_address",
    /// The reply could not be built (a bug if ever non-zero).
    ReplyBuildFailed => "dhcp_reply_build_failed",
}

const DROPS: usize = DhcpDrop::ALL.len();

impl From<ParseError> for DhcpDrop {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::Truncated => DhcpDrop::Truncated,
            ParseError::NotRequest => DhcpDrop::NotRequest,
            ParseError::UnsupportedHardware => DhcpDrop::UnsupportedHardware,
            ParseError::BadMagicCookie => DhcpDrop::BadMagicCookie,
            ParseError::BadOptions => DhcpDrop::BadOptions,
            ParseError::NoMessageType => DhcpDrop::NoMessageType,
        }
    }
}

/// Every frame is counted once: `frames` is the sum of all the other counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DhcpCounters {
    pub frames: u64,
    pub offers: u64,
    pub acks: u64,
    pub inform_acks: u64,
    pub naks: u64,
    pub releases: u64,
    pub declines: u64,
    pub other_server: u64,
    pub ignored: u64,
    pub pool_exhausted: u64,
    pub dropped: [u64; DROPS],
}

impl DhcpCounters {
    pub fn dropped(&self, reason: DhcpDrop) -> u64 {
        self.dropped.get(reason as usize).copied().unwrap_or(0)
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// `(name, value)` for `/stats`.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        [
            ("dhcp_frames", self.frames),
            ("dhcp_offers", self.offers),
            ("dhcp_acks", self.acks),
            ("dhcp_inform_acks", self.inform_acks),
            ("dhcp_naks", self.naks),
            ("dhcp_releases", self.releases),
            ("dhcp_declines", self.declines),
            ("dhcp_other_server", self.other_server),
            ("dhcp_ignored", self.ignored),
            ("dhcp_pool_exhausted", self.pool_exhausted),
        ]
        .into_iter()
        .chain(DhcpDrop::ALL.iter().map(|&r| (r.name(), self.dropped(r))))
    }

    fn count(&mut self, outcome: DhcpOutcome) {
        let c = match outcome {
            DhcpOutcome::Offered(_) => &mut self.offers,
            DhcpOutcome::Acked(_) => &mut self.acks,
            DhcpOutcome::Informed => &mut self.inform_acks,
            DhcpOutcome::Naked(_) => &mut self.naks,
            DhcpOutcome::Released(_) => &mut self.releases,
            DhcpOutcome::Declined(_) => &mut self.declines,
            DhcpOutcome::OtherServer => &mut self.other_server,
            DhcpOutcome::Ignored => &mut self.ignored,
            DhcpOutcome::PoolExhausted => &mut self.pool_exhausted,
            DhcpOutcome::Dropped(r) => match self.dropped.get_mut(r as usize) {
                Some(c) => c,
                None => return,
            },
        };
        *c += 1;
    }
}

/// What a reply is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Offer(Ipv4Addr),
    Ack(Ipv4Addr),
    InformAck,
    Nak(NakReason),
}

/// Where a reply goes (RFC 2131 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Destination {
    mac: MacAddr,
    ip: Ipv4Addr,
    port: u16,
}

/// Addressing of one request: the frame's Ethernet source and IP source, with the message.
struct Request<'a> {
    msg: DhcpMessage<'a>,
    src_mac: MacAddr,
    src_ip: Ipv4Addr,
}

pub struct DhcpServer {
    cfg: DhcpConfig,
    pool: Pool,
    mask: [u8; 4],
    /// Option 6 data: the DNS servers' addresses back to back.
    dns: Vec<u8>,
    /// Option 119 data (RFC 3397), empty when there are no valid search domains.
    search: Vec<u8>,
    lease_secs: [u8; 4],
    mtu: Option<[u8; 2]>,
    counters: DhcpCounters,
    /// IPv4 identification of our replies.
    ident: u16,
}

impl DhcpServer {
    pub fn new(mut cfg: DhcpConfig) -> Self {
        cfg.prefix_len = cfg.prefix_len.min(32);
        let mask_bits = match cfg.prefix_len {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p)),
        };
        let (search, bad) = wire::encode_search_list(&cfg.search_domains);
        for d in bad {
            warn!("dhcp: search domain {d:?} is not a valid domain name; not announced");
        }
        let secs = cfg.lease_time.as_secs().clamp(1, u64::from(u32::MAX - 1));
        let secs = u32::try_from(secs).unwrap_or(u32::MAX - 1);
        cfg.lease_time = Duration::from_secs(u64::from(secs));
        let mut static_leases = Vec::with_capacity(cfg.static_leases.len());
        for &(ip, mac) in &cfg.static_leases {
            if ip == cfg.gateway_ip || ip == cfg.host_ip || !mac.is_unicast() {
                warn!("dhcp: static lease {ip} for {mac} ignored (gateway or host address, or group MAC)");
                continue;
            }
            if u32::from(ip) & mask_bits != u32::from(cfg.subnet) & mask_bits {
                warn!(
                    "dhcp: static lease {ip} for {mac} is outside {}/{}",
                    cfg.subnet, cfg.prefix_len
                );
            }
            static_leases.push((ip, mac));
        }
        cfg.static_leases = static_leases;
        let pool = Pool::new(
            cfg.subnet,
            cfg.prefix_len,
            &[cfg.gateway_ip, cfg.host_ip],
            &cfg.static_leases,
            cfg.offer_hold,
            cfg.decline_hold,
        );
        DhcpServer {
            mask: mask_bits.to_be_bytes(),
            dns: cfg.dns.iter().flat_map(|a| a.octets()).collect(),
            search,
            lease_secs: secs.to_be_bytes(),
            mtu: (cfg.mtu >= 68).then(|| cfg.mtu.to_be_bytes()),
            pool,
            cfg,
            counters: DhcpCounters::default(),
            ident: 0,
        }
    }

    pub fn config(&self) -> &DhcpConfig {
        &self.cfg
    }

    pub fn counters(&self) -> DhcpCounters {
        self.counters
    }

    /// Leases for `/leases`, by address: the gateway itself (as upstream lists it), every
    /// static lease, and the dynamic leases in force.
    pub fn leases(&self) -> Vec<(Ipv4Addr, MacAddr)> {
        let mut v: Vec<(Ipv4Addr, MacAddr)> = Vec::new();
        v.push((self.cfg.gateway_ip, self.cfg.gateway_mac));
        v.extend(self.cfg.static_leases.iter().copied());
        v.extend(self.pool.bound());
        v.sort_by_key(|&(ip, _)| ip);
        v.dedup_by_key(|&mut (ip, _)| ip);
        v
    }

    /// The dynamic binding of an address (offered, bound, released, expired, declined).
    pub fn binding(&self, ip: Ipv4Addr) -> Option<(MacAddr, BindingState)> {
        self.pool.binding(ip).map(|b| (b.mac, b.state))
    }

    /// Ends offers, leases and decline holds due by `now`. `process_frame` does it too; call
    /// it from a timer so that `/leases` does not list leases that ran out.
    pub fn expire(&mut self, now: Instant) {
        self.pool.expire(now);
    }

    /// When `expire` next has something to do (possibly earlier: a deadline that a renewal
    /// moved is skipped only when reached).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pool.next_deadline()
    }

    /// One guest frame that is UDP to port 67 (a whole Ethernet frame). Replies are pushed to
    /// `out` as whole Ethernet frames.
    pub fn process_frame(
        &mut self,
        frame: &[u8],
        now: Instant,
        out: &mut FrameBatch,
    ) -> DhcpOutcome {
        self.counters.frames += 1;
        self.pool.expire(now);
        let outcome = match parse_frame(frame) {
            Ok(req) => self.process(&req, now, out),
            Err(reason) => DhcpOutcome::Dropped(reason),
        };
        if let DhcpOutcome::Dropped(r) = outcome {
            log::trace!("dhcp: drop {}", r.name());
        }
        self.counters.count(outcome);
        outcome
    }

    fn process(&mut self, req: &Request<'_>, now: Instant, out: &mut FrameBatch) -> DhcpOutcome {
        let msg = &req.msg;
        let mac = msg.chaddr;
        if !mac.is_unicast() || mac == MacAddr::ZERO {
            return DhcpOutcome::Dropped(DhcpDrop::BadClientAddress);
        }
        let ours = msg
            .options
            .server_id
            .is_none_or(|s| s == self.cfg.gateway_ip);
        let Some(kind) = msg.message_type else {
            return DhcpOutcome::Dropped(DhcpDrop::UnexpectedMessageType);
        };
        match kind {
            MessageType::Discover => {
                let ip = match self.pool.static_ip(mac) {
                    Some(ip) => Some(ip),
                    None => self.pool.offer(mac, msg.options.requested_ip, now),
                };
                match ip {
                    Some(ip) => {
                        debug!("dhcp: DHCPDISCOVER from {mac}: offering {ip}");
                        self.send(req, Reply::Offer(ip), out, DhcpOutcome::Offered(ip))
                    }
                    None => {
                        debug!("dhcp: DHCPDISCOVER from {mac}: no free address left");
                        DhcpOutcome::PoolExhausted
                    }
                }
            }
            MessageType::Request => {
                if !ours {
                    // RFC 2131 §4.3.2: "If the DHCPREQUEST message contains a 'server
                    // identifier' option ... [not] the server's own, the server ... [treats]
                    // the message as notice that the client has declined the server's offer."
                    self.pool.withdraw_offer(mac);
                    return DhcpOutcome::OtherServer;
                }
                let claimed = msg
                    .options
                    .requested_ip
                    .or((!msg.ciaddr.is_unspecified()).then_some(msg.ciaddr));
                let result = match (claimed, self.pool.static_ip(mac)) {
                    (None, _) => Err(NakReason::NoAddress),
                    (Some(ip), Some(fixed)) if ip == fixed => Ok(ip),
                    (Some(ip), Some(_)) => Err(if self.pool.contains(ip) {
                        NakReason::NotYours
                    } else {
                        NakReason::WrongNetwork
                    }),
                    (Some(ip), None) => self
                        .pool
                        .claim(mac, ip, now, self.cfg.lease_time)
                        .map(|()| ip)
                        .map_err(|e| match e {
                            ClaimError::WrongNetwork => NakReason::WrongNetwork,
                            ClaimError::NotYours => NakReason::NotYours,
                        }),
                };
                match result {
                    Ok(ip) => {
                        debug!("dhcp: {ip} leased to {mac}");
                        self.send(req, Reply::Ack(ip), out, DhcpOutcome::Acked(ip))
                    }
                    Err(reason) => {
                        debug!(
                            "dhcp: DHCPNAK to {mac} for {}: {}",
                            claimed.unwrap_or(Ipv4Addr::UNSPECIFIED),
                            reason.message()
                        );
                        self.send(req, Reply::Nak(reason), out, DhcpOutcome::Naked(reason))
                    }
                }
            }
            MessageType::Decline => {
                if !ours {
                    return DhcpOutcome::OtherServer;
                }
                // RFC 2131 table 5: the declined address is in option 50.
                let Some(ip) = msg.options.requested_ip else {
                    return DhcpOutcome::Ignored;
                };
                if self.pool.decline(mac, ip, now) {
                    debug!("dhcp: {mac} declined {ip} (in use by someone else?): held back");
                    DhcpOutcome::Declined(ip)
                } else {
                    if self.pool.static_ip(mac) == Some(ip) {
                        debug!("dhcp: {mac} declined its static address {ip}");
                    }
                    DhcpOutcome::Ignored
                }
            }
            MessageType::Release => {
                if !ours {
                    return DhcpOutcome::OtherServer;
                }
                let ip = msg.ciaddr;
                if self.pool.static_ip(mac) == Some(ip) || self.pool.release(mac, ip) {
                    debug!("dhcp: {mac} released {ip}");
                    DhcpOutcome::Released(ip)
                } else {
                    DhcpOutcome::Ignored
                }
            }
            MessageType::Inform => self.send(req, Reply::InformAck, out, DhcpOutcome::Informed),
            MessageType::Offer | MessageType::Ack | MessageType::Nak => {
                DhcpOutcome::Dropped(DhcpDrop::UnexpectedMessageType)
            }
        }
    }

    /// RFC 2131 §4.1, "If the 'giaddr' field ... is zero", in order: DHCPNAK broadcast;
    /// non-zero `ciaddr` unicast there; broadcast bit set: broadcast; else unicast to
    /// `yiaddr` at `chaddr`. A relay (`giaddr` non-zero) gets the reply at port 67.
    fn destination(&self, req: &Request<'_>, reply: Reply, yiaddr: Ipv4Addr) -> Destination {
        let msg = &req.msg;
        let broadcast = Destination {
            mac: MacAddr::BROADCAST,
            ip: Ipv4Addr::BROADCAST,
            port: wire::CLIENT_PORT,
        };
        if !msg.giaddr.is_unspecified() {
            return Destination {
                mac: req.src_mac,
                ip: msg.giaddr,
                port: wire::SERVER_PORT,
            };
        }
        if matches!(reply, Reply::Nak(_)) {
            return broadcast;
        }
        let unicast = |ip| Destination {
            mac: msg.chaddr,
            ip,
            port: wire::CLIENT_PORT,
        };
        // A ciaddr that is no host address of ours (garbage in a DISCOVER) cannot be reached.
        if !msg.ciaddr.is_unspecified() && self.reachable(msg.ciaddr) {
            return unicast(msg.ciaddr);
        }
        if reply == Reply::InformAck {
            // RFC 2131 §4.3.5 wants ciaddr; a client that left it empty still has the
            // IP source it sent from.
            return if self.reachable(req.src_ip) {
                Destination {
                    mac: req.src_mac,
                    ip: req.src_ip,
                    port: wire::CLIENT_PORT,
                }
            } else {
                broadcast
            };
        }
        if msg.broadcast_flag() || yiaddr.is_unspecified() {
            return broadcast;
        }
        unicast(yiaddr)
    }

    /// A unicast address on our subnet (or a static lease's, wherever it is).
    fn reachable(&self, ip: Ipv4Addr) -> bool {
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
            return false;
        }
        let m = u32::from_be_bytes(self.mask);
        let net = u32::from(self.cfg.subnet) & m;
        let a = u32::from(ip);
        (a & m == net && a != net && a != net | !m)
            || self.cfg.static_leases.iter().any(|&(s, _)| s == ip)
    }

    fn send(
        &mut self,
        req: &Request<'_>,
        reply: Reply,
        out: &mut FrameBatch,
        outcome: DhcpOutcome,
    ) -> DhcpOutcome {
        match self.emit(req, reply, out) {
            Ok(()) => outcome,
            Err(e) => {
                warn!("dhcp: cannot build a reply: {e}");
                DhcpOutcome::Dropped(DhcpDrop::ReplyBuildFailed)
            }
        }
    }

    fn emit(
        &mut self,
        req: &Request<'_>,
        reply: Reply,
        out: &mut FrameBatch,
    ) -> Result<(), WireError> {
        let msg = &req.msg;
        let (message_type, yiaddr, ciaddr) = match reply {
            Reply::Offer(ip) => (MessageType::Offer, ip, Ipv4Addr::UNSPECIFIED),
            Reply::Ack(ip) => (MessageType::Ack, ip, msg.ciaddr),
            Reply::InformAck => (MessageType::Ack, Ipv4Addr::UNSPECIFIED, msg.ciaddr),
            Reply::Nak(_) => (
                MessageType::Nak,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
            ),
        };
        let mut flags = msg.flags;
        if matches!(reply, Reply::Nak(_)) && !msg.giaddr.is_unspecified() {
            // RFC 2131 §4.3.2: a DHCPNAK through a relay has the broadcast bit set.
            flags |= wire::FLAG_BROADCAST;
        }
        let header = ReplyHeader {
            xid: msg.xid,
            flags,
            ciaddr,
            yiaddr,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: msg.giaddr,
            chaddr_field: msg.chaddr_field,
        };

        // Option data that is not stored in `self`.
        let router = self.cfg.gateway_ip.octets();
        let server_id = self.cfg.gateway_ip.octets();
        let message_type = [message_type as u8];
        let mut options = OptionList::default();
        match reply {
            Reply::Offer(_) | Reply::Ack(_) | Reply::InformAck => {
                options.push(OptionCode::SUBNET_MASK, &self.mask);
                options.push(OptionCode::ROUTER, &router);
                if !self.dns.is_empty() {
                    options.push(OptionCode::DNS_SERVERS, &self.dns);
                }
                if let Some(d) = self.cfg.domain_name.as_deref().filter(|d| !d.is_empty()) {
                    options.push(OptionCode::DOMAIN_NAME, d.as_bytes());
                }
                if let Some(mtu) = &self.mtu {
                    options.push(OptionCode::INTERFACE_MTU, mtu);
                }
                // RFC 2131 §4.3.5: no lease time in the answer to a DHCPINFORM.
                if reply != Reply::InformAck {
                    options.push(OptionCode::LEASE_TIME, &self.lease_secs);
                }
                options.push(OptionCode::MESSAGE_TYPE, &message_type);
                options.push(OptionCode::SERVER_ID, &server_id);
            }
            Reply::Nak(reason) => {
                // RFC 2131 table 3: a DHCPNAK carries the server identifier, SHOULD carry a
                // message, and nothing else of ours.
                options.push(OptionCode::MESSAGE_TYPE, &message_type);
                options.push(OptionCode::SERVER_ID, &server_id);
                options.push(OptionCode::MESSAGE, reason.message().as_bytes());
            }
        }
        // RFC 6842: the client identifier is echoed; RFC 3046 §2.2: so is the relay agent
        // information (upstream copies both).
        if let Some(id) = msg.options.client_id {
            options.push(OptionCode::CLIENT_ID, id);
        }
        if let Some(info) = msg.options.relay_agent_info {
            options.push(OptionCode::RELAY_AGENT_INFO, info);
        }
        if !matches!(reply, Reply::Nak(_)) && !self.search.is_empty() {
            options.push(OptionCode::DOMAIN_SEARCH, &self.search);
        }
        // RFC 2131 §2: the client takes at least 576 bytes, more if option 57 says so, and no
        // more than fits the link. Optional names go first when the message is too big.
        let limit = usize::from(msg.options.max_message_size.unwrap_or(0))
            .max(wire::MIN_MAX_MESSAGE_SIZE)
            .min(usize::from(self.cfg.mtu).max(wire::MIN_MAX_MESSAGE_SIZE))
            - wire::IP_UDP_HEADERS;
        for code in [OptionCode::DOMAIN_SEARCH, OptionCode::DOMAIN_NAME] {
            if wire::reply_len(&options) > limit && options.contains(code) {
                debug!(
                    "dhcp: reply to {} too long for the client: option {code} left out",
                    msg.chaddr
                );
                options.remove(code);
            }
        }

        let dst = self.destination(req, reply, yiaddr);
        let frame = Ipv4FrameRepr {
            src_mac: self.cfg.gateway_mac,
            dst_mac: dst.mac,
            src_ip: self.cfg.gateway_ip,
            dst_ip: dst.ip,
            ttl: 64,
            ident: self.ident,
            dont_frag: false,
            dscp_ecn: 0,
        };
        self.ident = self.ident.wrapping_add(1);
        let udp = UdpRepr {
            src_port: wire::SERVER_PORT,
            dst_port: dst.port,
        };
        let payload_len = wire::reply_len(&options);
        let at = UdpRepr::frame_payload_offset();
        out.try_push_with(at + payload_len, |buf| {
            let n = wire::emit_reply(
                buf.get_mut(at..).ok_or(WireError::Exhausted)?,
                &header,
                &options,
            )?;
            udp.emit_frame(buf, &frame, n)
        })?;
        Ok(())
    }
}

/// Ethernet, IPv4, UDP to port 67, then the DHCP message.
fn parse_frame(frame: &[u8]) -> Result<Request<'_>, DhcpDrop> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DhcpDrop::NotDhcp)?;
    if eth.ethertype() != EtherType::IPV4 {
        return Err(DhcpDrop::NotDhcp);
    }
    let payload = frame
        .get(EthernetFrame::<&[u8]>::HEADER_LEN..)
        .unwrap_or_default();
    let ip = Ipv4Packet::new_checked(payload).map_err(|_| DhcpDrop::NotDhcp)?;
    if ip.protocol() != IpProtocol::UDP || ip.is_fragment() {
        return Err(DhcpDrop::NotDhcp);
    }
    let udp = UdpPacket::new_checked(ip.payload_slice()).map_err(|_| DhcpDrop::NotDhcp)?;
    if udp.dst_port() != wire::SERVER_PORT {
        return Err(DhcpDrop::NotDhcp);
    }
    let msg = DhcpMessage::parse(udp.payload_slice())?;
    Ok(Request {
        msg,
        src_mac: eth.src(),
        src_ip: ip.src(),
    })
}
