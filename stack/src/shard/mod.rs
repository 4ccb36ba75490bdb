//! Shards: the NAT's I/O layer, the only part of `stack` with sockets.
//!
//! A shard is one thread running one mio event loop. It owns a set of flows (hashed to it
//! by [`FlowHasher`](crate::flow::FlowHasher)): their guest-side state (a TCP [`Tcb`], a UDP
//! or ICMP echo association) and their host sockets. Nothing is shared with other threads
//! but channels, so the per-packet path takes no lock.
//!
//! ```text
//!  switch loop ──ShardMsg::Frames(batch)──▶ rx + Waker ─▶ process_guest_frame ─┬▶ TCP: Tcb::on_segment
//!                                                                               ├▶ UDP: send() on the flow's socket
//!                                                                               └▶ ICMP: send() on a ping socket
//!  host sockets ──readable/writable (edge-triggered)──▶ dirty list ─▶ service: host write, host read, poll_output
//!  timers (heap of deadlines) ─▶ Tcb::on_timer, connect timeout, idle expiry
//!  frames for guests ─▶ Out (FrameBatch) ──SwitchMsg::Frames──▶ switch loop ──ShardMsg::Recycle──▶ reused
//!  API ──OpenTcp / ServeUdp / CloseTag──▶ active opens and reverse UDP flows towards guests
//! ```
//!
//! Flows opened towards a guest (port forwards, `/tunnel`) use a source port on the
//! gateway address picked so that the flow's key hashes to this shard
//! (`ShardConfig::{hasher, shards}` must be the switch loop's), so the guest's replies
//! come back here. Their first frames carry destination MAC 00:00:00:00:00:00 when the
//! shard has not heard from the guest on that flow: the switch loop fills it in.
//!
//! Each turn: poll (until the next timer, or not at all while work is pending), take `now`
//! once, dispatch every event through one `match` on the token's kind, run due timers,
//! then service the dirty flows (a flow cut off by a budget stays dirty, because
//! edge-triggered readiness will not fire again), and hand the frames to the switch.
//! A flow's timers, sockets and state all live here; no other thread touches them.

mod host;
mod icmp;
mod out;
pub mod stats;
mod table;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, warn};
use mio::{Events, Poll, Waker};

use crate::batch::FrameBatch;
use crate::counters::{DropCounters, DropReason};
use crate::flow::{FlowHasher, FlowKey, Protocol};
use crate::nat::{Destination, NatTable};
use crate::tcp::{TcbStats, TcpConfig};
use crate::wire::checksum::L4Checksum;
use crate::wire::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet, MacAddr};

pub use stats::{
    ForwardCounters, FrameCounters, IcmpCounters, ShardStats, TcpCounters, UdpCounters,
};

use out::Out;
use table::{FlowId, Kind, Slab, Timers};

/// Settings of every shard.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Source MAC of every frame a shard sends.
    pub gateway_mac: MacAddr,
    /// Source of ICMP "host/net unreachable" (a router's message).
    pub gateway_ip: Ipv4Addr,
    /// Link MTU: the largest IP packet sent to a guest.
    pub mtu: u16,
    pub nat: NatTable,
    pub tcp: TcpConfig,
    /// A host `connect()` that has not finished by then is abandoned: RST to the guest.
    pub connect_timeout: Duration,
    /// A UDP flow with no datagram either way for this long is closed.
    pub udp_idle: Duration,
    /// An ICMP echo flow with no request or reply for this long is closed.
    pub icmp_idle: Duration,
    /// Flows per shard (each holds a host socket); beyond it new flows are refused.
    pub max_flows: usize,
    /// Services on the gateway's own address (`gateway_ip`).
    pub services: GatewayServices,
    /// The switch loop's flow hasher and shard count. A shard opening a connection or a
    /// UDP flow towards a guest picks its source port on the gateway address so that the
    /// guest's replies hash back to it: both must be exactly what the switch loop uses.
    pub hasher: FlowHasher,
    pub shards: usize,
    /// Source ports (on `gateway_ip`) for connections and flows opened towards guests.
    pub ephemeral_ports: RangeInclusive<u16>,
    /// Clients (each a flow) per `ServeUdp` socket; datagrams from further clients are
    /// dropped until one idles out.
    pub max_udp_clients: usize,
    /// TCP and UDP checksums of the frames sent to guests: `Partial` when the switch loop
    /// finishes them per port (or hands them to a virtio-net guest as `NEEDS_CSUM`).
    pub l4_checksum: L4Checksum,
}

