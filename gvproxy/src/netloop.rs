//! The switch loop: one mio event loop that owns every VM link, the L2 switch and the
//! gateway's ARP/ICMP responder.
//!
//! ```text
//!  acceptor threads ──NewLink──▶ channel + Waker ─┐
//!                                                 ▼
//!  link fds ──readable──▶ Link::read_frames ─▶ route(port, frame)
//!                                                 ├─▶ Switch::process ─▶ other links' queues
//!                                                 └─▶ Gateway::process_frame ─▶ gw_out ─▶ route(gw, ..)
//!                                                       └─ Verdict::Transport ─▶ hash(flow) ─▶ shard k's FrameBatch
//!  end of the read turn: each non-empty shard batch ─▶ ShardMsg::Frames + wake shard k
//!  shards ──SwitchMsg::Frames + Waker──▶ route(gw, ..) frame by frame ─▶ batch back to the shard
//!  after each batch: flush every link with queued frames (WRITABLE interest only while
//!  the kernel buffer is full)
//! ```
//!
//! Readiness is edge-triggered: a link cut off by the read budget goes on a backlog and
//! is read again next turn without waiting for a new event.
//!
//! Backpressure: a shard's frames stop being switched while the link they go to has more
//! than [`LINK_HIGH_WATER`] bytes queued; the shard gets its batches back only once they
//! are switched, and holds its output while all its batches are out. Guest frames for a
//! shard that is behind by more than [`SHARD_IN_LIMIT`] bytes are dropped and counted.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::{json, Value};

use services::dhcp::DhcpServer;
use services::notify::{Notification, Notifier};
use stack::batch::FrameBatch;
use stack::counters::{DropCounters, DropReason};
use stack::flow::{FlowHasher, FlowKey};
use stack::gateway::{Gateway, GatewayConfig, Verdict};
use stack::shard::{self, InlineShard, ShardConfig, ShardHandle, ShardMsg, ShardStats, SwitchMsg};
use stack::wire::checksum::L4Checksum;
use stack::wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, EthernetRepr, MacAddr,
};
use std::net::Ipv4Addr;
use switch::pcap::PcapTap;
use switch::{Decision, Learned, PortId, Switch};
use transports::link::{Link, LinkError, ReadStatus};
use transports::vnet::PartialCsum;

/// Frames read from one link before the loop looks at the others.
const READ_BUDGET: usize = 256;
/// Outgoing bytes queued per link before frames are dropped.
pub const TX_LIMIT_BYTES: usize = 4 << 20;
const WAKER: Token = Token(usize::MAX);
/// The inline shard's epoll fd.
const INLINE: Token = Token(usize::MAX - 1);
const AGE_EVERY: Duration = Duration::from_secs(30);
/// A shard's frames wait while the link they go to has this much queued (below the link's
/// limit, so frames from shards are never dropped at a live link).
pub const LINK_HIGH_WATER: usize = TX_LIMIT_BYTES / 2;
/// Guest frame bytes handed to a shard and not yet processed; beyond it frames are dropped.
pub const SHARD_IN_LIMIT: usize = 16 << 20;
/// A shard's input batch is handed over early once it holds this much.
const SHARD_BATCH_BYTES: usize = 256 << 10;
/// How long `/stats` waits for each shard.
const SHARD_STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// Tokens: port number * 2 for the read side, + 1 for a separate write fd (stdio).
fn read_token(port: PortId) -> Token {
    Token(port * 2)
}
fn write_token(port: PortId) -> Token {
    Token(port * 2 + 1)
}

/// A VM link handed to the loop by an acceptor.
pub struct NewLink {
    pub link: Link,
    /// For logs: "qemu unix:///run/qemu.sock", "/connect tcp 127.0.0.1:50312"...
    pub name: String,
    /// Closing this link ends gvproxy (stdio: nobody can reconnect).
    pub fatal_on_close: bool,
    /// Told when the link closes (vfkit waits for it to learn a new peer).
    pub on_close: Option<Sender<()>>,
}

