//! UDP flows: one connected host UDP socket per (guest address:port, destination).
//!
//! Replies come back from the socket's peer only (it is connected), and go to the guest
//! with the original addresses. A host ICMP port unreachable surfaces as ECONNREFUSED on
//! the connected socket and becomes an ICMP port unreachable to the guest (upstream stays
//! silent). A flow with no datagram either way for `udp_idle` (90 s) is closed.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Instant;

use mio::net::UdpSocket;
use mio::{Interest, Registry};

use crate::counters::DropReason;
use crate::flow::{FlowKey, Protocol};
use crate::nat::Destination;
use crate::wire::{
    Icmpv4Repr, Icmpv4Unreachable, IpProtocol, Ipv4Packet, Ipv4Repr, MacAddr, UdpPacket,
};

use super::table::{self, FlowId, Kind};
use super::{later, Flow, Proto, Shard};

/// Datagrams read from one flow's socket per turn.
const READ_BUDGET: usize = 64;

pub(super) struct UdpFlow {
    sock: UdpSocket,
    last_active: Instant,
    pub readable: bool,
    /// Payload length of the guest's latest datagram (for the quote of an ICMP error).
    last_len: usize,
}

impl UdpFlow {
    pub fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.sock);
    }
}

/// The IP + UDP header of a guest datagram of `len` payload bytes on `key`, as an ICMP
/// error quotes it (the receiver matches on addresses and ports).
fn quote_of(key: &FlowKey, len: usize, buf: &mut [u8; 28]) -> bool {
    let udp_len = 8 + len;
    let ip = Ipv4Repr {
        src: *key.guest.ip(),
        dst: *key.remote.ip(),
        protocol: IpProtocol::UDP,
        payload_len: udp_len,
        ttl: 64,
        ident: 0,
        dont_frag: false,
        dscp_ecn: 0,
    };
    if ip.emit(&mut buf[..20]).is_err() {
        return false;
    }
    buf[20..22].copy_from_slice(&key.guest.port().to_be_bytes());
    buf[22..24].copy_from_slice(&key.remote.port().to_be_bytes());
    let l = u16::try_from(udp_len).unwrap_or(0);
    buf[24..26].copy_from_slice(&l.to_be_bytes());
    buf[26..28].copy_from_slice(&[0, 0]);
    true
}