/// What the gateway's own address serves. Ports not listed: TCP RST, UDP port unreachable.
#[derive(Clone, Debug, Default)]
pub struct GatewayServices {
    /// A guest datagram to `gateway_ip:port` is NATed, like any UDP flow, to this host
    /// address; replies come back from `gateway_ip:port` (DNS: 53 → the DNS server's
    /// UDP socket on 127.0.0.1).
    pub udp: Vec<(u16, SocketAddrV4)>,
    /// A guest SYN to `gateway_ip:port` is accepted at once: the shard keeps one end of a
    /// unix stream pair as the connection's host socket and sends the other end here
    /// (`try_send`: a full or closed channel refuses the connection with RST).
    pub tcp: Vec<(u16, Sender<LocalConn>)>,
}

/// A guest's connection to a TCP service of the gateway: bytes the guest sends arrive on
/// `stream`, bytes written to it reach the guest; EOF / `shutdown(Write)` carry FIN both
/// ways; dropping it early closes the guest's connection.
#[derive(Debug)]
pub struct LocalConn {
    pub stream: UnixStream,
    /// The guest's address and port.
    pub guest: SocketAddrV4,
}

impl ShardConfig {
    /// Defaults for a link of `mtu` bytes: TCP MSS = MTU - 40, connect timeout 30 s,
    /// UDP idle 90 s (upstream's), ICMP idle 60 s, no gateway services, ephemeral ports
    /// 49152-65535, 1024 clients per `ServeUdp` socket. `hasher` is a fresh random one and
    /// `shards` is 1: set both to the switch loop's.
    pub fn new(gateway_mac: MacAddr, gateway_ip: Ipv4Addr, mtu: u16, nat: NatTable) -> Self {
        let mut tcp = TcpConfig {
            mss: mtu.saturating_sub(40).max(536),
            ..TcpConfig::default()
        };
        // Out-of-order bytes live in the receive ring anyway (bounded by `recv_buf`):
        // holding a whole window of them spares the guest needless retransmissions.
        tcp.ooo_buf = tcp.recv_buf;
        ShardConfig {
            gateway_mac,
            gateway_ip,
            mtu,
            nat,
            tcp,
            connect_timeout: Duration::from_secs(30),
            udp_idle: Duration::from_secs(90),
            icmp_idle: Duration::from_secs(60),
            max_flows: 200_000,
            services: GatewayServices::default(),
            hasher: FlowHasher::random(),
            shards: 1,
            // IANA's dynamic ports (RFC 6335 §6).
            ephemeral_ports: 49152..=65535,
            max_udp_clients: 1024,
            l4_checksum: L4Checksum::Full,
        }
    }
}

/// Messages to a shard.
pub enum ShardMsg {
    /// Guest frames (whole Ethernet frames the gateway judged `Transport`) of flows this
    /// shard owns. The batch comes back as [`SwitchMsg::Recycle`].
    Frames(FrameBatch),
    /// A batch of [`SwitchMsg::Frames`] the switch is done with.
    Recycle(FrameBatch),
    /// A counters snapshot, please.
    Stats(Sender<ShardStats>),
    /// Open a TCP connection into a guest (port forwarding, `/tunnel`) and splice it to
    /// `host`, a connected stream socket (TCP or unix). Any shard may be asked: it picks a
    /// source port on the gateway address that hashes to itself. On failure (SYN
    /// unanswered, RST from the guest, no free port) `host` is closed.
    OpenTcp {
        host: OwnedFd,
        guest: SocketAddrV4,
        tag: u64,
    },
    /// UDP port forwarding: `socket` is bound on the host; each client address that sends
    /// to it gets a flow `gateway_ip:port → guest` (idle-closed after `udp_idle`), and the
    /// guest's replies go back to that client from `socket`.
    ServeUdp {
        socket: std::net::UdpSocket,
        guest: SocketAddrV4,
        tag: u64,
    },
    /// Close every flow and socket opened with this tag (TCP: RST to the guest, the host
    /// socket closed; UDP: the flows and the listening socket dropped).
    CloseTag(u64),
    /// Close every flow and end the thread.
    Shutdown,
}

