//! UDP flows: one connected host UDP socket per (guest address:port, destination).
//!
//! Replies come back from the socket's peer only (it is connected), and go to the guest
//! with the original addresses. A host ICMP port unreachable surfaces as ECONNREFUSED on
//! the connected socket and becomes an ICMP port unreachable to the guest (upstream stays
//! silent). A flow with no datagram either way for `udp_idle` (90 s) is closed.
//!
//! Gateway services: a guest datagram to `gateway_ip:port` of a configured UDP service is
//! NATed the same way to the service's host address (replies come from `gateway_ip:port`).
//!
//! Reverse flows (UDP port forwarding, `ShardMsg::ServeUdp`): a host socket bound on the
//! host ("serve socket") whose every client address gets a flow `gateway_ip:eph → guest`,
//! with `eph` chosen to hash to this shard. Client datagrams go to the guest from
//! `gateway_ip:eph`; the guest's replies to it go back to the client with `send_to` on the
//! serve socket, so the client sees them come from the address it sent to. Idle after
//! `udp_idle`; at most `max_udp_clients` clients per socket.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::UdpSocket;
use mio::{Interest, Registry};
use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

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

/// A `ServeUdp` socket.
pub(super) struct Serve {
    sock: UdpSocket,
    guest: SocketAddrV4,
    pub tag: u64,
    /// The guest's MAC, learned from its replies (zero until then: the switch loop fills
    /// it in).
    guest_mac: MacAddr,
    /// Each client's flow.
    clients: HashMap<SocketAddr, FlowId>,
    readable: bool,
    /// On the serve dirty list.
    queued: bool,
}

/// A client of a serve socket and the guest: no socket of its own.
pub(super) struct RevFlow {
    serve: FlowId,
    client: SocketAddr,
    last_active: Instant,
}

pub(super) struct UdpFlow {
    sock: UdpSocket,
    last_active: Instant,
    pub readable: bool,
    /// Payload length of the guest's latest datagram (for the quote of an ICMP error).
    last_len: usize,
    /// UDP_SEGMENT works on this socket's path (cleared at the first refusal).
    gso: bool,
}

impl UdpFlow {
    pub fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.sock);
    }
}

/// UDP_MAX_SEGMENTS of Linux before 6.x (128 since).
const GSO_MAX_SEGS: usize = 64;
/// The largest UDP payload one IPv4 datagram carries.
const GSO_MAX_BYTES: usize = 65_507;

/// Guest datagrams of connected flows held until the end of the turn ([`Shard::flush_udp`]).
#[derive(Default)]
pub(super) struct UdpTx {
    buf: Vec<u8>,
    /// Per datagram in arrival order: its flow and where it ends in `buf`.
    ends: Vec<(FlowId, usize)>,
}

impl UdpTx {
    fn push(&mut self, id: FlowId, payload: &[u8]) {
        self.buf.extend_from_slice(payload);
        self.ends.push((id, self.buf.len()));
    }
}