/// Requests from the API threads.
pub enum Command {
    Link(Box<NewLink>),
    Stats(Sender<Value>),
    /// `/leases`: IP → MAC.
    Leases(Sender<Vec<(Ipv4Addr, MacAddr)>>),
    /// `/cam`: MAC → switch port.
    Cam(Sender<Vec<(MacAddr, PortId)>>),
}

/// What the loop serves besides switching: DHCP, capture, notifications.
pub struct LoopServices {
    pub dhcp: DhcpServer,
    pub pcap: Option<PcapTap>,
    pub notifier: Notifier,
}

/// How often the loop may ask for one unknown neighbour.
const ARP_RETRY: Duration = Duration::from_secs(1);

/// The handle other threads use to reach the loop.
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Command>,
    waker: Arc<Waker>,
    shards: Vec<ShardHandle>,
}

impl Handle {
    pub fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).is_ok() && self.waker.wake().is_ok()
    }

    pub fn add_link(&self, link: NewLink) -> bool {
        self.send(Command::Link(Box::new(link)))
    }

    /// Asks the loop and the shards for a counters snapshot (None if the loop does not
    /// answer in time; a shard that does not answer is left out).
    /// The NAT shards, for messages that go to them directly.
    pub fn shards(&self) -> Vec<ShardHandle> {
        self.shards.clone()
    }

    pub fn stats(&self) -> Option<Value> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if !self.send(Command::Stats(tx)) {
            return None;
        }
        let mut v = rx.recv_timeout(Duration::from_secs(5)).ok()?;
        let shards: Vec<ShardStats> = self
            .shards
            .iter()
            .filter_map(|s| s.stats(SHARD_STATS_TIMEOUT))
            .collect();
        add_shard_stats(&mut v, &shards, self.shards.len());
        Some(v)
    }
}

/// The `flows`, `tcp`, `udp`, `icmp` and `shard_frames` sections: totals, plus the same
/// counters per shard under `shards`; shard drops are added to `drops`.
fn add_shard_stats(v: &mut Value, shards: &[ShardStats], configured: usize) {
    let mut total = ShardStats::default();
    for s in shards {
        total.add(s);
    }
    let tcp = |s: &ShardStats| {
        let mut m: serde_json::Map<String, Value> = s
            .tcp
            .iter()
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect();
        for (k, n) in shard::stats::tcb_stats_iter(&s.tcp_engine) {
            m.insert(k.to_string(), json!(n));
        }
        m
    };
    let section = |total: serde_json::Map<String, Value>,
                   per: Vec<serde_json::Map<String, Value>>| {
        let mut m = total;
        let per: Vec<Value> = per
            .into_iter()
            .zip(shards)
            .map(|(mut p, s)| {
                p.insert("shard".into(), json!(s.shard));
                Value::Object(p)
            })
            .collect();
        m.insert("shards".into(), Value::Array(per));
        Value::Object(m)
    };
    let map = |it: &mut dyn Iterator<Item = (&'static str, u64)>| {
        it.map(|(k, n)| (k.to_string(), json!(n)))
            .collect::<serde_json::Map<String, Value>>()
    };
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    obj.insert(
        "flows".into(),
        json!({
            "open": total.flows_open(),
            "tcp": total.tcp.flows_open,
            "udp": total.udp.flows_open,
            "icmp": total.icmp.flows_open,
            "shards_configured": configured,
            "shards_answered": shards.len(),
            "shards": shards.iter().map(|s| json!({
                "shard": s.shard,
                "open": s.flows_open(),
                "tcp": s.tcp.flows_open,
                "udp": s.udp.flows_open,
                "icmp": s.icmp.flows_open,
            })).collect::<Vec<_>>(),
        }),
    );
    obj.insert(
        "tcp".into(),
        section(tcp(&total), shards.iter().map(tcp).collect()),
    );
    obj.insert(
        "udp".into(),
        section(
            map(&mut total.udp.iter()),
            shards.iter().map(|s| map(&mut s.udp.iter())).collect(),
        ),
    );
    obj.insert(
        "icmp".into(),
        section(
            map(&mut total.icmp.iter()),
            shards.iter().map(|s| map(&mut s.icmp.iter())).collect(),
        ),
    );
    obj.insert(
        "forward".into(),
        section(
            map(&mut total.forward.iter()),
            shards.iter().map(|s| map(&mut s.forward.iter())).collect(),
        ),
    );
    obj.insert(
        "shard_frames".into(),
        section(
            map(&mut total.frames.iter()),
            shards.iter().map(|s| map(&mut s.frames.iter())).collect(),
        ),
    );
    if let Some(Value::Object(drops)) = obj.get_mut("drops") {
        for (name, n) in total.drops.iter().filter(|&(_, n)| n > 0) {
            let cur = drops.get(name).and_then(Value::as_u64).unwrap_or(0);
            drops.insert(name.to_string(), json!(cur + n));
        }
    }
}