/// Messages from a shard to the switch loop.
pub enum SwitchMsg {
    /// Frames for the guests, to be switched from the gateway's port; send the batch back
    /// with [`ShardMsg::Recycle`] (and wake the shard) once done.
    Frames { shard: usize, batch: FrameBatch },
    /// A [`ShardMsg::Frames`] batch the shard is done with, for reuse.
    Recycle { shard: usize, batch: FrameBatch },
}

/// How other threads reach a shard.
#[derive(Clone)]
pub struct ShardHandle {
    pub id: usize,
    tx: Sender<ShardMsg>,
    waker: Arc<Waker>,
}

impl ShardHandle {
    /// Sends a message and wakes the shard. False if the shard is gone.
    pub fn send(&self, msg: ShardMsg) -> bool {
        self.tx.send(msg).is_ok() && self.waker.wake().is_ok()
    }

    /// Queues a message without waking the shard (it will see it on its next wake-up).
    pub fn send_quiet(&self, msg: ShardMsg) -> bool {
        self.tx.send(msg).is_ok()
    }

    pub fn wake(&self) -> bool {
        self.waker.wake().is_ok()
    }

    /// A counters snapshot (None if the shard does not answer within `timeout`).
    pub fn stats(&self, timeout: Duration) -> Option<ShardStats> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if !self.send(ShardMsg::Stats(tx)) {
            return None;
        }
        rx.recv_timeout(timeout).ok()
    }
}

/// Starts shard `id` on a thread of its own. Its frames for the guests go to `to_switch`,
/// followed by a wake of `switch_waker`.
pub fn spawn(
    cfg: ShardConfig,
    id: usize,
    to_switch: Sender<SwitchMsg>,
    switch_waker: Arc<Waker>,
) -> io::Result<ShardHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), table::waker_token())?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let shard = Shard::new(cfg, id, poll, rx, to_switch, switch_waker);
    thread::Builder::new()
        .name(format!("shard{id}"))
        .spawn(move || shard.run())?;
    Ok(ShardHandle { id, tx, waker })
}

/// A shard driven by another thread's event loop (the switch loop's) instead of a thread
/// of its own: frames of its flows go from the TAP to the host socket with no thread hop.
/// The owner registers [`InlineShard::fd`] (the shard's epoll fd, readable when a host
/// socket, a timer-free message or a wake is pending) and calls [`InlineShard::turn`] on
/// every turn of its loop, blocking no longer than [`InlineShard::timeout`].
pub struct InlineShard {
    shard: Shard,
    events: Events,
}

/// Builds shard `id` to be driven inline by the caller's loop; `to_switch`/`switch_waker`
/// as for [`spawn`].
pub fn inline(
    cfg: ShardConfig,
    id: usize,
    to_switch: Sender<SwitchMsg>,
    switch_waker: Arc<Waker>,
) -> io::Result<(ShardHandle, InlineShard)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), table::waker_token())?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let shard = Shard::new(cfg, id, poll, rx, to_switch, switch_waker);
    Ok((
        ShardHandle { id, tx, waker },
        InlineShard {
            shard,
            events: Events::with_capacity(1024),
        },
    ))
}

impl InlineShard {
    /// The shard's epoll fd, to watch for readability (edge-triggered is enough: every
    /// turn drains it).
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.shard.poll.as_raw_fd()
    }

    /// One turn without blocking: messages, host socket events, timers, output. `polled`:
    /// the owner's poll reported [`InlineShard::fd`] readable; if not (and the last turn
    /// did not fill its event buffer) no host socket has news, and the epoll_wait is skipped.
    pub fn turn(&mut self, polled: bool) {
        if !self.shard.running {
            return;
        }
        if polled || self.busy() {
            self.shard.turn(&mut self.events, Some(Duration::ZERO));
        } else {
            self.events.clear();
            self.shard.work(Instant::now());
        }
    }

    /// One guest frame of this shard's flows, straight from the owner's read buffer (no
    /// batch, no copy); its effects (host writes, replies) happen in the next turn.
    pub fn process_frame(&mut self, frame: &[u8], now: Instant) {
        if self.shard.running {
            self.shard.counters.frames_in += 1;
            self.shard.process_guest_frame(frame, now);
        }
    }

    /// How long the owner may block before the next [`InlineShard::turn`] is due.
    pub fn timeout(&self) -> Option<Duration> {
        self.shard.poll_timeout(Instant::now())
    }

    /// The last turn filled its event buffer: more may be pending.
    pub fn busy(&self) -> bool {
        self.events.iter().count() >= self.events.capacity()
    }
}

