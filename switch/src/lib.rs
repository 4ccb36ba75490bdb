//! The virtual L2 switch: a pure forwarding decision plus counters.
//!
//! ```text
//!   VM link 1 ──┐                       ┌── VM link 1
//!   VM link 2 ──┼─▶ learn(src) ─ decide(dst) ─┼── VM link 2
//!   gateway   ──┘    MAC table (CAM)    └── gateway
//! ```
//!
//! Every port is a number handed out by [`Switch::add_port`]; the gateway is a port like
//! any other whose MAC is pinned in the table. Source MACs are learned per frame and age
//! out after [`AGING`]; a port's entries go when the port goes. Broadcast, multicast and
//! unknown unicast are flooded to every other port, as a real switch does (upstream
//! gvproxy drops the last two). The switch does no I/O and reads no clock: `now` comes in.

#![forbid(unsafe_code)]

pub mod pcap;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use stack::wire::MacAddr;

/// How long a learned MAC stays in the table without traffic (IEEE 802.1D default).
pub const AGING: Duration = Duration::from_secs(300);

/// A switch port number.
pub type PortId = usize;

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// To this one port.
    Unicast(PortId),
    /// To every port but the one it came from.
    Flood,
    /// Nowhere: the destination sits on the ingress port, or the ingress port is unknown.
    Filter,
}

/// Frame and byte counters of one port, both ways (rx = from the port into the switch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
}

#[derive(Clone, Copy, Debug)]
struct CamEntry {
    port: PortId,
    last_seen: Instant,
    /// Pinned entries (the gateway's MAC) never age and never move.
    pinned: bool,
}

/// What learning a source MAC did, for `connection_established` style notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// Already known on this port.
    Known,
    /// First seen (or seen again after ageing out).
    New,
    /// Known on another port before: it moved.
    Moved { from: PortId },
    /// Not learnable (multicast/broadcast source, or a pinned MAC claimed by another port).
    Ignored,
}

#[derive(Debug, Default)]
pub struct Switch {
    cam: HashMap<MacAddr, CamEntry>,
    ports: Vec<Option<PortCounters>>,
}

