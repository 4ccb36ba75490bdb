//! Named drop reasons and their counters.
//!
//! As in consomme: every frame the stack refuses is counted under exactly one reason, and
//! every reason is a line in `/stats` (its snake_case name).

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Why a frame was dropped.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum DropReason {
            $($(#[$doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in declaration order (the counter index order).
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// The `/stats` name.
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header.
    EthernetTooShort => "ethernet_too_short",
    /// Source MAC is a group address, or is the gateway's own.
    EthernetBadSource => "ethernet_bad_source",
    /// Unicast destination MAC that is not the gateway's.
    EthernetNotForUs => "ethernet_not_for_us",
    /// IEEE 802.1Q / 802.1ad tagged: we do not switch VLANs.
    VlanTagged => "vlan_tagged",
    /// Any EtherType other than IPv4, ARP, IPv6 (and 802.3 length fields).
    UnknownEthertype => "unknown_ethertype",
    /// IPv6 is not implemented yet.
    Ipv6Unsupported => "ipv6_unsupported",
    /// Truncated ARP, or ARP for other than Ethernet/IPv4, or a group sender address.
    ArpMalformed => "arp_malformed",
    /// A request for an address the gateway does not own.
    ArpNotForUs => "arp_not_for_us",
    /// Not a request (we send no requests, so replies are unsolicited).
    ArpUnsupportedOp => "arp_unsupported_op",
    /// Gratuitous ARP / announcement (sender IP == target IP): nothing to answer or learn.
    ArpGratuitous => "arp_gratuitous",
    /// Bad version, header length or total length.
    Ipv4Malformed => "ipv4_malformed",
    Ipv4BadChecksum => "ipv4_bad_checksum",
    /// Fragments are not reassembled.
    Ipv4Fragment => "ipv4_fragment",
    /// Source is multicast, broadcast or loopback, or 0.0.0.0 outside UDP.
    Ipv4BadSource => "ipv4_bad_source",
    /// Destination is 0.0.0.0 or loopback.
    Ipv4BadDestination => "ipv4_bad_destination",
    /// TTL ran out where we forward (used by the NAT layer).
    Ipv4TtlExpired => "ipv4_ttl_expired",
    /// Broadcast/multicast the gateway does not serve, or unicast IP in a link broadcast.
    Ipv4NotForGateway => "ipv4_not_for_gateway",
    /// Not TCP, UDP or ICMP.
    Ipv4UnsupportedProtocol => "ipv4_unsupported_protocol",
    IcmpMalformed => "icmp_malformed",
    IcmpBadChecksum => "icmp_bad_checksum",
    /// ICMP to a gateway address other than an echo request.
    IcmpUnsupportedType => "icmp_unsupported_type",
    UdpMalformed => "udp_malformed",
    UdpBadChecksum => "udp_bad_checksum",
    /// Bad data offset or a malformed option.
    TcpMalformed => "tcp_malformed",
    TcpBadChecksum => "tcp_bad_checksum",
    /// No way to reach the destination (used by the NAT layer).
    NoRoute => "no_route",
    /// A reply could not be built (a bug if ever non-zero).
    ReplyBuildFailed => "reply_build_failed",
    /// The shard owning the flow is too far behind (its input queue is full).
    ShardBusy => "shard_busy",
}

/// Number of drop reasons.
pub const DROP_REASONS: usize = DropReason::ALL.len();

/// One counter per [`DropReason`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropCounters([u64; DROP_REASONS]);

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters([0; DROP_REASONS])
    }
}

impl DropCounters {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn count(&mut self, r: DropReason) {
        if let Some(c) = self.0.get_mut(r as usize) {
            *c += 1;
        }
    }

    pub fn get(&self, r: DropReason) -> u64 {
        self.0.get(r as usize).copied().unwrap_or(0)
    }

    /// `(name, count)` for every reason, zeros included, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r.name(), self.get(r)))
    }

    /// Add another set of counters (e.g. summing shards).
    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_unique_snake_case_and_indexed_in_order() {
        let mut seen = HashSet::new();
        for (i, &r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r as usize, i);
            let n = r.name();
            assert!(seen.insert(n), "duplicate {n}");
            assert!(
                n.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
                "{n}"
            );
        }
        assert_eq!(DROP_REASONS, seen.len());
    }

    #[test]
    fn count_get_add_total() {
        let mut a = DropCounters::new();
        a.count(DropReason::Ipv4Fragment);
        a.count(DropReason::Ipv4Fragment);
        a.count(DropReason::ArpNotForUs);
        assert_eq!(a.get(DropReason::Ipv4Fragment), 2);
        assert_eq!(a.get(DropReason::TcpMalformed), 0);
        assert_eq!(a.total(), 3);
        let mut b = DropCounters::default();
        b.count(DropReason::ArpNotForUs);
        b.add(&a);
        assert_eq!(b.get(DropReason::ArpNotForUs), 2);
        assert_eq!(b.total(), 4);
        let listed: Vec<_> = b.iter().filter(|&(_, n)| n > 0).collect();
        assert_eq!(listed, vec![("arp_not_for_us", 2), ("ipv4_fragment", 2)]);
        assert_eq!(b.iter().count(), DROP_REASONS);
    }
}