/// Per-protocol state of a flow.
enum Proto {
    /// Boxed: a Tcb is large, UDP and ICMP flows are small.
    Tcp(Box<tcp::TcpFlow>),
    Udp(udp::UdpFlow),
    /// A client of a `ServeUdp` socket and the guest (no socket of its own).
    UdpRev(udp::RevFlow),
    Icmp(icmp::IcmpFlow),
}

struct Flow {
    key: FlowKey,
    /// The `tag` of the message that opened it (`CloseTag`).
    tag: Option<u64>,
    /// Where frames for the guest go (the source MAC of its latest frame).
    guest_mac: MacAddr,
    /// The deadline this flow has in the timer heap, if any.
    timer_at: Option<Instant>,
    /// On the dirty list.
    queued: bool,
    proto: Proto,
}

/// Counters of everything but the live flows.
#[derive(Default)]
struct Counters {
    tcp: TcpCounters,
    /// Engine counters of connections already forgotten.
    tcp_closed: TcbStats,
    udp: UdpCounters,
    icmp: IcmpCounters,
    forward: ForwardCounters,
    frames_in: u64,
    drops: DropCounters,
}

struct Shard {
    id: usize,
    cfg: ShardConfig,
    poll: Poll,
    rx: Receiver<ShardMsg>,
    to_switch: Sender<SwitchMsg>,
    out: Out,
    /// Guest datagrams held until the end of the turn.
    udp_tx: udp::UdpTx,
    flows: Slab<Flow>,
    index: HashMap<FlowKey, FlowId>,
    /// `ServeUdp` sockets.
    serves: Slab<udp::Serve>,
    /// Serve sockets with datagrams to read at the end of the turn.
    serve_dirty: Vec<FlowId>,
    /// Where the search for a free source port (towards guests) starts next.
    port_cursor: u32,
    timers: Timers,
    /// Flows with work for the end of the turn (host I/O, output).
    dirty: Vec<FlowId>,
    /// The other half of the dirty list's double buffer.
    dirty_spare: Vec<FlowId>,
    /// Receive buffer for host datagrams (UDP, ICMP).
    scratch: Vec<u8>,
    isn_secret: [u8; 16],
    epoch: Instant,
    counters: Counters,
    running: bool,
}

/// `t + d`, saturating far in the future instead of overflowing (a huge configured timeout).
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(t)
}

/// 16 random bytes from the process's hash seed (std draws it from the OS).
fn random_secret() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let mut out = [0u8; 16];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