impl Switch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens a port, reusing the lowest free number.
    pub fn add_port(&mut self) -> PortId {
        if let Some(i) = self.ports.iter().position(Option::is_none) {
            self.ports[i] = Some(PortCounters::default());
            i
        } else {
            self.ports.push(Some(PortCounters::default()));
            self.ports.len() - 1
        }
    }

    /// Closes a port; returns the MACs that were learned on it.
    pub fn remove_port(&mut self, port: PortId) -> Vec<MacAddr> {
        if let Some(slot) = self.ports.get_mut(port) {
            *slot = None;
        }
        let gone: Vec<MacAddr> = self
            .cam
            .iter()
            .filter(|(_, e)| e.port == port)
            .map(|(m, _)| *m)
            .collect();
        for mac in &gone {
            self.cam.remove(mac);
        }
        gone
    }

    /// Binds `mac` to `port` for good (the gateway).
    pub fn pin(&mut self, mac: MacAddr, port: PortId, now: Instant) {
        self.cam.insert(
            mac,
            CamEntry {
                port,
                last_seen: now,
                pinned: true,
            },
        );
    }

    pub fn is_open(&self, port: PortId) -> bool {
        matches!(self.ports.get(port), Some(Some(_)))
    }

    /// Every open port number.
    pub fn ports(&self) -> impl Iterator<Item = PortId> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|_| i))
    }

    /// Learns the source of a frame that entered on `port`, counts it, and decides where
    /// it goes.
    pub fn process(
        &mut self,
        port: PortId,
        dst: MacAddr,
        src: MacAddr,
        len: usize,
        now: Instant,
    ) -> (Decision, Learned) {
        let Some(Some(counters)) = self.ports.get_mut(port) else {
            return (Decision::Filter, Learned::Ignored);
        };
        counters.rx_frames += 1;
        counters.rx_bytes += len as u64;
        let learned = self.learn(port, src, now);
        (self.decide(port, dst, now), learned)
    }

    fn learn(&mut self, port: PortId, src: MacAddr, now: Instant) -> Learned {
        if !src.is_unicast() {
            return Learned::Ignored;
        }
        match self.cam.get_mut(&src) {
            Some(e) if e.pinned => Learned::Ignored,
            Some(e) if e.port == port => {
                let fresh = now.saturating_duration_since(e.last_seen) < AGING;
                e.last_seen = now;
                if fresh {
                    Learned::Known
                } else {
                    Learned::New
                }
            }
            Some(e) => {
                let from = e.port;
                e.port = port;
                e.last_seen = now;
                Learned::Moved { from }
            }
            None => {
                self.cam.insert(
                    src,
                    CamEntry {
                        port,
                        last_seen: now,
                        pinned: false,
                    },
                );
                Learned::New
            }
        }
    }

    fn decide(&self, port: PortId, dst: MacAddr, now: Instant) -> Decision {
        if !dst.is_unicast() {
            return Decision::Flood;
        }
        match self.cam.get(&dst) {
            Some(e) if e.pinned || now.saturating_duration_since(e.last_seen) < AGING => {
                if e.port == port {
                    Decision::Filter
                } else {
                    Decision::Unicast(e.port)
                }
            }
            _ => Decision::Flood,
        }
    }

    /// Counts a frame sent out of `port`.
    pub fn count_tx(&mut self, port: PortId, len: usize) {
        if let Some(Some(c)) = self.ports.get_mut(port) {
            c.tx_frames += 1;
            c.tx_bytes += len as u64;
        }
    }

    /// Drops entries not seen for [`AGING`]; returns the MACs removed.
    pub fn age(&mut self, now: Instant) -> Vec<MacAddr> {
        let old: Vec<MacAddr> = self
            .cam
            .iter()
            .filter(|(_, e)| !e.pinned && now.saturating_duration_since(e.last_seen) >= AGING)
            .map(|(m, _)| *m)
            .collect();
        for mac in &old {
            self.cam.remove(mac);
        }
        old
    }

    /// The MAC table, for `/cam`.
    pub fn cam(&self) -> impl Iterator<Item = (MacAddr, PortId)> + '_ {
        self.cam.iter().map(|(m, e)| (*m, e.port))
    }

    pub fn counters(&self, port: PortId) -> Option<PortCounters> {
        self.ports.get(port).copied().flatten()
    }

    /// Sum over every open port.
    pub fn totals(&self) -> PortCounters {
        self.ports
            .iter()
            .flatten()
            .fold(PortCounters::default(), |a, c| PortCounters {
                rx_frames: a.rx_frames + c.rx_frames,
                rx_bytes: a.rx_bytes + c.rx_bytes,
                tx_frames: a.tx_frames + c.tx_frames,
                tx_bytes: a.tx_bytes + c.tx_bytes,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]);
    const A: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]);
    const B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
    const MCAST: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 1]);

    fn setup() -> (Switch, Instant, PortId, PortId, PortId) {
        let mut sw = Switch::new();
        let now = Instant::now();
        let gw = sw.add_port();
        let p1 = sw.add_port();
        let p2 = sw.add_port();
        sw.pin(GW, gw, now);
        (sw, now, gw, p1, p2)
    }

    #[test]
    fn learns_and_forwards_unicast() {
        let (mut sw, now, gw, p1, p2) = setup();
        assert_eq!(
            sw.process(p1, GW, A, 60, now),
            (Decision::Unicast(gw), Learned::New)
        );
        assert_eq!(
            sw.process(p2, A, B, 60, now),
            (Decision::Unicast(p1), Learned::New)
        );
        assert_eq!(
            sw.process(p1, B, A, 60, now),
            (Decision::Unicast(p2), Learned::Known)
        );
    }

    #[test]
    fn floods_broadcast_multicast_and_unknown_unicast() {
        let (mut sw, now, _gw, p1, _p2) = setup();
        assert_eq!(
            sw.process(p1, MacAddr::BROADCAST, A, 42, now).0,
            Decision::Flood
        );
        assert_eq!(sw.process(p1, MCAST, A, 42, now).0, Decision::Flood);
        assert_eq!(sw.process(p1, B, A, 42, now).0, Decision::Flood);
    }

    #[test]
    fn filters_frames_for_the_ingress_port() {
        let (mut sw, now, _gw, p1, _p2) = setup();
        sw.process(p1, MacAddr::BROADCAST, A, 42, now);
        assert_eq!(sw.process(p1, A, B, 42, now).0, Decision::Filter);
    }

    #[test]
    fn entries_age_out_and_go_with_their_port() {
        let (mut sw, now, gw, p1, p2) = setup();
        sw.process(p1, GW, A, 42, now);
        sw.process(p2, GW, B, 42, now);
        let later = now + AGING;
        assert_eq!(sw.process(p2, A, B, 42, later).0, Decision::Flood);
        assert_eq!(sw.age(later), vec![A]);
        // The gateway is pinned and survives ageing.
        assert_eq!(sw.process(p2, GW, B, 42, later).0, Decision::Unicast(gw));
        assert_eq!(sw.remove_port(p2), vec![B]);
        assert!(!sw.is_open(p2));
        assert_eq!(sw.process(p2, GW, B, 42, later).0, Decision::Filter);
        assert_eq!(sw.add_port(), p2);
    }

    #[test]
    fn moves_and_refuses_to_move_pinned() {
        let (mut sw, now, gw, p1, p2) = setup();
        sw.process(p1, GW, A, 42, now);
        assert_eq!(
            sw.process(p2, GW, A, 42, now).1,
            Learned::Moved { from: p1 }
        );
        assert_eq!(sw.process(p1, GW, GW, 42, now).1, Learned::Ignored);
        assert_eq!(sw.process(p2, GW, B, 42, now).0, Decision::Unicast(gw));
        assert_eq!(sw.process(p1, A, MCAST, 42, now).1, Learned::Ignored);
    }

    #[test]
    fn counts_both_ways() {
        let (mut sw, now, _gw, p1, _p2) = setup();
        sw.process(p1, GW, A, 100, now);
        sw.count_tx(p1, 60);
        let c = sw.counters(p1).unwrap();
        assert_eq!(
            (c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes),
            (1, 100, 1, 60)
        );
        assert_eq!(sw.totals().rx_bytes, 100);
    }
}
