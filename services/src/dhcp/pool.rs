//! The address pool: which address each client (by MAC) has, in which state, until when.
//!
//! Every dynamic address has at most one [`Binding`]; each client (MAC) at most one binding
//! too (`by_mac`). A binding's life:
//!
//! ```text
//!   DISCOVER ─> Offered ──REQUEST──> Bound ──RELEASE──> Released ─┐
//!                 │  offer_hold        │  lease_time              │ free for anyone; the
//!                 └──> (gone)          └──> Expired ─────────────-┤ same client gets it back
//!                                                                 │ if still free
//!   DECLINE (of the client's own address) ─> Declined ─ decline_hold ─> (gone)
//! ```
//!
//! Allocation, after static leases (RFC 2131 §4.3.1): the client's own binding; else its
//! requested address if free; else the first free address in order (never used, released, or
//! a declined one whose hold ended); only when none is left, the address of the client whose
//! lease expired longest ago. An expired lease is reused last because a client that took its
//! lease and quit (`udhcpc -q`, as gvforwarder runs it) may still be using the address.
//!
//! The state is bounded: one binding per address, and at most [`MAX_BINDINGS`] of them, so a
//! guest that sends DISCOVERs from random MACs exhausts the pool, not the host's memory.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use stack::wire::MacAddr;

/// Upper bound on dynamic bindings (a /16 worth of guests).
pub const MAX_BINDINGS: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingState {
    /// Offered to `mac`, held for it until the deadline (RFC 2131 §4.3.1 "the server SHOULD
    /// reserve the offered address").
    Offered { until: Option<Instant> },
    /// Leased to `mac` until the deadline (`None`: the lease outlives `Instant`'s range).
    Bound { until: Option<Instant> },
    /// Given back by `mac` with DHCPRELEASE: free, remembered for that client.
    Released,
    /// `mac`'s lease ran out at `since`: reused only when nothing else is free.
    Expired { since: Instant },
    /// `mac` said the address is in use by someone else (DHCPDECLINE): not handed out
    /// until the deadline.
    Declined { until: Option<Instant> },
}

impl BindingState {
    fn deadline(&self) -> Option<Instant> {
        match *self {
            BindingState::Offered { until }
            | BindingState::Bound { until }
            | BindingState::Declined { until } => until,
            BindingState::Released | BindingState::Expired { .. } => None,
        }
    }