impl Shard {
    fn new(
        cfg: ShardConfig,
        id: usize,
        poll: Poll,
        rx: Receiver<ShardMsg>,
        to_switch: Sender<SwitchMsg>,
        switch_waker: Arc<Waker>,
    ) -> Shard {
        let mut out = Out::new(id, cfg.gateway_mac, to_switch.clone(), switch_waker);
        out.l4_checksum = cfg.l4_checksum;
        if id >= cfg.shards {
            warn!(
                "shard {id}: ShardConfig.shards is {}: connections to guests will fail \
                 (set it, and the hasher, to the switch loop's)",
                cfg.shards
            );
        }
        let isn_secret = random_secret();
        let port_cursor =
            u32::from_le_bytes([isn_secret[0], isn_secret[1], isn_secret[2], isn_secret[3]]);
        Shard {
            id,
            cfg,
            poll,
            rx,
            to_switch,
            out,
            udp_tx: udp::UdpTx::default(),
            flows: Slab::new(),
            index: HashMap::new(),
            serves: Slab::new(),
            serve_dirty: Vec::new(),
            port_cursor,
            timers: Timers::default(),
            dirty: Vec::new(),
            dirty_spare: Vec::new(),
            scratch: vec![0u8; 1 << 16],
            isn_secret,
            epoch: Instant::now(),
            counters: Counters::default(),
            running: true,
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        debug!("shard {}: running", self.id);
        while self.running {
            let timeout = self.poll_timeout(Instant::now());
            self.turn(&mut events, timeout);
        }
        debug!("shard {}: stopped", self.id);
    }

    /// Waits up to `timeout` for events, then does everything they and the clock ask.
    fn turn(&mut self, events: &mut Events, timeout: Option<Duration>) {
        if let Err(e) = self.poll.poll(events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                warn!("shard {}: poll failed: {e}", self.id);
                thread::sleep(Duration::from_millis(10));
            }
            events.clear();
            return;
        }
        let now = Instant::now();
        for ev in events.iter() {
            match table::decode(ev.token()) {
                Some((Kind::Waker, _)) => self.drain_messages(now),
                Some((Kind::Flow, id)) => self.flow_event(id, ev, now),
                Some((Kind::Serve, id)) => self.serve_event(id),
                // Not a token of ours: ignore.
                None => {}
            }
        }
        self.work(now);
    }

    /// The part of a turn that needs no poll.
    fn work(&mut self, now: Instant) {
        // Messages queued without a wake (the inline owner's own batches).
        if !self.rx.is_empty() {
            self.drain_messages(now);
        }
        // Before timers may close a flow with datagrams still held.
        self.flush_udp();
        self.run_timers(now);
        self.run_serves(now);
        self.run_dirty(now);
        self.out.flush();
    }