struct Port {
    link: Link,
    name: String,
    read_fd: RawFd,
    write_fd: RawFd,
    write_interest: bool,
    fatal_on_close: bool,
    on_close: Option<Sender<()>>,
}

pub struct NetLoop {
    poll: Poll,
    rx: Receiver<Command>,
    switch: Switch,
    gateway: Gateway,
    gateway_port: PortId,
    /// Indexed by switch port; the gateway's slot stays None.
    links: Vec<Option<Port>>,
    gw_out: FrameBatch,
    /// Ports with queued outgoing frames.
    dirty: Vec<PortId>,
    /// Ports whose last read stopped on the budget.
    backlog: Vec<PortId>,
    /// Links closed because their peer broke the framing or the socket failed.
    links_closed: u64,
    links_oversize: u64,
    /// Frames the loop dropped on the way to a shard.
    unrouted: DropCounters,
    shards: Vec<ShardHandle>,
    /// Shard 0 runs in this thread: its flows cross no thread boundary.
    inline: InlineShard,
    hasher: FlowHasher,
    /// Guest frames being collected for each shard this turn.
    shard_in: Vec<FrameBatch>,
    /// Bytes handed to each shard and not yet returned.
    shard_in_flight: Vec<usize>,
    /// Empty batches for `shard_in`.
    free_batches: Vec<FrameBatch>,
    from_shards: Receiver<SwitchMsg>,
    /// Shards' frames for the guests not switched yet (the first may be partly done).
    shard_out: VecDeque<(usize, FrameBatch)>,
    shard_out_cursor: usize,
    /// Switching of shard frames waits for this port's queue to drain.
    blocked_on: Option<PortId>,
    /// Counters of links that are gone, so totals never go backwards.
    closed_rx_runts: u64,
    closed_tx_dropped: u64,
    on_fatal_close: Box<dyn Fn() + Send>,
    last_age: Instant,
    services: LoopServices,
    /// IPv4 → MAC of the guests, learned from their ARP traffic: frames the shards open
    /// towards a guest they have not heard from carry a zero destination MAC.
    neighbours: HashMap<Ipv4Addr, MacAddr>,
    /// When the loop last asked for each unknown neighbour.
    arp_asked: HashMap<Ipv4Addr, Instant>,
    neighbour_unknown: u64,
    /// The time of the current turn.
    now: Instant,
}