/// One sendmsg of `data` cut by the kernel into datagrams of `seg` bytes (UDP_SEGMENT).
fn send_segments(sock: &UdpSocket, data: &[u8], seg: usize) -> Result<(), Errno> {
    let seg = u16::try_from(seg).map_err(|_| Errno::EINVAL)?;
    let iov = [IoSlice::new(data)];
    let cmsg = [ControlMessage::UdpGsoSegments(&seg)];
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
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
                Destination::Gateway
                    if ip.dst() == self.cfg.gateway_ip
                        && self.udp_service(key.remote.port()).is_some() =>
                {
                    let Some(host) = self.udp_service(key.remote.port()) else {
                        return;
                    };
                    if self.flow_limit_reached() {
                        self.counters.udp.flow_limit += 1;
                        return;
                    }
                    match self.udp_open(key, guest_mac, host, now) {
                        Some(id) => {
                            self.counters.forward.service_udp_flows += 1;
                            id
                        }
                        None => return,
                    }
                }
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
                // No service listens there: what a host without the port answers.
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
        let Some(flow) = self.flows.get_mut(id) else {
            return;
        };
        flow.guest_mac = guest_mac;
        let u = match &mut flow.proto {
            Proto::Udp(u) => u,
            Proto::UdpRev(r) => {
                // A guest reply to a serve socket's client.
                r.last_active = now;
                let (serve, client) = (r.serve, r.client);
                let Some(sv) = self.serves.get_mut(serve) else {
                    return;
                };
                sv.guest_mac = guest_mac;
                match sv.sock.send_to(payload, client) {
                    Ok(_) => {
                        self.counters.forward.reverse_datagrams_to_client += 1;
                        self.counters.udp.bytes_to_host += payload.len() as u64;
                    }
                    Err(e) => {
                        self.counters.udp.send_errors += 1;
                        log::trace!("shard {}: {key}: send to {client} failed: {e}", self.id);
                    }
                }
                return;
            }
            _ => return,
        };
        u.last_active = now;
        u.last_len = payload.len();
        // Sent at the end of the turn, with the rest of the burst.
        self.udp_tx.push(id, payload);
    }

    /// Sends the guest datagrams held this turn: each run of one flow's datagrams of one
    /// size (the last may be shorter) in one sendmsg with UDP_SEGMENT, so the host stack
    /// builds and routes one packet and splits it at the receiving socket.
    pub(super) fn flush_udp(&mut self) {
        if self.udp_tx.ends.is_empty() {
            return;
        }
        let mut tx = std::mem::take(&mut self.udp_tx);
        let (mut i, mut start) = (0, 0);
        while let Some(&(id, first_end)) = tx.ends.get(i) {
            let seg = first_end - start;
            let (mut j, mut end) = (i + 1, first_end);
            while let Some(&(next, e)) = tx.ends.get(j) {
                let len = e - end;
                // An empty datagram would vanish inside a segmented send: it goes alone.
                let fits = len <= seg && len > 0 && j - i < GSO_MAX_SEGS;
                if next != id || !fits || e - start > GSO_MAX_BYTES {
                    break;
                }
                (j, end) = (j + 1, e);
                if len < seg {
                    break;
                }
            }
            if let Some(data) = tx.buf.get(start..end) {
                self.send_udp_run(id, data, seg, j - i);
            }
            (i, start) = (j, end);
        }
        tx.buf.clear();
        tx.ends.clear();
        self.udp_tx = tx;
    }

    /// `count` datagrams of flow `id`, `seg` bytes each but the last, back to back in `data`.
    fn send_udp_run(&mut self, id: FlowId, data: &[u8], seg: usize, count: usize) {
        let Some(flow) = self.flows.get_mut(id) else {
            return;
        };
        let Proto::Udp(u) = &mut flow.proto else {
            return;
        };
        let c = &mut self.counters.udp;
        let mut error = None;
        if count > 1 && u.gso {
            match send_segments(&u.sock, data, seg) {
                Ok(()) => {
                    c.gso_sends += 1;
                    c.datagrams_to_host += count as u64;
                    c.bytes_to_host += data.len() as u64;
                    return;
                }
                // No UDP GSO on this path (old kernel, a route whose MTU is below `seg`):
                // one datagram at a time from now on.
                Err(Errno::EINVAL | Errno::EMSGSIZE | Errno::EIO | Errno::ENOPROTOOPT) => {
                    u.gso = false
                }
                Err(e) => error = Some((io::Error::from(e), count)),
            }
        }
        if error.is_none() {
            // An empty datagram is a datagram too.
            let empty: &[&[u8]] = if data.is_empty() { &[&[]] } else { &[] };
            for d in data.chunks(seg.max(1)).chain(empty.iter().copied()) {
                match u.sock.send(d) {
                    Ok(_) => {
                        c.datagrams_to_host += 1;
                        c.bytes_to_host += d.len() as u64;
                    }
                    Err(e) => {
                        error = Some((e, 1));
                        break;
                    }
                }
            }
        }
        let Some((e, lost)) = error else {
            return;
        };
        if e.kind() == io::ErrorKind::ConnectionRefused {
            // An earlier datagram drew a port unreachable: the guest learns it now.
            let mut quote = [0u8; 28];
            if quote_of(&flow.key, u.last_len, &mut quote) {
                c.port_unreachable_sent += 1;
                let msg = Icmpv4Repr::DstUnreachable {
                    code: Icmpv4Unreachable::PORT,
                    next_hop_mtu: 0,
                    original: &quote,
                };
                let key = flow.key;
                self.out
                    .icmp(flow.guest_mac, *key.remote.ip(), *key.guest.ip(), &msg);
            }
        } else {
            c.send_errors += lost as u64;
            log::trace!("shard {}: {}: send failed: {e}", self.id, flow.key);
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
            gso: true,
        };
        let got = self.insert_flow(key, guest_mac, None, Proto::Udp(flow));
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

impl Shard {
    /// The host address of the gateway's UDP service on `port`.
    fn udp_service(&self, port: u16) -> Option<SocketAddrV4> {
        self.cfg
            .services
            .udp
            .iter()
            .find(|(p, _)| *p == port)
            .map(|&(_, host)| host)
    }

    /// `ShardMsg::ServeUdp`: watch `socket` (bound on the host) for clients of `guest`.
    pub(super) fn serve_udp(&mut self, socket: std::net::UdpSocket, guest: SocketAddrV4, tag: u64) {
        if !self.is_guest_addr(guest) {
            log::debug!(
                "shard {}: UDP forward to {guest} refused: not a guest address",
                self.id
            );
            self.counters.forward.serve_refused += 1;
            return;
        }
        let id = self.serves.next_id();
        let sock = socket.set_nonblocking(true).and_then(|()| {
            let mut s = UdpSocket::from_std(socket);
            self.poll.registry().register(
                &mut s,
                table::token(Kind::Serve, id),
                Interest::READABLE,
            )?;
            Ok(s)
        });
        let sock = match sock {
            Ok(s) => s,
            Err(e) => {
                log::debug!(
                    "shard {}: UDP forward to {guest}: cannot watch the socket: {e}",
                    self.id
                );
                self.counters.forward.serve_refused += 1;
                return;
            }
        };
        let got = self.serves.insert(Serve {
            sock,
            guest,
            tag,
            guest_mac: MacAddr::ZERO,
            clients: HashMap::new(),
            // Datagrams may be queued already.
            readable: true,
            queued: false,
        });
        debug_assert_eq!(got, id);
        self.serve_event(got);
    }

    /// A serve socket is readable.
    pub(super) fn serve_event(&mut self, id: FlowId) {
        if let Some(sv) = self.serves.get_mut(id) {
            sv.readable = true;
            if !sv.queued {
                sv.queued = true;
                self.serve_dirty.push(id);
            }
        }
    }

    /// Reads the readable serve sockets, as far as the output credit goes.
    pub(super) fn run_serves(&mut self, now: Instant) {
        if self.serve_dirty.is_empty() {
            return;
        }
        let list = std::mem::take(&mut self.serve_dirty);
        for id in list {
            if let Some(sv) = self.serves.get_mut(id) {
                sv.queued = false;
                self.service_serve(id, now);
            }
        }
    }

    /// Client datagrams of one serve socket to the guest.
    fn service_serve(&mut self, id: FlowId, now: Instant) {
        let max_payload = usize::from(self.cfg.mtu).saturating_sub(28);
        let mut n_read = 0;
        loop {
            let Some(sv) = self.serves.get_mut(id) else {
                return;
            };
            if !sv.readable {
                return;
            }
            if n_read >= READ_BUDGET || !self.out.can_send() {
                // Edge-triggered: nothing will say it again, come back next turn.
                self.serve_event(id);
                return;
            }
            n_read += 1;
            let buf = self.scratch.get_mut(..max_payload + 1).unwrap_or_default();
            let (len, client) = match sv.sock.recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sv.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::trace!("shard {}: serve socket: recv failed: {e}", self.id);
                    continue;
                }
            };
            if len > max_payload {
                self.counters.udp.too_big_dropped += 1;
                self.counters.forward.reverse_dropped += 1;
                continue;
            }
            let Some(fid) = self.reverse_flow(id, client, now) else {
                self.counters.forward.reverse_dropped += 1;
                continue;
            };
            let Some(Flow {
                proto: Proto::UdpRev(r),
                key,
                guest_mac,
                ..
            }) = self.flows.get_mut(fid)
            else {
                continue;
            };
            r.last_active = now;
            self.counters.forward.reverse_datagrams_to_guest += 1;
            self.counters.udp.bytes_from_host += len as u64;
            let data = self.scratch.get(..len).unwrap_or_default();
            self.out.udp(*guest_mac, key.remote, key.guest, data);
        }
    }

    /// The flow of a serve socket's client, made on its first datagram (`None`: too many
    /// clients, the flow limit, or no free port).
    fn reverse_flow(&mut self, serve: FlowId, client: SocketAddr, now: Instant) -> Option<FlowId> {
        let sv = self.serves.get_mut(serve)?;
        if let Some(&fid) = sv.clients.get(&client) {
            return Some(fid);
        }
        if sv.clients.len() >= self.cfg.max_udp_clients {
            return None;
        }
        let (guest, guest_mac, tag) = (sv.guest, sv.guest_mac, sv.tag);
        if self.flow_limit_reached() {
            self.counters.udp.flow_limit += 1;
            return None;
        }
        let port = self.pick_port(Protocol::Udp, guest)?;
        let key = FlowKey {
            proto: Protocol::Udp,
            guest,
            remote: SocketAddrV4::new(self.cfg.gateway_ip, port),
        };
        let flow = RevFlow {
            serve,
            client,
            last_active: now,
        };
        let fid = self.insert_flow(key, guest_mac, Some(tag), Proto::UdpRev(flow));
        self.schedule(fid, Some(later(now, self.cfg.udp_idle)));
        self.counters.forward.reverse_flows_created += 1;
        log::trace!("shard {}: {key}: reverse flow for {client}", self.id);
        if let Some(sv) = self.serves.get_mut(serve) {
            sv.clients.insert(client, fid);
        }
        Some(fid)
    }

    /// A reverse flow is gone: its client is forgotten by the serve socket.
    pub(super) fn detach_client(&mut self, r: &RevFlow, id: FlowId) {
        if let Some(sv) = self.serves.get_mut(r.serve) {
            if sv.clients.get(&r.client) == Some(&id) {
                sv.clients.remove(&r.client);
            }
        }
    }

    /// Closes a serve socket and drops its clients' flows.
    pub(super) fn remove_serve(&mut self, id: FlowId) {
        let Some(mut sv) = self.serves.remove(id) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut sv.sock);
        for (_, fid) in sv.clients.drain() {
            self.remove_flow(fid);
        }
    }

    pub(super) fn udp_rev_timer(&mut self, id: FlowId, now: Instant) {
        let Some(Flow {
            proto: Proto::UdpRev(r),
            key,
            ..
        }) = self.flows.get_mut(id)
        else {
            return;
        };
        let expiry = later(r.last_active, self.cfg.udp_idle);
        if expiry <= now {
            log::trace!("shard {}: {key}: reverse flow idle, closed", self.id);
            self.counters.forward.reverse_flows_expired += 1;
            self.remove_flow(id);
        } else {
            self.schedule(id, Some(expiry));
        }
    }
}
