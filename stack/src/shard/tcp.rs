//! TCP flows: the guest's connection (a [`Tcb`]) spliced to a host kernel TCP socket.
//!
//! Lifecycle: guest SYN → NAT policy → non-blocking host `connect()` (each with its own
//! deadline, no global limit) → on success `Tcb::host_connected` (SYN-ACK to the guest), on
//! failure RST (refused, timed out) or ICMP unreachable (no route) → data both ways →
//! `host_close` from the engine → the host socket is closed (gracefully once both FINs were
//! exchanged, with RST otherwise) → the key lingers in TIME-WAIT → forgotten.
//!
//! Flow control: guest bytes leave the engine's receive ring only as fast as the host
//! socket takes them (`host_wrote`), so a slow host closes the guest's window; host bytes
//! are read only into the engine's send ring (`send_room`), so a slow guest stops our reads
//! and the host's sender sees a full socket buffer.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry};

use crate::flow::{FlowKey, Protocol};
use crate::nat::Destination;
use crate::tcp::{self, Effects, Endpoints, Tcb, TcpFlags, TcpRepr};
use crate::wire::{Icmpv4Unreachable, Ipv4Packet, MacAddr, TcpPacket};

use super::host::{refuse as refuse_host, HostStream};
use super::out::{NullSink, Out, TcpSink};
use super::stats::TcpCounters;
use super::table::{self, FlowId, Kind};
use super::{later, Flow, LocalConn, Proto, Shard};

/// Host bytes read for one connection per turn before the others get a go.
const READ_BUDGET: usize = 1 << 20;
/// Guest segments at least this big (TSO) go straight to an idle host socket, skipping
/// the copy into the receive ring; smaller ones are gathered there into fewer writes.
const DIRECT_WRITE_MIN: usize = 16 << 10;
/// Bytes of the guest's SYN kept for an ICMP error (IP header with options + 8).
const QUOTE_MAX: usize = 68;

/// A host connect in progress.
pub(super) struct Connecting {
    deadline: Instant,
    /// The guest's SYN, IP header + 8 bytes, quoted by an ICMP unreachable (RFC 792).
    quote: [u8; QUOTE_MAX],
    quote_len: usize,
}

pub(super) struct TcpFlow {
    pub tcb: Tcb,
    sock: Option<HostStream>,
    connecting: Option<Connecting>,
    /// The socket may have bytes to read (edge-triggered: set by events, cleared by
    /// WouldBlock).
    readable: bool,
    /// The last write hit a full socket buffer: wait for WRITABLE.
    write_blocked: bool,
    /// The host sent its FIN (read returned 0).
    host_eof: bool,
    /// The engine asked for `shutdown(SHUT_WR)` (the guest's FIN, all data written).
    want_shutdown: bool,
    /// We did shut down our sending side.
    shut_wr: bool,
    /// The engine said the connection is over: close the host socket.
    want_close: bool,
    /// An active open (towards the guest) whose SYN-ACK has not arrived yet.
    active_pending: bool,
}

impl TcpFlow {
    /// A flow whose host socket is connected (`connecting: None`) or being connected.
    fn new(tcb: Tcb, sock: HostStream, connecting: Option<Connecting>) -> TcpFlow {
        TcpFlow {
            tcb,
            sock: Some(sock),
            // A connected socket may hold bytes already (edge-triggered: look once).
            readable: connecting.is_none(),
            connecting,
            write_blocked: false,
            host_eof: false,
            want_shutdown: false,
            shut_wr: false,
            want_close: false,
            active_pending: false,
        }
    }

    /// An active open that never got its SYN-ACK.
    pub fn active_open_pending(&self) -> bool {
        self.active_pending
    }

    pub fn is_connecting(&self) -> bool {
        self.connecting.is_some()
    }

    fn note(&mut self, eff: Effects) {
        self.want_shutdown |= eff.host_shutdown;
        self.want_close |= eff.host_close;
    }