impl NetLoop {
    /// The loop, and `shards` NAT shards started on threads of their own.
    pub fn new(
        gw: GatewayConfig,
        mut shard_cfg: ShardConfig,
        shards: usize,
        services: LoopServices,
        on_fatal_close: Box<dyn Fn() + Send>,
    ) -> io::Result<(NetLoop, Handle)> {
        // Shards opening flows towards guests pick ports whose replies hash back to them:
        // they need the very hasher and shard count this loop routes with.
        let hasher = FlowHasher::random();
        shard_cfg.hasher = hasher;
        shard_cfg.shards = shards.max(1);
        // Each link finishes (or offloads to its guest) the checksums of shard frames.
        shard_cfg.l4_checksum = L4Checksum::Partial;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (to_switch, from_shards) = crossbeam_channel::unbounded();
        // Shard 0 in this thread, the others on threads of their own: as many busy
        // threads as shards.
        let (h0, inline) = shard::inline(shard_cfg.clone(), 0, to_switch.clone(), waker.clone())?;
        poll.registry()
            .register(&mut SourceFd(&inline.fd()), INLINE, Interest::READABLE)?;
        let mut handles = vec![h0];
        for id in 1..shards.max(1) {
            handles.push(shard::spawn(
                shard_cfg.clone(),
                id,
                to_switch.clone(),
                waker.clone(),
            )?);
        }
        let n = handles.len();
        let now = Instant::now();
        let mut switch = Switch::new();
        let gateway_port = switch.add_port();
        switch.pin(gw.mac, gateway_port, now);
        let lp = NetLoop {
            poll,
            rx,
            switch,
            gateway: Gateway::new(gw),
            gateway_port,
            links: Vec::new(),
            gw_out: FrameBatch::new(),
            dirty: Vec::new(),
            backlog: Vec::new(),
            links_closed: 0,
            links_oversize: 0,
            unrouted: DropCounters::default(),
            shards: handles.clone(),
            inline,
            hasher,
            shard_in: (0..n).map(|_| FrameBatch::new()).collect(),
            shard_in_flight: vec![0; n],
            free_batches: Vec::new(),
            from_shards,
            shard_out: VecDeque::new(),
            shard_out_cursor: 0,
            blocked_on: None,
            closed_rx_runts: 0,
            closed_tx_dropped: 0,
            on_fatal_close,
            last_age: now,
            services,
            neighbours: HashMap::new(),
            arp_asked: HashMap::new(),
            neighbour_unknown: 0,
            now,
        };
        Ok((
            lp,
            Handle {
                tx,
                waker,
                shards: handles,
            },
        ))
    }

