//! The NAT policy: where a guest's packet to a given address may go on the host.
//!
//! Pure: the shard asks [`NatTable::resolve`] once per new flow and then dials, pings or
//! refuses. Unlike upstream, an address inside the virtual subnet that is not in the NAT
//! table (the gateway itself, an unused address) is never dialled on the host's network:
//! it gets what a real LAN would give (RST, port unreachable, no answer).
//!
//! ```text
//!   dst ─┬─ in the NAT table (192.168.127.254) ──────────> Host(127.0.0.1)
//!        ├─ 0/8, 127/8, 224/4, 240/4 ─────────────────────> Unroutable
//!        ├─ 255.255.255.255, subnet broadcast ────────────> Broadcast
//!        ├─ the gateway or one of its own virtual IPs ────> Gateway
//!        ├─ elsewhere in the virtual subnet ──────────────> InSubnetUnused
//!        ├─ 169.254/16 without -ec2-metadata-access ──────> LinkLocalRefused
//!        └─ anything else ────────────────────────────────> Host(dst)
//! ```

use std::net::Ipv4Addr;

/// What the NAT makes of a destination address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Dial / send to / ping this host address.
    Host(Ipv4Addr),
    /// The gateway's own address (or a virtual IP it owns that is not NATed): its
    /// services, if any, answer; otherwise RST / port unreachable.
    Gateway,
    /// Inside the virtual subnet but nobody's: never dialled.
    InSubnetUnused,
    /// 169.254.0.0/16 (cloud metadata services) without `-ec2-metadata-access`.
    LinkLocalRefused,
    /// A broadcast address: never forwarded.
    Broadcast,
    /// 0.0.0.0/8, loopback, multicast or reserved: never forwarded.
    Unroutable,
}

/// Virtual address → host address, plus what the virtual subnet looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatTable {
    map: Vec<(Ipv4Addr, Ipv4Addr)>,
    subnet: Ipv4Addr,
    prefix_len: u8,
    gateway_ips: Vec<Ipv4Addr>,
    ec2_metadata_access: bool,
}

impl Default for NatTable {
    /// Upstream gvproxy's defaults: subnet 192.168.127.0/24, gateway .1, and
    /// 192.168.127.254 → 127.0.0.1.
    fn default() -> Self {
        let mut t = NatTable::new(
            Ipv4Addr::new(192, 168, 127, 0),
            24,
            vec![Ipv4Addr::new(192, 168, 127, 1)],
        );
        t.insert(Ipv4Addr::new(192, 168, 127, 254), Ipv4Addr::LOCALHOST);
        t
    }
}

fn mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

impl NatTable {
    /// An empty table for `subnet/prefix_len` whose gateway owns `gateway_ips` (its own
    /// address and virtual IPs; those also in the table are NATed instead).
    pub fn new(subnet: Ipv4Addr, prefix_len: u8, gateway_ips: Vec<Ipv4Addr>) -> NatTable {
        let prefix_len = prefix_len.min(32);
        NatTable {
            map: Vec::new(),
            subnet: Ipv4Addr::from(u32::from(subnet) & mask(prefix_len)),
            prefix_len,
            gateway_ips,
            ec2_metadata_access: false,
        }
    }

    /// Maps `virtual_ip` to `host_ip` (replacing an earlier entry for it).
    pub fn insert(&mut self, virtual_ip: Ipv4Addr, host_ip: Ipv4Addr) {
        match self.map.iter_mut().find(|(v, _)| *v == virtual_ip) {
            Some(e) => e.1 = host_ip,
            None => self.map.push((virtual_ip, host_ip)),
        }
    }

    /// Allow 169.254.0.0/16 (`-ec2-metadata-access`).
    pub fn set_ec2_metadata_access(&mut self, allow: bool) {
        self.ec2_metadata_access = allow;
    }

    pub fn ec2_metadata_access(&self) -> bool {
        self.ec2_metadata_access
    }

    /// The host address a virtual address maps to.
    pub fn lookup(&self, virtual_ip: Ipv4Addr) -> Option<Ipv4Addr> {
        self.map
            .iter()
            .find(|(v, _)| *v == virtual_ip)
            .map(|&(_, h)| h)
    }