impl Shard {
    /// A guest UDP datagram.
    pub(super) fn process_udp(&mut self, guest_mac: MacAddr, ip: &Ipv4Packet<&[u8]>, now: Instant) {
        let Ok(dgram) = UdpPacket::new_checked(ip.payload_slice()) else {
            self.counters.drops.count(DropReason::UdpMalformed);
            return;
        };
        let payload = dgram.payload_slice();
        let key = FlowKey {
            proto: Protocol::Udp,
            guest: SocketAddrV4::new(ip.src(), dgram.src_port()),
            remote: SocketAddrV4::new(ip.dst(), dgram.dst_port()),
        };
        let id = match self.index.get(&key) {
            Some(&id) => id,
            None => match self.cfg.nat.resolve(ip.dst()) {
                Destination::Host(host) => {
                    if self.flow_limit_reached() {
                        self.counters.udp.flow_limit += 1;
                        return;
                    }
                    match self.udp_open(
                        key,
                        guest_mac,
                        SocketAddrV4::new(host, key.remote.port()),
                        now,
                    ) {
                        Some(id) => id,
                        None => return,
                    }
                }
                // No service listens there (yet): what a host without the port answers.
                Destination::Gateway | Destination::InSubnetUnused => {
                    self.counters.udp.port_unreachable_sent += 1;
                    self.out.unreachable(
                        guest_mac,
                        ip.dst(),
                        Icmpv4Unreachable::PORT,
                        ip.packet_slice(),
                    );
                    return;
                }
                Destination::Broadcast => {
                    self.counters.udp.broadcast_dropped += 1;
                    return;
                }
                Destination::LinkLocalRefused | Destination::Unroutable => {
                    self.counters.udp.policy_dropped += 1;
                    return;
                }
            },
        };
        let Some(Flow {
            proto: Proto::Udp(u),
            guest_mac: mac,
            ..
        }) = self.flows.get_mut(id)
        else {
            return;
        };
        *mac = guest_mac;
        u.last_active = now;
        u.last_len = payload.len();
        let c = &mut self.counters.udp;
        match u.sock.send(payload) {
            Ok(_) => {
                c.datagrams_to_host += 1;
                c.bytes_to_host += payload.len() as u64;
            }
            // An earlier datagram drew a port unreachable: the guest learns it now.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                c.port_unreachable_sent += 1;
                self.out.unreachable(
                    guest_mac,
                    ip.dst(),
                    Icmpv4Unreachable::PORT,
                    ip.packet_slice(),
                );
            }
            Err(e) => {
                c.send_errors += 1;
                log::trace!("shard {}: {key}: send failed: {e}", self.id);
            }
        }
    }

    fn udp_open(
        &mut self,
        key: FlowKey,
        guest_mac: MacAddr,
        host: SocketAddrV4,
        now: Instant,
    ) -> Option<FlowId> {
        let id = self.flows.next_id();
        let sock = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0)))
            .and_then(|s| s.connect(SocketAddr::V4(host)).map(|()| s))
            .and_then(|mut s| {
                self.poll.registry().register(
                    &mut s,
                    table::token(Kind::Flow, id),
                    Interest::READABLE,
                )?;
                Ok(s)
            });
        let sock = match sock {
            Ok(s) => s,
            Err(e) => {
                self.counters.udp.socket_errors += 1;
                log::debug!(
                    "shard {}: {key}: cannot open a socket to {host}: {e}",
                    self.id
                );
                return None;
            }
        };
        log::trace!("shard {}: {key}: new flow to {host}", self.id);
        self.counters.udp.flows_created += 1;
        let flow = UdpFlow {
            sock,
            last_active: now,
            readable: false,
            last_len: 0,
        };
        let got = self.insert_flow(key, guest_mac, Proto::Udp(flow));
        self.schedule(got, Some(later(now, self.cfg.udp_idle)));
        Some(got)
    }

    /// Host datagrams to the guest.
    pub(super) fn service_udp(&mut self, id: FlowId, now: Instant) {
        let max_payload = usize::from(self.cfg.mtu).saturating_sub(28);
        let Some(Flow {
            proto: Proto::Udp(u),
            guest_mac,
            key,
            ..
        }) = self.flows.get_mut(id)
        else {
            return;
        };
        let mut again = false;
        let mut n_read = 0;
        while u.readable {
            if n_read >= READ_BUDGET || !self.out.can_send() {
                again = true;
                break;
            }
            n_read += 1;
            // One byte more than fits: a datagram that fills it was too big (truncated).
            let buf = self.scratch.get_mut(..max_payload + 1).unwrap_or_default();
            match u.sock.recv(buf) {
                Ok(n) if n > max_payload => self.counters.udp.too_big_dropped += 1,
                Ok(n) => {
                    u.last_active = now;
                    let c = &mut self.counters.udp;
                    c.datagrams_from_host += 1;
                    c.bytes_from_host += n as u64;
                    let data = self.scratch.get(..n).unwrap_or_default();
                    self.out.udp(*guest_mac, key.remote, key.guest, data);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => u.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    let mut quote = [0u8; 28];
                    if quote_of(key, u.last_len, &mut quote) {
                        self.counters.udp.port_unreachable_sent += 1;
                        let msg = Icmpv4Repr::DstUnreachable {
                            code: Icmpv4Unreachable::PORT,
                            next_hop_mtu: 0,
                            original: &quote,
                        };
                        self.out
                            .icmp(*guest_mac, *key.remote.ip(), *key.guest.ip(), &msg);
                    }
                }
                Err(e) => {
                    // Other queued errors (host unreachable...) are consumed and dropped.
                    log::trace!("shard {}: {key}: recv failed: {e}", self.id);
                }
            }
        }
        if again {
            self.mark_dirty(id);
        }
    }

    pub(super) fn udp_timer(&mut self, id: FlowId, now: Instant) {
        let Some(Flow {
            proto: Proto::Udp(u),
            key,
            ..
        }) = self.flows.get_mut(id)
        else {
            return;
        };
        let expiry = later(u.last_active, self.cfg.udp_idle);
        if expiry <= now {
            log::trace!("shard {}: {key}: idle, closed", self.id);
            self.counters.udp.flows_expired += 1;
            self.remove_flow(id);
        } else {
            self.schedule(id, Some(expiry));
        }
    }
}