    /// Runs until the process ends.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = if self.backlog.is_empty() && !self.inline.busy() {
                let shard = self.inline.timeout().unwrap_or(AGE_EVERY);
                Some(shard.min(AGE_EVERY))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!("switch loop: poll failed: {e}");
                }
                continue;
            }
            let now = Instant::now();
            self.now = now;
            // Shards return input batches without a wake-up: look every turn, so the
            // in-flight count never lags behind what they processed.
            self.drain_shards();
            let mut readable: Vec<PortId> = std::mem::take(&mut self.backlog);
            let mut inline_ready = false;
            for ev in events.iter() {
                let t = ev.token();
                if t == INLINE {
                    // The inline shard runs every turn, below.
                    inline_ready = true;
                    continue;
                }
                if t == WAKER {
                    self.drain_commands(now);
                    self.drain_shards();
                    continue;
                }
                let port = t.0 / 2;
                if ev.is_writable() || ev.is_write_closed() {
                    self.dirty.push(port);
                }
                if t.0 % 2 == 0 && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                    readable.push(port);
                }
            }
            readable.sort_unstable();
            readable.dedup();
            for port in readable {
                self.read_port(port, now);
            }
            self.send_shard_batches();
            self.inline.turn(inline_ready);
            self.drain_shards();
            // Shard frames wait for full link queues: flush, switch more, until one
            // blocks on a full socket or nothing is left.
            for _ in 0..16 {
                self.flush_dirty();
                if !self.switch_shard_frames(now) {
                    break;
                }
            }
            self.flush_dirty();
            if now.duration_since(self.last_age) >= AGE_EVERY {
                self.last_age = now;
                for mac in self.switch.age(now) {
                    debug!("switch: {mac} aged out");
                }
            }
        }
    }

    fn drain_commands(&mut self, now: Instant) {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::Link(nl) => self.add_link(*nl, now),
                Command::Stats(reply) => {
                    let _ = reply.send(self.stats());
                }
                Command::Leases(reply) => {
                    let _ = reply.send(self.services.dhcp.leases());
                }
                Command::Cam(reply) => {
                    let _ = reply.send(self.switch.cam().collect());
                }
            }
        }
    }

    fn add_link(&mut self, nl: NewLink, _now: Instant) {
        let port = self.switch.add_port();
        let read_fd = nl.link.read_fd();
        let write_fd = nl.link.write_fd();
        let reg = self.poll.registry();
        let res = if read_fd == write_fd {
            reg.register(
                &mut SourceFd(&read_fd),
                read_token(port),
                Interest::READABLE | Interest::WRITABLE,
            )
        } else {
            reg.register(
                &mut SourceFd(&read_fd),
                read_token(port),
                Interest::READABLE,
            )
            .and_then(|()| {
                reg.register(
                    &mut SourceFd(&write_fd),
                    write_token(port),
                    Interest::WRITABLE,
                )
            })
        };
        if let Err(e) = res {
            warn!("{}: cannot watch the link: {e}", nl.name);
            self.switch.remove_port(port);
            return;
        }
        info!("{}: link up (switch port {port})", nl.name);
        if self.links.len() <= port {
            self.links.resize_with(port + 1, || None);
        }
        self.links[port] = Some(Port {
            link: nl.link,
            name: nl.name,
            read_fd,
            write_fd,
            write_interest: false,
            fatal_on_close: nl.fatal_on_close,
            on_close: nl.on_close,
        });
        // Bytes may already wait (a /connect client's first frames): read them now,
        // edge-triggered readiness may have fired before registration.
        self.backlog.push(port);
    }

    fn read_port(&mut self, port: PortId, now: Instant) {
        let Some(mut p) = self.links.get_mut(port).and_then(Option::take) else {
            return;
        };
        let result = {
            let mut on_frame = |frame: &[u8], partial: Option<PartialCsum>| {
                self.route(port, frame, partial, now);
            };
            p.link.read_frames_partial(READ_BUDGET, &mut on_frame)
        };
        let close = match result {
            Ok(ReadStatus::WouldBlock) => None,
            Ok(ReadStatus::Budget) => {
                self.backlog.push(port);
                None
            }
            Ok(ReadStatus::Closed) => Some("closed by the peer".to_string()),
            Err(LinkError::TooLong(len)) => {
                self.links_oversize += 1;
                Some(format!(
                    "frame length {len} exceeds {} bytes: disconnecting",
                    transports::framing::MAX_STREAM_FRAME
                ))
            }
            Err(LinkError::Io(e)) => Some(format!("read failed: {e}")),
        };
        self.links[port] = Some(p);
        self.dispatch_gateway_out(now);
        if let Some(why) = close {
            self.close_port(port, &why);
        }
    }

    /// Switches one frame that entered on `port`; `partial`: its TCP/UDP checksum is still
    /// to be finished (virtio-net offload), which only another link needs.
    fn route(
        &mut self,
        port: PortId,
        frame: &[u8],
        partial: Option<PartialCsum>,
        now: Instant,
    ) -> Decision {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Decision::Filter;
        };
        if let Some(pcap) = &self.services.pcap {
            match partial {
                // The capture shows the checksum a guest will see.
                Some(p) => {
                    let mut whole = frame.to_vec();
                    p.complete(&mut whole);
                    pcap.capture(&whole);
                }
                None => pcap.capture(frame),
            }
        }
        if port != self.gateway_port && eth.ethertype() == EtherType::ARP {
            self.learn_neighbour(frame);
        }
        let (decision, learned) = self
            .switch
            .process(port, eth.dst(), eth.src(), frame.len(), now);
        match learned {
            Learned::New => {
                debug!("switch: {} learned on port {port}", eth.src());
                self.services
                    .notifier
                    .send(Notification::connection_established(eth.src()));
            }
            Learned::Moved { from } => {
                debug!("switch: {} moved from port {from} to {port}", eth.src())
            }
            Learned::Known | Learned::Ignored => {}
        }
        match decision {
            Decision::Unicast(to) => self.deliver(to, frame, partial),
            Decision::Flood => {
                for to in 0..self.links.len().max(self.gateway_port + 1) {
                    if to != port && self.switch.is_open(to) {
                        self.deliver(to, frame, partial);
                    }
                }
            }
            Decision::Filter => {}
        }
        decision
    }

    /// Hands a guest frame to the shard that owns its flow: the inline shard 0 takes it
    /// at once, the others get it in a batch.
    fn dispatch_to_shard(&mut self, frame: &[u8]) {
        let Some(key) = FlowKey::of_frame(frame) else {
            self.unrouted.count(DropReason::NoRoute);
            return;
        };
        let k = self.hasher.shard_of(&key, self.shards.len());
        if k == 0 {
            self.inline.process_frame(frame, self.now);
            return;
        }
        let (Some(batch), Some(&in_flight)) =
            (self.shard_in.get_mut(k), self.shard_in_flight.get(k))
        else {
            return;
        };
        if in_flight + batch.bytes() + frame.len() > SHARD_IN_LIMIT {
            self.unrouted.count(DropReason::ShardBusy);
            return;
        }
        batch.push(frame);
        if batch.bytes() >= SHARD_BATCH_BYTES {
            self.send_shard_batch(k);
        }
    }

    fn send_shard_batch(&mut self, k: usize) {
        let fresh = self.free_batches.pop().unwrap_or_default();
        let Some(slot) = self.shard_in.get_mut(k) else {
            return;
        };
        let batch = std::mem::replace(slot, fresh);
        if batch.is_empty() {
            return;
        }
        if let (Some(n), Some(shard)) = (self.shard_in_flight.get_mut(k), self.shards.get(k)) {
            *n += batch.bytes();
            // The inline shard takes its batches in this turn: no wake needed.
            let sent = if k == 0 {
                shard.send_quiet(ShardMsg::Frames(batch))
            } else {
                shard.send(ShardMsg::Frames(batch))
            };
            if !sent {
                warn!("shard {k} is gone; its frames are lost");
            }
        }
    }

    /// End of a read turn: every shard gets what was collected for it.
    fn send_shard_batches(&mut self) {
        for k in 0..self.shard_in.len() {
            if self.shard_in.get(k).is_some_and(|b| !b.is_empty()) {
                self.send_shard_batch(k);
            }
        }
    }

    /// Messages from the shards: frames to switch, input batches to reuse.
    fn drain_shards(&mut self) {
        while let Ok(msg) = self.from_shards.try_recv() {
            match msg {
                SwitchMsg::Frames { shard, batch } => self.shard_out.push_back((shard, batch)),
                SwitchMsg::Recycle { shard, mut batch } => {
                    if let Some(n) = self.shard_in_flight.get_mut(shard) {
                        *n = n.saturating_sub(batch.bytes());
                    }
                    if self.free_batches.len() < 4 * self.shards.len() {
                        batch.clear();
                        self.free_batches.push(batch);
                    }
                }
            }
        }
    }

    fn congested(&self, port: PortId) -> bool {
        matches!(self.links.get(port), Some(Some(p)) if p.link.pending_bytes() > LINK_HIGH_WATER)
    }

    /// Switches shard frames until a destination link is congested. Returns whether any
    /// frame was switched.
    fn switch_shard_frames(&mut self, now: Instant) -> bool {
        let mut progress = false;
        while let Some((shard, batch)) = self.shard_out.pop_front() {
            while self.shard_out_cursor < batch.len() {
                if let Some(p) = self.blocked_on {
                    if self.congested(p) {
                        self.shard_out.push_front((shard, batch));
                        return progress;
                    }
                    self.blocked_on = None;
                }
                let Some(frame) = batch.get(self.shard_out_cursor) else {
                    break;
                };
                self.shard_out_cursor += 1;
                progress = true;
                let resolved;
                let frame = if frame.get(..6) == Some(&[0u8; 6][..]) {
                    match self.resolve_neighbour(frame, now) {
                        Some(f) => {
                            resolved = f;
                            &resolved[..]
                        }
                        None => continue,
                    }
                } else {
                    frame
                };
                // Shards leave TCP/UDP checksums partial (ShardConfig::l4_checksum).
                let partial = PartialCsum::of_frame(frame);
                if let Decision::Unicast(p) = self.route(self.gateway_port, frame, partial, now) {
                    if self.congested(p) {
                        self.blocked_on = Some(p);
                    }
                }
            }
            self.shard_out_cursor = 0;
            if let Some(h) = self.shards.get(shard) {
                h.send(ShardMsg::Recycle(batch));
            }
        }
        progress
    }

    /// Hands a frame to port `to`: the gateway, or a link's queue.
    fn deliver(&mut self, to: PortId, frame: &[u8], partial: Option<PartialCsum>) {
        if to == self.gateway_port {
            self.switch.count_tx(to, frame.len());
            let verdict = if partial.is_some() {
                self.gateway
                    .process_offloaded_frame(frame, &mut self.gw_out)
            } else {
                self.gateway.process_frame(frame, &mut self.gw_out)
            };
            match verdict {
                Verdict::Handled | Verdict::Dropped(_) => {}
                // TCP/UDP/ICMP for other hosts: the shard that owns the flow takes it.
                Verdict::Transport => {
                    if is_dhcp_request(frame) {
                        let now = self.now;
                        self.services
                            .dhcp
                            .process_frame(frame, now, &mut self.gw_out);
                    } else {
                        self.dispatch_to_shard(frame);
                    }
                }
            }
            return;
        }
        if let Some(Some(p)) = self.links.get_mut(to) {
            self.switch.count_tx(to, frame.len());
            // A frame the link cannot take is counted there (tx_dropped). A partial
            // checksum goes to a virtio-net guest as it is; other links finish it.
            if p.link.queue_frame_partial(frame, partial) && !p.write_interest {
                self.dirty.push(to);
            }
        }
    }

    /// Frames the gateway produced go through the switch like any other port's.
    fn dispatch_gateway_out(&mut self, now: Instant) {
        if self.gw_out.is_empty() {
            return;
        }
        let out = std::mem::take(&mut self.gw_out);
        for frame in out.iter() {
            self.route(self.gateway_port, frame, None, now);
        }
        let mut out = out;
        out.clear();
        self.gw_out = out;
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for port in dirty.drain(..) {
            let Some(Some(p)) = self.links.get_mut(port) else {
                continue;
            };
            match p.link.flush() {
                Ok(done) => {
                    p.write_interest = !done;
                }
                Err(LinkError::Io(e)) => {
                    let why = format!("write failed: {e}");
                    self.close_port(port, &why);
                }
                Err(LinkError::TooLong(_)) => {}
            }
        }
        self.dirty = dirty;
    }

    fn close_port(&mut self, port: PortId, why: &str) {
        let Some(p) = self.links.get_mut(port).and_then(Option::take) else {
            return;
        };
        let reg = self.poll.registry();
        let _ = reg.deregister(&mut SourceFd(&p.read_fd));
        if p.write_fd != p.read_fd {
            let _ = reg.deregister(&mut SourceFd(&p.write_fd));
        }
        let c = p.link.counters();
        self.closed_rx_runts += c.rx_runts;
        self.closed_tx_dropped += c.tx_dropped;
        self.links_closed += 1;
        for mac in self.switch.remove_port(port) {
            debug!("switch: {mac} left with port {port}");
            self.services
                .notifier
                .send(Notification::connection_closed(mac));
        }
        info!("{}: link down: {why}", p.name);
        if let Some(tx) = p.on_close {
            let _ = tx.send(());
        }
        if p.fatal_on_close {
            (self.on_fatal_close)();
        }
    }

    /// Learns IPv4 → MAC from a guest's ARP request or reply (RFC 826: the sender's pair).
    fn learn_neighbour(&mut self, frame: &[u8]) {
        let Some(arp) = frame
            .get(EthernetRepr::HEADER_LEN..)
            .and_then(|p| ArpPacket::new_checked(p).ok())
            .map(|p| ArpRepr::parse(&p))
        else {
            return;
        };
        if arp.sender_ip.is_unspecified() || !arp.sender_hw.is_unicast() {
            return;
        }
        if self.neighbours.get(&arp.sender_ip) != Some(&arp.sender_hw) {
            self.neighbours.insert(arp.sender_ip, arp.sender_hw);
            self.arp_asked.remove(&arp.sender_ip);
        }
    }

    /// A copy of a shard frame with its destination MAC filled in from the neighbour
    /// table; None (and an ARP request, at most once a second per address) if unknown.
    fn resolve_neighbour(&mut self, frame: &[u8], now: Instant) -> Option<Vec<u8>> {
        let dst = frame
            .get(30..34)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(Ipv4Addr::from)?;
        if let Some(mac) = self.neighbours.get(&dst) {
            let mut f = frame.to_vec();
            f[..6].copy_from_slice(&mac.0);
            return Some(f);
        }
        self.neighbour_unknown += 1;
        let due = self
            .arp_asked
            .get(&dst)
            .is_none_or(|t| now.duration_since(*t) >= ARP_RETRY);
        if due && self.arp_asked.len() < 4096 {
            self.arp_asked.insert(dst, now);
            let cfg = self.gateway.config();
            let (mac, ip) = (cfg.mac, cfg.ip);
            // RFC 826: who has `dst`? tell the gateway.
            let eth = EthernetRepr {
                src: mac,
                dst: MacAddr::BROADCAST,
                ethertype: EtherType::ARP,
            };
            let req = ArpRepr {
                operation: ArpOperation::REQUEST,
                sender_hw: mac,
                sender_ip: ip,
                target_hw: MacAddr([0; 6]),
                target_ip: dst,
            };
            self.gw_out
                .push_with(EthernetRepr::HEADER_LEN + ArpRepr::LEN, |buf| {
                    let _ = eth.emit(buf);
                    if let Some(b) = buf.get_mut(EthernetRepr::HEADER_LEN..) {
                        let _ = req.emit(b);
                    }
                });
            self.dispatch_gateway_out(now);
        }
        None
    }

    fn stats(&self) -> Value {
        let totals = self.switch.totals();
        let gw = self.switch.counters(self.gateway_port).unwrap_or_default();
        let mut links = Vec::new();
        let (mut runts, mut tx_dropped) = (self.closed_rx_runts, self.closed_tx_dropped);
        for (port, p) in self.links.iter().enumerate() {
            let Some(p) = p else { continue };
            let c = p.link.counters();
            runts += c.rx_runts;
            tx_dropped += c.tx_dropped;
            links.push(json!({
                "port": port,
                "name": p.name,
                "rx_frames": c.rx_frames, "rx_bytes": c.rx_bytes,
                "tx_frames": c.tx_frames, "tx_bytes": c.tx_bytes,
                "rx_runts": c.rx_runts, "tx_dropped": c.tx_dropped,
                "rx_oversize": c.rx_oversize, "rx_malformed": c.rx_malformed,
                "tx_oversize": c.tx_oversize, "tx_gso_writes": c.tx_gso_writes,
            }));
        }
        let mut drops: HashMap<&str, u64> = self.gateway.drops().iter().collect();
        for (name, n) in self.unrouted.iter() {
            *drops.entry(name).or_default() += n;
        }
        drops.retain(|_, n| *n > 0);
        // Upstream's names: BytesSent = switch → VMs, BytesReceived = VMs → switch.
        json!({
            "BytesSent": totals.tx_bytes.saturating_sub(gw.tx_bytes),
            "BytesReceived": totals.rx_bytes.saturating_sub(gw.rx_bytes),
            "links": links,
            "link_runts": runts,
            "link_tx_dropped": tx_dropped,
            "links_closed": self.links_closed,
            "links_oversize": self.links_oversize,
            "neighbour_unknown": self.neighbour_unknown,
            "dhcp": self.services.dhcp.counters().iter().collect::<HashMap<_, _>>(),
            "pcap": self.services.pcap.as_ref().map(|p| json!({"written": p.written(), "dropped": p.dropped()})),
            "drops": drops,
            "cam": self.switch.cam().map(|(m, p)| (m.to_string(), p)).collect::<HashMap<_, _>>(),
        })
    }
}

/// A guest frame for the DHCP server: UDP to port 67 (the gateway already checked it).
fn is_dhcp_request(frame: &[u8]) -> bool {
    FlowKey::of_frame(frame)
        .is_some_and(|k| k.proto == stack::flow::Protocol::Udp && k.remote.port() == 67)
}