    /// Closes the host socket: an orderly close once both sides sent their FIN, else an
    /// abortive one (RST to the host peer, as the guest's RST or a give-up means).
    /// Returns whether the close was abortive.
    fn close_socket(&mut self, registry: &Registry) -> bool {
        let Some(mut sock) = self.sock.take() else {
            return false;
        };
        let _ = registry.deregister(&mut sock);
        // The guest's FIN may come with the end of the connection (TIME-WAIT at once):
        // pass it on before closing, if every byte before it was written.
        if self.want_shutdown && !self.shut_wr && self.tcb.host_data().iter().all(|s| s.is_empty())
        {
            self.shut_wr = sock.shutdown(Shutdown::Write).is_ok();
        }
        let abort = !(self.host_eof && self.shut_wr);
        if abort {
            sock.set_abortive();
        }
        abort
    }

    pub fn close(mut self, registry: &Registry) {
        self.close_socket(registry);
    }

    /// Closes the host socket abortively (the host peer sees a RST; a unix peer, EOF).
    pub fn abort(mut self, registry: &Registry) {
        if let Some(mut sock) = self.sock.take() {
            let _ = registry.deregister(&mut sock);
            sock.set_abortive();
        }
    }

    /// The next deadline: the engine's timers and the connect timeout.
    fn deadline(&self) -> Option<Instant> {
        let c = self.connecting.as_ref().map(|c| c.deadline);
        match (self.tcb.next_deadline(), c) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What a failed connect shows the guest.
fn connect_failed(
    tcb: &mut Tcb,
    out: &mut Out,
    guest_mac: MacAddr,
    gateway_ip: std::net::Ipv4Addr,
    quote: &[u8],
    err: &io::Error,
    c: &mut TcpCounters,
) {
    let code = match err.raw_os_error() {
        Some(libc::ENETUNREACH) => Some(Icmpv4Unreachable::NET),
        Some(libc::EHOSTUNREACH) => Some(Icmpv4Unreachable::HOST),
        _ => None,
    };
    match code {
        // A router's answer: the guest's connect() fails with "No route to host" at once
        // (Linux treats ICMP unreachable in SYN-SENT as a hard error).
        Some(code) if !quote.is_empty() => {
            c.connects_unreachable += 1;
            out.unreachable(guest_mac, gateway_ip, code, quote);
            tcb.host_refused(&mut NullSink);
        }
        _ => {
            match err.kind() {
                io::ErrorKind::ConnectionRefused => c.connects_refused += 1,
                io::ErrorKind::TimedOut => c.connects_timed_out += 1,
                _ => c.connects_failed += 1,
            }
            let ep = tcb.endpoints();
            tcb.host_refused(&mut TcpSink { out, guest_mac, ep });
        }
    }
}

impl Shard {
    /// A guest TCP segment.
    pub(super) fn process_tcp(&mut self, guest_mac: MacAddr, ip: &Ipv4Packet<&[u8]>, now: Instant) {
        let Ok(seg) = TcpPacket::new_checked(ip.payload_slice()) else {
            self.counters
                .drops
                .count(crate::counters::DropReason::TcpMalformed);
            return;
        };
        let Ok(repr) = TcpRepr::parse(&seg) else {
            self.counters
                .drops
                .count(crate::counters::DropReason::TcpMalformed);
            return;
        };
        let payload = seg.payload_slice();
        let key = FlowKey {
            proto: Protocol::Tcp,
            guest: SocketAddrV4::new(ip.src(), repr.src_port),
            remote: SocketAddrV4::new(ip.dst(), repr.dst_port),
        };
        let is_syn = repr.flags.contains(TcpFlags::SYN) && !repr.flags.contains(TcpFlags::ACK);
        if let Some(&id) = self.index.get(&key) {
            if let Some(flow) = self.flows.get_mut(id) {
                if let Proto::Tcp(t) = &mut flow.proto {
                    if !(is_syn && t.tcb.reusable_by(&repr)) {
                        flow.guest_mac = guest_mac;
                        let ep = t.tcb.endpoints();
                        let mut sink = TcpSink {
                            out: &mut self.out,
                            guest_mac,
                            ep,
                        };
                        let eff = if payload.len() >= DIRECT_WRITE_MIN {
                            let TcpFlow {
                                tcb,
                                sock,
                                connecting,
                                write_blocked,
                                ..
                            } = &mut **t;
                            let c = &mut self.counters.tcp;
                            let mut direct = |data: &[u8]| match sock {
                                Some(s) if connecting.is_none() && !*write_blocked => {
                                    let n = s.write(data).unwrap_or(0);
                                    c.bytes_to_host += n as u64;
                                    n
                                }
                                _ => 0,
                            };
                            tcb.on_segment_direct(&repr, payload, now, &mut sink, &mut direct)
                        } else {
                            t.tcb.on_segment(&repr, payload, now, &mut sink)
                        };
                        t.note(eff);
                        if t.active_pending && t.tcb.state() != tcp::State::SynSent {
                            t.active_pending = false;
                            if t.tcb.state() == tcp::State::Closed {
                                self.counters.forward.active_open_failed += 1;
                            } else {
                                self.counters.forward.active_open_established += 1;
                            }
                        }
                        self.mark_dirty(id);
                        return;
                    }
                }
            }
            // A new SYN for a connection in TIME-WAIT (RFC 1122 §4.2.2.13) or a stale entry.
            self.remove_flow(id);
        }
        let ep = Endpoints {
            guest: key.guest,
            remote: key.remote,
        };
        if !is_syn || repr.flags.intersects(TcpFlags::RST | TcpFlags::FIN) {
            // RFC 9293 §3.10.7.1: a segment for no connection gets a RST (never a RST).
            if let Some(rst) = tcp::reset_for_unknown(&repr, payload.len()) {
                self.counters.tcp.rst_for_unknown += 1;
                self.out.tcp(guest_mac, &ep, &rst, [&[], &[]]);
            }
            return;
        }
        let refuse = |shard: &mut Shard| {
            if let Some(rst) = tcp::reset_for_unknown(&repr, payload.len()) {
                shard.out.tcp(guest_mac, &ep, &rst, [&[], &[]]);
            }
        };
        let dest = self.cfg.nat.resolve(ip.dst());
        if dest == Destination::Gateway && ip.dst() == self.cfg.gateway_ip {
            let port = repr.dst_port;
            if let Some(svc) = self.cfg.services.tcp.iter().position(|(p, _)| *p == port) {
                if self.flow_limit_reached() {
                    self.counters.tcp.flow_limit += 1;
                    refuse(self);
                    return;
                }
                self.tcp_local(key, guest_mac, &repr, svc, now);
                return;
            }
        }
        match dest {
            Destination::Host(host) => {
                if self.flow_limit_reached() {
                    self.counters.tcp.flow_limit += 1;
                    refuse(self);
                    return;
                }
                let host = SocketAddrV4::new(host, repr.dst_port);
                self.tcp_open(key, guest_mac, host, &repr, ip.packet_slice(), now);
            }
            // A gateway port without a service, unused addresses and link-local are
            // never dialled: RST as a host with no listener would send.
            Destination::Gateway | Destination::InSubnetUnused | Destination::LinkLocalRefused => {
                self.counters.tcp.policy_rejected += 1;
                refuse(self);
            }
            Destination::Broadcast | Destination::Unroutable => {
                self.counters.tcp.policy_rejected += 1;
            }
        }
    }

    /// Starts the host connect for a guest SYN.
    fn tcp_open(
        &mut self,
        key: FlowKey,
        guest_mac: MacAddr,
        host: SocketAddrV4,
        syn: &TcpRepr,
        syn_packet: &[u8],
        now: Instant,
    ) {
        let ep = Endpoints {
            guest: key.guest,
            remote: key.remote,
        };
        let iss = self.iss_for(&ep, now);
        let Some(mut tcb) = Tcb::accept_syn(ep, syn, iss, &self.cfg.tcp, now) else {
            return;
        };
        let mut quote = [0u8; QUOTE_MAX];
        let quote_len = syn_quote(syn_packet, &mut quote);
        self.counters.tcp.connects_started += 1;
        let id = self.flows.next_id();
        let sock = TcpStream::connect(SocketAddr::V4(host)).and_then(|mut s| {
            self.poll.registry().register(
                &mut s,
                table::token(Kind::Flow, id),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        match sock {
            Ok(sock) => {
                log::trace!("shard {}: {key}: connecting to {host}", self.id);
                let flow = TcpFlow::new(
                    tcb,
                    HostStream::Tcp(sock),
                    Some(Connecting {
                        deadline: later(now, self.cfg.connect_timeout),
                        quote,
                        quote_len,
                    }),
                );
                let deadline = flow.deadline();
                let got = self.insert_flow(key, guest_mac, None, Proto::Tcp(Box::new(flow)));
                debug_assert_eq!(got, id);
                self.schedule(got, deadline);
            }
            Err(e) => {
                log::debug!("shard {}: {key}: connect to {host} failed: {e}", self.id);
                connect_failed(
                    &mut tcb,
                    &mut self.out,
                    guest_mac,
                    self.cfg.gateway_ip,
                    quote.get(..quote_len).unwrap_or_default(),
                    &e,
                    &mut self.counters.tcp,
                );
            }
        }
    }

    fn iss_for(&self, ep: &Endpoints, now: Instant) -> tcp::SeqNumber {
        let micros = u64::try_from(now.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(u64::MAX);
        tcp::isn(&self.isn_secret, ep, micros)
    }

    /// A guest SYN to a TCP service of the gateway (`services.tcp[svc]`): accepted at once,
    /// no host connect. The flow's host socket is one end of a unix stream pair; the other
    /// end goes to the service's channel with the guest's address. A closed or full channel
    /// (or no file descriptors) refuses the connection with RST.
    fn tcp_local(
        &mut self,
        key: FlowKey,
        guest_mac: MacAddr,
        syn: &TcpRepr,
        svc: usize,
        now: Instant,
    ) {
        let ep = Endpoints {
            guest: key.guest,
            remote: key.remote,
        };
        let iss = self.iss_for(&ep, now);
        let Some(mut tcb) = Tcb::accept_syn(ep, syn, iss, &self.cfg.tcp, now) else {
            return;
        };
        let id = self.flows.next_id();
        let pair = std::os::unix::net::UnixStream::pair().and_then(|(ours, theirs)| {
            ours.set_nonblocking(true)?;
            let mut ours = HostStream::Unix(mio::net::UnixStream::from_std(ours));
            self.poll.registry().register(
                &mut ours,
                table::token(Kind::Flow, id),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok((ours, theirs))
        });
        let mut sink = TcpSink {
            out: &mut self.out,
            guest_mac,
            ep,
        };
        let (mut ours, theirs) = match pair {
            Ok(p) => p,
            Err(e) => {
                log::debug!(
                    "shard {}: {key}: no socket pair for the service: {e}",
                    self.id
                );
                self.counters.forward.local_refused += 1;
                tcb.host_refused(&mut sink);
                return;
            }
        };
        let conn = LocalConn {
            stream: theirs,
            guest: key.guest,
        };
        let sent = self
            .cfg
            .services
            .tcp
            .get(svc)
            .is_some_and(|(_, tx)| tx.try_send(conn).is_ok());
        if !sent {
            log::debug!("shard {}: {key}: service busy or gone: RST", self.id);
            let _ = self.poll.registry().deregister(&mut ours);
            self.counters.forward.local_refused += 1;
            tcb.host_refused(&mut sink);
            return;
        }
        tcb.host_connected(now, &mut sink);
        self.counters.forward.local_accepted += 1;
        log::trace!("shard {}: {key}: handed to the gateway service", self.id);
        let flow = TcpFlow::new(tcb, ours, None);
        let deadline = flow.deadline();
        let got = self.insert_flow(key, guest_mac, None, Proto::Tcp(Box::new(flow)));
        debug_assert_eq!(got, id);
        self.schedule(got, deadline);
        self.mark_dirty(got);
    }

    /// Active open into a guest (`ShardMsg::OpenTcp`): a connection from
    /// `gateway_ip:<port>` to `guest`, spliced to `host` (a connected TCP or unix stream).
    /// The port is chosen so that the guest's replies hash to this shard. Frames go to the
    /// zero MAC until the guest answers (the switch loop fills in the guest's MAC). Any
    /// failure (no port free, flow limit, not a stream socket, SYN retries exhausted, RST
    /// from the guest) closes `host`: its peer sees EOF or a reset.
    pub(super) fn open_tcp(&mut self, host: OwnedFd, guest: SocketAddrV4, tag: u64, now: Instant) {
        self.counters.forward.active_opens += 1;
        if !self.is_guest_addr(guest) {
            log::debug!(
                "shard {}: open to {guest} refused: not a guest address",
                self.id
            );
            self.counters.forward.active_open_failed += 1;
            refuse_host(host);
            return;
        }
        if self.flow_limit_reached() {
            self.counters.tcp.flow_limit += 1;
            self.counters.forward.active_open_failed += 1;
            refuse_host(host);
            return;
        }
        let Some(port) = self.pick_port(Protocol::Tcp, guest) else {
            log::debug!("shard {}: open to {guest} refused: no free port", self.id);
            self.counters.forward.active_open_no_port += 1;
            refuse_host(host);
            return;
        };
        let key = FlowKey {
            proto: Protocol::Tcp,
            guest,
            remote: SocketAddrV4::new(self.cfg.gateway_ip, port),
        };
        let id = self.flows.next_id();
        let sock = HostStream::from_fd(host).and_then(|mut s| {
            self.poll.registry().register(
                &mut s,
                table::token(Kind::Flow, id),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        let sock = match sock {
            Ok(s) => s,
            Err(e) => {
                log::debug!("shard {}: {key}: unusable host socket: {e}", self.id);
                self.counters.forward.active_open_failed += 1;
                return;
            }
        };
        let ep = Endpoints {
            guest: key.guest,
            remote: key.remote,
        };
        let iss = self.iss_for(&ep, now);
        let tcb = Tcb::connect(
            ep,
            iss,
            &self.cfg.tcp,
            now,
            &mut TcpSink {
                out: &mut self.out,
                guest_mac: MacAddr::ZERO,
                ep,
            },
        );
        log::trace!("shard {}: {key}: active open (tag {tag})", self.id);
        let mut flow = TcpFlow::new(tcb, sock, None);
        flow.active_pending = true;
        let deadline = flow.deadline();
        let got = self.insert_flow(key, MacAddr::ZERO, Some(tag), Proto::Tcp(Box::new(flow)));
        debug_assert_eq!(got, id);
        self.schedule(got, deadline);
        self.mark_dirty(got);
    }

    /// `ShardMsg::CloseTag` for one TCP flow: RST to the guest, the host socket closed
    /// abortively.
    pub(super) fn tcp_close_tagged(&mut self, id: FlowId) {
        let registry = self.poll.registry();
        let Some(flow) = self.flows.remove(id) else {
            return;
        };
        if self.index.get(&flow.key) == Some(&id) {
            self.index.remove(&flow.key);
        }
        let Proto::Tcp(mut t) = flow.proto else {
            return;
        };
        let ep = t.tcb.endpoints();
        t.tcb.host_reset(&mut TcpSink {
            out: &mut self.out,
            guest_mac: flow.guest_mac,
            ep,
        });
        self.counters.tcp.flows_closed += 1;
        self.counters.forward.tag_closed_tcp += 1;
        super::stats::add_tcb_stats(&mut self.counters.tcp_closed, &t.tcb.stats());
        t.abort(registry);
    }

    /// Readiness of a TCP flow's host socket.
    pub(super) fn tcp_event(&mut self, id: FlowId, ev: &mio::event::Event, now: Instant) {
        let Some(Flow {
            proto: Proto::Tcp(t),
            ..
        }) = self.flows.get_mut(id)
        else {
            return;
        };
        if t.connecting.is_some() {
            if ev.is_writable() || ev.is_error() || ev.is_write_closed() || ev.is_read_closed() {
                self.tcp_connect_done(id, now);
            }
            return;
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            t.readable = true;
        }
        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
            t.write_blocked = false;
        }
        self.mark_dirty(id);
    }

    /// The socket of a connecting flow became writable (or failed): did connect() work?
    fn tcp_connect_done(&mut self, id: FlowId, now: Instant) {
        let Some(Flow {
            proto: Proto::Tcp(t),
            guest_mac,
            key,
            ..
        }) = self.flows.get_mut(id)
        else {
            return;
        };
        let Some(HostStream::Tcp(sock)) = t.sock.as_ref() else {
            return;
        };
        let result = match sock.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match sock.peer_addr() {
                Ok(_) => Ok(()),
                // Still in progress (a spurious wake-up).
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Err(e),
            },
        };
        let guest_mac = *guest_mac;
        match result {
            Ok(()) => {
                let _ = sock.set_nodelay(true);
                t.connecting = None;
                t.readable = true;
                self.counters.tcp.connects_ok += 1;
                let ep = t.tcb.endpoints();
                t.tcb.host_connected(
                    now,
                    &mut TcpSink {
                        out: &mut self.out,
                        guest_mac,
                        ep,
                    },
                );
                self.mark_dirty(id);
            }
            Err(e) => {
                log::debug!("shard {}: {key}: connect failed: {e}", self.id);
                let c = t.connecting.take();
                let quote = c
                    .as_ref()
                    .and_then(|c| c.quote.get(..c.quote_len))
                    .unwrap_or_default();
                connect_failed(
                    &mut t.tcb,
                    &mut self.out,
                    guest_mac,
                    self.cfg.gateway_ip,
                    quote,
                    &e,
                    &mut self.counters.tcp,
                );
                self.remove_flow(id);
            }
        }
    }

    pub(super) fn tcp_timer(&mut self, id: FlowId, now: Instant) {
        let Some(Flow {
            proto: Proto::Tcp(t),
            guest_mac,
            ..
        }) = self.flows.get_mut(id)
        else {
            return;
        };
        let guest_mac = *guest_mac;
        if let Some(c) = &t.connecting {
            if c.deadline <= now {
                t.connecting = None;
                let e = io::Error::from(io::ErrorKind::TimedOut);
                connect_failed(
                    &mut t.tcb,
                    &mut self.out,
                    guest_mac,
                    self.cfg.gateway_ip,
                    // A timeout is answered with RST, not with an ICMP error.
                    &[],
                    &e,
                    &mut self.counters.tcp,
                );
                self.remove_flow(id);
                return;
            }
        }
        let ep = t.tcb.endpoints();
        let eff = t.tcb.on_timer(
            now,
            &mut TcpSink {
                out: &mut self.out,
                guest_mac,
                ep,
            },
        );
        t.note(eff);
        // The service closes sockets, reads what room the timers made, and reschedules.
        self.mark_dirty(id);
    }

    /// End-of-turn work of a connection: guest data to the host, host data to the guest,
    /// segments due, closing.
    pub(super) fn service_tcp(&mut self, id: FlowId, now: Instant) {
        let registry = self.poll.registry();
        let Some(Flow {
            proto: Proto::Tcp(t),
            guest_mac,
            key,
            ..
        }) = self.flows.get_mut(id)
        else {
            return;
        };
        let guest_mac = *guest_mac;
        let ep = t.tcb.endpoints();
        let c = &mut self.counters.tcp;
        let mut sink = TcpSink {
            out: &mut self.out,
            guest_mac,
            ep,
        };
        let mut again = false;
        if t.connecting.is_none() && !t.want_close {
            if let Some(sock) = t.sock.as_mut() {
                // Guest → host first, so that the ACKs poll_output sends carry the window
                // this frees.
                if !t.write_blocked {
                    match write_host(&mut t.tcb, sock, now, &mut sink, c) {
                        Ok((eff, blocked)) => {
                            t.write_blocked = blocked;
                            t.want_shutdown |= eff.host_shutdown;
                            t.want_close |= eff.host_close;
                        }
                        Err(e) => {
                            log::debug!("{key}: host write failed: {e}: RST to the guest");
                            c.host_resets += 1;
                            t.tcb.host_reset(&mut sink);
                            t.want_close = true;
                        }
                    }
                }
                if t.want_shutdown && !t.shut_wr && t.tcb.host_data().iter().all(|s| s.is_empty()) {
                    t.shut_wr = true;
                    let _ = sock.shutdown(Shutdown::Write);
                }
            }
            if let Some(sock) = t.sock.as_mut() {
                if t.readable && !t.host_eof && !t.want_close {
                    match read_host(&mut t.tcb, sock, c) {
                        ReadOutcome::WouldBlock => t.readable = false,
                        ReadOutcome::Paused => {}
                        ReadOutcome::Budget => again = true,
                        ReadOutcome::Eof => {
                            t.readable = false;
                            t.host_eof = true;
                            t.tcb.host_eof();
                        }
                        ReadOutcome::Failed => {
                            log::debug!("{key}: host read failed: RST to the guest");
                            c.host_resets += 1;
                            t.tcb.host_reset(&mut sink);
                            t.want_close = true;
                        }
                    }
                }
            }
        }
        let eff = t.tcb.poll_output(now, &mut sink);
        t.note(eff);
        if eff.want_host_read && t.readable && !t.host_eof {
            again = true;
        }
        if t.want_close && t.sock.is_some() && t.close_socket(registry) {
            log::debug!(
                "{key}: aborted (host EOF {}, host shut down {}): {:?} {:?}",
                t.host_eof,
                t.shut_wr,
                t.tcb.vars(),
                t.tcb.stats()
            );
        }
        if t.tcb.is_closed() {
            self.remove_flow(id);
            return;
        }
        let deadline = t.deadline();
        self.schedule(id, deadline);
        if again {
            self.mark_dirty(id);
        }
    }
}

/// Writes the engine's in-order guest bytes to the host socket. Returns the engine's
/// effects and whether the socket buffer is full.
fn write_host(
    tcb: &mut Tcb,
    sock: &mut HostStream,
    now: Instant,
    sink: &mut TcpSink<'_>,
    c: &mut TcpCounters,
) -> io::Result<(Effects, bool)> {
    let mut eff = Effects::default();
    loop {
        let [a, b] = tcb.host_data();
        if a.is_empty() && b.is_empty() {
            return Ok((eff, false));
        }
        let r = if b.is_empty() {
            sock.write(a)
        } else {
            sock.write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
        };
        match r {
            Ok(0) => return Ok((eff, true)),
            Ok(n) => {
                c.bytes_to_host += n as u64;
                eff = eff.merge(tcb.host_wrote(n, now, sink));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((eff, true)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

enum ReadOutcome {
    /// The socket is drained.
    WouldBlock,
    /// The engine has no room (the guest's window): resume on `want_host_read`.
    Paused,
    /// Read the per-turn budget; more may wait.
    Budget,
    Eof,
    Failed,
}

/// Reads host bytes straight into the engine's send ring, as far as it has room.
fn read_host(tcb: &mut Tcb, sock: &mut HostStream, c: &mut TcpCounters) -> ReadOutcome {
    let mut total = 0usize;
    loop {
        if tcb.send_room() == 0 {
            return ReadOutcome::Paused;
        }
        if total >= READ_BUDGET {
            return ReadOutcome::Budget;
        }
        let r = {
            let [a, b] = tcb.send_spare();
            if b.is_empty() {
                sock.read(a)
            } else {
                sock.read_vectored(&mut [IoSliceMut::new(a), IoSliceMut::new(b)])
            }
        };
        match r {
            Ok(0) => return ReadOutcome::Eof,
            Ok(n) => {
                total += n;
                c.bytes_from_host += n as u64;
                tcb.host_read(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return ReadOutcome::Failed,
        }
    }
}

/// Copies the guest's SYN (IP header + 8 bytes of TCP) for a later ICMP error.
fn syn_quote(packet: &[u8], buf: &mut [u8; QUOTE_MAX]) -> usize {
    let Ok(ip) = Ipv4Packet::new_checked(packet) else {
        return 0;
    };
    let n = (ip.header_len() + 8).min(ip.total_len()).min(QUOTE_MAX);
    match (buf.get_mut(..n), packet.get(..n)) {
        (Some(d), Some(s)) => {
            d.copy_from_slice(s);
            n
        }
        _ => 0,
    }
}