    /// `(virtual, host)` pairs.
    pub fn entries(&self) -> impl Iterator<Item = (Ipv4Addr, Ipv4Addr)> + '_ {
        self.map.iter().copied()
    }

    pub fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.subnet)
    }

    fn subnet_broadcast(&self) -> Option<Ipv4Addr> {
        // RFC 3021: /31 and /32 have no directed broadcast.
        (self.prefix_len <= 30)
            .then(|| Ipv4Addr::from(u32::from(self.subnet) | !mask(self.prefix_len)))
    }

    /// Where a guest packet to `dst` goes.
    pub fn resolve(&self, dst: Ipv4Addr) -> Destination {
        if let Some(host) = self.lookup(dst) {
            return Destination::Host(host);
        }
        if dst.is_broadcast() || Some(dst) == self.subnet_broadcast() {
            return Destination::Broadcast;
        }
        let first = dst.octets()[0];
        // RFC 1122 §3.2.1.3 / RFC 6890: "this network", loopback, multicast and the
        // reserved 240/4 are never forwarded.
        if first == 0 || dst.is_loopback() || dst.is_multicast() || first >= 240 {
            return Destination::Unroutable;
        }
        if self.gateway_ips.contains(&dst) {
            return Destination::Gateway;
        }
        if self.in_subnet(dst) {
            return Destination::InSubnetUnused;
        }
        if dst.is_link_local() && !self.ec2_metadata_access {
            return Destination::LinkLocalRefused;
        }
        Destination::Host(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
        Ipv4Addr::new(a, b, c, d)
    }

    #[test]
    fn default_table_maps_the_host_alias_to_loopback() {
        let t = NatTable::default();
        assert_eq!(
            t.resolve(ip(192, 168, 127, 254)),
            Destination::Host(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(t.lookup(ip(192, 168, 127, 254)), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(t.resolve(ip(192, 168, 127, 1)), Destination::Gateway);
        assert_eq!(
            t.resolve(ip(192, 168, 127, 77)),
            Destination::InSubnetUnused
        );
        assert_eq!(t.resolve(ip(192, 168, 127, 0)), Destination::InSubnetUnused);
        assert_eq!(t.resolve(ip(192, 168, 127, 255)), Destination::Broadcast);
        assert_eq!(t.resolve(Ipv4Addr::BROADCAST), Destination::Broadcast);
        assert_eq!(
            t.resolve(ip(93, 184, 216, 34)),
            Destination::Host(ip(93, 184, 216, 34))
        );
        assert_eq!(
            t.resolve(ip(192, 168, 128, 1)),
            Destination::Host(ip(192, 168, 128, 1))
        );
        for u in [
            ip(0, 0, 0, 0),
            ip(0, 1, 2, 3),
            ip(127, 0, 0, 1),
            ip(224, 0, 0, 251),
            ip(240, 0, 0, 1),
        ] {
            assert_eq!(t.resolve(u), Destination::Unroutable, "{u}");
        }
        assert_eq!(t.entries().count(), 1);
    }

    #[test]
    fn link_local_needs_the_flag() {
        let mut t = NatTable::default();
        let md = ip(169, 254, 169, 254);
        assert_eq!(t.resolve(md), Destination::LinkLocalRefused);
        assert!(!t.ec2_metadata_access());
        t.set_ec2_metadata_access(true);
        assert_eq!(t.resolve(md), Destination::Host(md));
    }

    #[test]
    fn entries_win_and_replace() {
        let mut t = NatTable::new(ip(10, 0, 5, 9), 16, vec![ip(10, 0, 0, 1), ip(10, 0, 0, 3)]);
        assert!(t.in_subnet(ip(10, 0, 200, 1)));
        assert!(!t.in_subnet(ip(10, 1, 0, 1)));
        assert_eq!(t.resolve(ip(10, 0, 0, 3)), Destination::Gateway);
        t.insert(ip(10, 0, 0, 3), ip(127, 0, 0, 2));
        assert_eq!(
            t.resolve(ip(10, 0, 0, 3)),
            Destination::Host(ip(127, 0, 0, 2))
        );
        t.insert(ip(10, 0, 0, 3), ip(127, 0, 0, 5));
        assert_eq!(
            t.resolve(ip(10, 0, 0, 3)),
            Destination::Host(ip(127, 0, 0, 5))
        );
        assert_eq!(t.entries().count(), 1);
        // A NAT entry outside the subnet works too (and beats the link-local rule).
        t.insert(ip(169, 254, 1, 1), ip(127, 0, 0, 9));
        assert_eq!(
            t.resolve(ip(169, 254, 1, 1)),
            Destination::Host(ip(127, 0, 0, 9))
        );
        assert_eq!(t.resolve(ip(10, 0, 255, 255)), Destination::Broadcast);
    }

    #[test]
    fn tiny_and_odd_prefixes() {
        let t = NatTable::new(ip(10, 0, 2, 2), 31, vec![ip(10, 0, 2, 2)]);
        assert_eq!(t.resolve(ip(10, 0, 2, 3)), Destination::InSubnetUnused);
        assert_eq!(
            t.resolve(ip(10, 0, 2, 4)),
            Destination::Host(ip(10, 0, 2, 4))
        );
        let t = NatTable::new(ip(10, 0, 2, 2), 32, vec![]);
        assert_eq!(t.resolve(ip(10, 0, 2, 2)), Destination::InSubnetUnused);
        let t = NatTable::new(ip(10, 0, 2, 2), 0, vec![]);
        assert_eq!(t.resolve(ip(8, 8, 8, 8)), Destination::InSubnetUnused);
        let t = NatTable::new(ip(10, 0, 2, 2), 200, vec![]);
        assert_eq!(t.resolve(ip(10, 0, 2, 2)), Destination::InSubnetUnused);
    }
}