    /// Zero while there is work the output credit allows; else until the next timer.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if (!self.dirty.is_empty() || !self.serve_dirty.is_empty()) && self.out.can_send() {
            return Some(Duration::ZERO);
        }
        self.timers
            .next()
            .map(|t| t.saturating_duration_since(now))
            // A wake-up now and then keeps a lost wake from stalling anything for long.
            .map(|d| d.min(Duration::from_secs(1)))
            .or(Some(Duration::from_secs(1)))
    }

    fn drain_messages(&mut self, now: Instant) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                ShardMsg::Frames(batch) => {
                    for frame in batch.iter() {
                        self.counters.frames_in += 1;
                        self.process_guest_frame(frame, now);
                    }
                    let _ = self.to_switch.send(SwitchMsg::Recycle {
                        shard: self.id,
                        batch,
                    });
                }
                ShardMsg::Recycle(batch) => self.out.recycle(batch),
                ShardMsg::Stats(reply) => {
                    let _ = reply.send(self.stats());
                }
                ShardMsg::OpenTcp { host, guest, tag } => self.open_tcp(host, guest, tag, now),
                ShardMsg::ServeUdp { socket, guest, tag } => self.serve_udp(socket, guest, tag),
                ShardMsg::CloseTag(tag) => {
                    // Held datagrams go first: their flows may be about to close.
                    self.flush_udp();
                    self.close_tag(tag)
                }
                ShardMsg::Shutdown => {
                    self.running = false;
                    for id in self.flows.ids() {
                        self.remove_flow(id);
                    }
                    for id in self.serves.ids() {
                        self.remove_serve(id);
                    }
                }
            }
        }
    }

    /// One guest frame: Ethernet + IPv4 (already validated by the gateway).
    fn process_guest_frame(&mut self, frame: &[u8], now: Instant) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.counters.drops.count(DropReason::EthernetTooShort);
            return;
        };
        if eth.ethertype() != EtherType::IPV4 {
            self.counters.drops.count(DropReason::UnknownEthertype);
            return;
        }
        let guest_mac = eth.src();
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            self.counters.drops.count(DropReason::Ipv4Malformed);
            return;
        };
        match ip.protocol() {
            IpProtocol::TCP => self.process_tcp(guest_mac, &ip, now),
            IpProtocol::UDP => self.process_udp(guest_mac, &ip, now),
            IpProtocol::ICMP => self.process_icmp(guest_mac, &ip, now),
            _ => self
                .counters
                .drops
                .count(DropReason::Ipv4UnsupportedProtocol),
        }
    }

    /// Readiness of a flow's host socket.
    fn flow_event(&mut self, id: FlowId, ev: &mio::event::Event, now: Instant) {
        let Some(flow) = self.flows.get_mut(id) else {
            return; // stale: the flow is gone
        };
        match &mut flow.proto {
            Proto::Tcp(_) => self.tcp_event(id, ev, now),
            Proto::Udp(u) => {
                u.readable = true;
                self.mark_dirty(id);
            }
            Proto::Icmp(i) => {
                i.readable = true;
                self.mark_dirty(id);
            }
            // No socket of its own: never registered.
            Proto::UdpRev(_) => {}
        }
    }

    fn mark_dirty(&mut self, id: FlowId) {
        if let Some(f) = self.flows.get_mut(id) {
            if !f.queued {
                f.queued = true;
                self.dirty.push(id);
            }
        }
    }

    /// Host I/O and output of every dirty flow, as far as the output credit goes.
    fn run_dirty(&mut self, now: Instant) {
        // Flows marked during the pass go to the spare list (both keep their capacity).
        let spare = std::mem::take(&mut self.dirty_spare);
        let mut list = std::mem::replace(&mut self.dirty, spare);
        let mut i = 0;
        while i < list.len() {
            if !self.out.can_send() {
                break;
            }
            let id = list[i];
            i += 1;
            let Some(f) = self.flows.get_mut(id) else {
                continue;
            };
            f.queued = false;
            match f.proto {
                Proto::Tcp(_) => self.service_tcp(id, now),
                Proto::Udp(_) => self.service_udp(id, now),
                Proto::Icmp(_) => self.service_icmp(id, now),
                Proto::UdpRev(_) => {}
            }
        }
        if i < list.len() {
            // Flows not reached keep their place, ahead of those queued meanwhile.
            list.drain(..i);
            let mut later = std::mem::take(&mut self.dirty);
            list.append(&mut later);
            self.dirty = list;
            self.dirty_spare = later;
        } else {
            list.clear();
            self.dirty_spare = list;
        }
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some((at, id)) = self.timers.pop_due(now) {
            let Some(f) = self.flows.get_mut(id) else {
                continue;
            };
            if f.timer_at != Some(at) {
                continue; // superseded by an earlier deadline
            }
            f.timer_at = None;
            match f.proto {
                Proto::Tcp(_) => self.tcp_timer(id, now),
                Proto::Udp(_) => self.udp_timer(id, now),
                Proto::UdpRev(_) => self.udp_rev_timer(id, now),
                Proto::Icmp(_) => self.icmp_timer(id, now),
            }
        }
    }

    /// Puts the flow's next deadline in the heap unless an earlier one is there already.
    fn schedule(&mut self, id: FlowId, deadline: Option<Instant>) {
        let Some(at) = deadline else { return };
        let Some(f) = self.flows.get_mut(id) else {
            return;
        };
        if f.timer_at.is_none_or(|t| at < t) {
            f.timer_at = Some(at);
            self.timers.push(at, id);
        }
    }

    fn insert_flow(
        &mut self,
        key: FlowKey,
        guest_mac: MacAddr,
        tag: Option<u64>,
        proto: Proto,
    ) -> FlowId {
        let id = self.flows.insert(Flow {
            key,
            tag,
            guest_mac,
            timer_at: None,
            queued: false,
            proto,
        });
        self.index.insert(key, id);
        id
    }

    /// Forgets a flow and closes its host socket.
    fn remove_flow(&mut self, id: FlowId) {
        let Some(flow) = self.flows.remove(id) else {
            return;
        };
        if self.index.get(&flow.key) == Some(&id) {
            self.index.remove(&flow.key);
        }
        let registry = self.poll.registry();
        match flow.proto {
            Proto::Tcp(t) => {
                if t.active_open_pending() {
                    self.counters.forward.active_open_failed += 1;
                }
                self.counters.tcp.flows_closed += 1;
                stats::add_tcb_stats(&mut self.counters.tcp_closed, &t.tcb.stats());
                t.close(registry);
            }
            Proto::Udp(u) => u.close(registry),
            Proto::UdpRev(r) => self.detach_client(&r, id),
            Proto::Icmp(i) => i.close(registry),
        }
    }

    /// `ShardMsg::CloseTag`: every flow and serve socket opened with `tag`.
    fn close_tag(&mut self, tag: u64) {
        self.counters.forward.close_tag_msgs += 1;
        for id in self.flows.ids() {
            let Some(f) = self.flows.get_mut(id) else {
                continue;
            };
            if f.tag != Some(tag) {
                continue;
            }
            match f.proto {
                Proto::Tcp(_) => self.tcp_close_tagged(id),
                _ => {
                    self.counters.forward.tag_closed_udp += 1;
                    self.remove_flow(id);
                }
            }
        }
        for id in self.serves.ids() {
            if self.serves.get_mut(id).is_some_and(|s| s.tag == tag) {
                self.counters.forward.tag_closed_serve_sockets += 1;
                self.remove_serve(id);
            }
        }
    }

    /// An address a connection or flow towards a guest may go to: inside the virtual
    /// subnet, and not the gateway, a NATed virtual IP or a broadcast address.
    fn is_guest_addr(&self, guest: SocketAddrV4) -> bool {
        guest.port() != 0 && self.cfg.nat.resolve(*guest.ip()) == Destination::InSubnetUnused
    }

    /// A source port on the gateway address for a new flow towards `guest`: from the
    /// ephemeral range, not a gateway service port, not in use with `guest`, and such that
    /// the flow's key hashes to this shard (the switch loop sends the guest's replies to
    /// the shard its hasher picks). `None` if every port is taken.
    fn pick_port(&mut self, proto: Protocol, guest: SocketAddrV4) -> Option<u16> {
        let lo = (*self.cfg.ephemeral_ports.start()).max(1);
        let hi = *self.cfg.ephemeral_ports.end();
        if hi < lo {
            return None;
        }
        let span = u32::from(hi) - u32::from(lo) + 1;
        let is_service = |p: u16| match proto {
            Protocol::Tcp => self.cfg.services.tcp.iter().any(|(s, _)| *s == p),
            Protocol::Udp => self.cfg.services.udp.iter().any(|(s, _)| *s == p),
            Protocol::Icmp => false,
        };
        for i in 0..span {
            let off = self.port_cursor.wrapping_add(i) % span;
            let Ok(port) = u16::try_from(u32::from(lo) + off) else {
                continue;
            };
            let key = FlowKey {
                proto,
                guest,
                remote: SocketAddrV4::new(self.cfg.gateway_ip, port),
            };
            if self.cfg.hasher.shard_of(&key, self.cfg.shards) != self.id
                || self.index.contains_key(&key)
                || is_service(port)
            {
                continue;
            }
            self.port_cursor = off.wrapping_add(1) % span;
            return Some(port);
        }
        None
    }

    fn flow_limit_reached(&self) -> bool {
        self.flows.len() >= self.cfg.max_flows
    }

    fn stats(&self) -> ShardStats {
        let mut s = ShardStats {
            shard: self.id,
            tcp: self.counters.tcp,
            tcp_engine: self.counters.tcp_closed,
            udp: self.counters.udp,
            icmp: self.counters.icmp,
            forward: self.counters.forward,
            frames: self.out.counters,
            drops: self.counters.drops.clone(),
        };
        s.frames.frames_in = self.counters.frames_in;
        s.forward.serve_sockets_open = self.serves.len() as u64;
        s.drops.add(&self.out.drops);
        for f in self.flows.iter() {
            match &f.proto {
                Proto::Tcp(t) => {
                    s.tcp.flows_open += 1;
                    if t.is_connecting() {
                        s.tcp.connecting += 1;
                    }
                    stats::add_tcb_stats(&mut s.tcp_engine, &t.tcb.stats());
                }
                Proto::Udp(_) => s.udp.flows_open += 1,
                Proto::UdpRev(_) => {
                    s.udp.flows_open += 1;
                    s.forward.reverse_flows_open += 1;
                }
                Proto::Icmp(_) => s.icmp.flows_open += 1,
            }
        }
        s
    }
}