    /// Held for its client: not available to another one.
    fn is_active(&self) -> bool {
        matches!(
            self,
            BindingState::Offered { .. } | BindingState::Bound { .. }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub mac: MacAddr,
    pub state: BindingState,
}

/// Why a client may not have the address it asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClaimError {
    /// Not a host address of our subnet.
    WrongNetwork,
    /// Held by another client, reserved (gateway, host alias, a static lease), declined, or
    /// not the address this client has.
    NotYours,
}

#[derive(Debug)]
pub struct Pool {
    network: u32,
    prefix_len: u8,
    /// First and last dynamic host address; `first > last` when the subnet has none.
    first: u32,
    last: u32,
    /// Addresses never handed out dynamically: the gateway, the host alias, static leases.
    reserved: BTreeSet<u32>,
    static_by_mac: HashMap<MacAddr, Ipv4Addr>,
    bindings: BTreeMap<u32, Binding>,
    by_mac: HashMap<MacAddr, u32>,
    /// Deadlines of bindings, earliest first; stale entries (the binding moved on) are
    /// skipped when popped.
    deadlines: BinaryHeap<Reverse<(Instant, u32)>>,
    offer_hold: Duration,
    decline_hold: Duration,
}

fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

fn deadline(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

impl Pool {
    /// `prefix_len` is clamped to 32. Static leases, the gateway and `host_ip` are kept out of
    /// the dynamic range.
    pub fn new(
        subnet: Ipv4Addr,
        prefix_len: u8,
        reserved: &[Ipv4Addr],
        static_leases: &[(Ipv4Addr, MacAddr)],
        offer_hold: Duration,
        decline_hold: Duration,
    ) -> Pool {
        let prefix_len = prefix_len.min(32);
        let m = mask(prefix_len);
        let network = u32::from(subnet) & m;
        let broadcast = network | !m;
        // RFC 950: the all-zeros and all-ones host numbers are the network and broadcast
        // addresses; /31 and /32 have no other host numbers in this reading.
        let (first, last) = if prefix_len >= 31 {
            (1, 0)
        } else {
            (network + 1, broadcast - 1)
        };
        let mut static_by_mac = HashMap::new();
        let mut reserved_set: BTreeSet<u32> = reserved.iter().map(|&a| u32::from(a)).collect();
        for &(ip, mac) in static_leases {
            static_by_mac.entry(mac).or_insert(ip);
            reserved_set.insert(u32::from(ip));
        }
        Pool {
            network,
            prefix_len,
            first,
            last,
            reserved: reserved_set,
            static_by_mac,
            bindings: BTreeMap::new(),
            by_mac: HashMap::new(),
            deadlines: BinaryHeap::new(),
            offer_hold,
            decline_hold,
        }
    }

    pub fn static_ip(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.static_by_mac.get(&mac).copied()
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == self.network
    }

    /// A host address of the subnet that may be leased dynamically at all.
    fn is_dynamic(&self, ip: u32) -> bool {
        (self.first..=self.last).contains(&ip) && !self.reserved.contains(&ip)
    }

    pub fn binding(&self, ip: Ipv4Addr) -> Option<Binding> {
        self.bindings.get(&u32::from(ip)).copied()
    }

    /// The client's binding, whatever its state.
    pub fn binding_of(&self, mac: MacAddr) -> Option<(Ipv4Addr, Binding)> {
        let ip = *self.by_mac.get(&mac)?;
        let b = self.bindings.get(&ip)?;
        Some((Ipv4Addr::from(ip), *b))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Leases in force (bound), by address.
    pub fn bound(&self) -> impl Iterator<Item = (Ipv4Addr, MacAddr)> + '_ {
        self.bindings
            .iter()
            .filter(|(_, b)| matches!(b.state, BindingState::Bound { .. }))
            .map(|(&ip, b)| (Ipv4Addr::from(ip), b.mac))
    }

    /// DHCPDISCOVER: picks an address for `mac` and holds it as offered. A bound client keeps
    /// its lease (it is offered the same address). `None`: the pool is exhausted.
    pub fn offer(
        &mut self,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: Instant,
    ) -> Option<Ipv4Addr> {
        let ip = self.choose(mac, requested)?;
        if let Some(b) = self.bindings.get(&ip) {
            if b.mac == mac && matches!(b.state, BindingState::Bound { .. }) {
                return Some(Ipv4Addr::from(ip));
            }
        }
        let until = deadline(now, self.offer_hold);
        self.set(ip, mac, BindingState::Offered { until });
        Some(Ipv4Addr::from(ip))
    }

    fn choose(&self, mac: MacAddr, requested: Option<Ipv4Addr>) -> Option<u32> {
        // RFC 2131 §4.3.1, in its order: the client's current or previous binding...
        if let Some(&ip) = self.by_mac.get(&mac) {
            if self.is_dynamic(ip) {
                return Some(ip);
            }
        }
        // ...the requested address, if valid and not allocated...
        if let Some(r) = requested.map(u32::from) {
            if self.is_dynamic(r) && self.free_for(r, mac) {
                return Some(r);
            }
        }
        // ...else a new address: the first free one in order.
        if let Some(ip) = self.first_free() {
            return Some(ip);
        }
        // Last resort: the lease that expired longest ago.
        self.bindings
            .iter()
            .filter_map(|(&ip, b)| match b.state {
                BindingState::Expired { since } => Some((since, ip)),
                _ => None,
            })
            .min()
            .map(|(_, ip)| ip)
    }

    /// Free for `mac` in the first rank: no binding, a released one, or `mac`'s own expired one.
    fn free_for(&self, ip: u32, mac: MacAddr) -> bool {
        match self.bindings.get(&ip) {
            None => true,
            Some(b) => match b.state {
                BindingState::Released => true,
                BindingState::Expired { .. } => b.mac == mac,
                _ => false,
            },
        }
    }

    fn first_free(&self) -> Option<u32> {
        if self.bindings.len() >= MAX_BINDINGS {
            // No room for a new binding: only a released one can be reused.
            return self
                .bindings
                .iter()
                .find(|(&ip, b)| b.state == BindingState::Released && self.is_dynamic(ip))
                .map(|(&ip, _)| ip);
        }
        // Every address before the answer is reserved or has a binding, so this visits at
        // most `reserved + bindings + 1` addresses.
        let mut ip = self.first;
        while ip <= self.last {
            let taken = self.reserved.contains(&ip)
                || self
                    .bindings
                    .get(&ip)
                    .is_some_and(|b| b.state != BindingState::Released);
            if !taken {
                return Some(ip);
            }
            ip = ip.checked_add(1)?;
        }
        None
    }

    /// DHCPREQUEST (any state) or an ACK'd claim: `mac` wants `ip`. On success the address is
    /// bound to `mac` for `lease` from `now`.
    pub fn claim(
        &mut self,
        mac: MacAddr,
        ip: Ipv4Addr,
        now: Instant,
        lease: Duration,
    ) -> Result<(), ClaimError> {
        let a = u32::from(ip);
        if !self.contains(ip) {
            return Err(ClaimError::WrongNetwork);
        }
        if !self.is_dynamic(a) {
            return Err(ClaimError::NotYours);
        }
        match self.binding_of(mac) {
            // An offered or bound client must ask for that address (RFC 2131 §4.3.2).
            Some((own, b)) if b.state.is_active() && own != ip => return Err(ClaimError::NotYours),
            _ => {}
        }
        let ok = match self.bindings.get(&a) {
            None => self.bindings.len() < MAX_BINDINGS || self.by_mac.contains_key(&mac),
            Some(b) if b.mac == mac => !matches!(b.state, BindingState::Declined { .. }),
            Some(b) => b.state == BindingState::Released,
        };
        if !ok {
            return Err(ClaimError::NotYours);
        }
        let until = deadline(now, lease);
        self.set(a, mac, BindingState::Bound { until });
        Ok(())
    }

    /// A client that chose another server (RFC 2131 §4.3.2): its offer is withdrawn.
    pub fn withdraw_offer(&mut self, mac: MacAddr) -> bool {
        match self.binding_of(mac) {
            Some((ip, b)) if matches!(b.state, BindingState::Offered { .. }) => {
                self.remove(u32::from(ip));
                true
            }
            _ => false,
        }
    }

    /// DHCPRELEASE of `ip` by `mac`: only the client's own bound (or offered) address.
    pub fn release(&mut self, mac: MacAddr, ip: Ipv4Addr) -> bool {
        match self.binding_of(mac) {
            Some((own, b)) if own == ip && b.state.is_active() => {
                self.set(u32::from(ip), mac, BindingState::Released);
                true
            }
            _ => false,
        }
    }

    /// DHCPDECLINE of `ip` by `mac` (RFC 2131 §4.3.3: "the server MUST mark the network
    /// address as not available"); only the client's own address, so that a guest cannot
    /// take addresses away from others.
    pub fn decline(&mut self, mac: MacAddr, ip: Ipv4Addr, now: Instant) -> bool {
        match self.binding_of(mac) {
            Some((own, b)) if own == ip && b.state.is_active() => {
                let a = u32::from(ip);
                let until = deadline(now, self.decline_hold);
                self.set(a, mac, BindingState::Declined { until });
                // A declined address belongs to nobody.
                self.by_mac.remove(&mac);
                true
            }
            _ => false,
        }
    }

    /// Ends offers, leases and decline holds whose deadline is `now` or earlier.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((at, ip))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(b) = self.bindings.get(&ip).copied() else {
                continue;
            };
            if b.state.deadline() != Some(at) {
                // Stale: the binding changed after this deadline was queued.
                continue;
            }
            match b.state {
                BindingState::Offered { .. } | BindingState::Declined { .. } => self.remove(ip),
                BindingState::Bound { .. } => {
                    self.set(ip, b.mac, BindingState::Expired { since: at });
                }
                BindingState::Released | BindingState::Expired { .. } => {}
            }
        }
    }

    /// The earliest pending deadline, if any (for a caller that schedules `expire`).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    fn set(&mut self, ip: u32, mac: MacAddr, state: BindingState) {
        // The client's other binding, and the address's other client, are forgotten.
        if let Some(old_ip) = self.by_mac.get(&mac).copied() {
            if old_ip != ip {
                self.bindings.remove(&old_ip);
            }
        }
        if let Some(old) = self.bindings.get(&ip) {
            if old.mac != mac && self.by_mac.get(&old.mac) == Some(&ip) {
                self.by_mac.remove(&old.mac);
            }
        }
        self.bindings.insert(ip, Binding { mac, state });
        self.by_mac.insert(mac, ip);
        if let Some(at) = state.deadline() {
            self.deadlines.push(Reverse((at, ip)));
            self.compact_deadlines();
        }
    }

    fn remove(&mut self, ip: u32) {
        if let Some(b) = self.bindings.remove(&ip) {
            if self.by_mac.get(&b.mac) == Some(&ip) {
                self.by_mac.remove(&b.mac);
            }
        }
    }

    /// Keeps the heap within a constant factor of the bindings (renewals push a deadline
    /// each and leave the old one stale).
    fn compact_deadlines(&mut self) {
        if self.deadlines.len() > 2 * self.bindings.len() + 64 {
            self.deadlines = self
                .bindings
                .iter()
                .filter_map(|(&ip, b)| b.state.deadline().map(|at| Reverse((at, ip))))
                .collect();
        }
    }

    #[cfg(test)]
    pub fn deadlines_len(&self) -> usize {
        self.deadlines.len()
    }
}
