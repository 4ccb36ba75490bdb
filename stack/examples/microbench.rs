//! Hot-path micro-benchmarks, run by hand in release:
//! `cargo run --release -p stack --example microbench [checksum|engine|parse|build|shard]...`
//! (about 5 s; arguments pick benches by name, none runs all).
//!
//! - checksum: RFC 1071 sum over 64 KiB buffers at odd offsets.
//! - TCP engine alone: two `Tcb`s back to back on a perfect link, one shard turn per
//!   batch of segments, bulk data one way. Counts engine work plus one copy of each
//!   segment into the "link" (what the shard's frame building costs instead); no
//!   checksums.
//! - parse a frame: one guest data segment (Ethernet + IPv4 + TCP with timestamps + 1448
//!   payload bytes, 1514 bytes) through the checked views. Three lines: the shard's parse
//!   alone (views, `TcpRepr::parse`, no checksums); the same plus what the gateway checks
//!   first (IPv4 and TCP checksums, TCP options); and the switch loop's real per-frame
//!   work for it (`Gateway::process_frame` + `FlowKey::of_frame` + `FlowHasher::shard_of`).
//! - build a segment: one such frame built the way the shard's `Out::tcp` does it
//!   (`FrameBatch::try_push_with`, payload copied from a ring-like buffer, then
//!   `TcpRepr::emit_frame`: Ethernet + IPv4 + TCP headers, both checksums), into a
//!   reused batch cleared at the shard's hand-over size.
//! - shard turn with N flows (1, 64, 1024): a real shard thread (`shard::spawn`, public
//!   API only) with N established guest connections to a loopback listener (127.0.0.1
//!   only) made by the bench, which plays the switch loop: batches of 256 guest segments,
//!   round-robin over the flows and within the windows the shard advertised, fed as
//!   `ShardMsg::Frames`, at most 2 batches at the shard; its frames for the guest are
//!   parsed (windows) and recycled. Timed end to end, per frame: from the first batch
//!   until every batch came back and, for data, every byte reached the host peer; best
//!   of 3 rounds (worst printed too). "acks" are pure ACKs (parse, flow lookup, engine,
//!   end-of-turn service; no host I/O); "data" carry 1448 bytes each (adds a host socket
//!   write per flow per turn, and a drain thread reading them, on the same cores); with
//!   many flows they are mostly the kernel's loopback TCP and swing with the machine's
//!   load (up to 5x at 1024 flows on a shared box): the "acks" lines are the steadier
//!   signal for the shard itself.
//!   Afterwards the shard's counters must show every segment taken in order, no drop
//!   and no reset, or the run fails. Threads and sockets are closed before the next N.

// Benchmark code: a failed unwrap is a failed run; casts are of small values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::hint::black_box;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use stack::flow::{FlowHasher, FlowKey, Protocol};
use stack::gateway::{Gateway, GatewayConfig, Verdict};
use stack::nat::NatTable;
use stack::shard::{self, ShardConfig, ShardHandle, ShardMsg, ShardStats, SwitchMsg};
use stack::tcp::{Endpoints, SegmentSink, SeqNumber, Tcb, TcpConfig, TcpRepr};
use stack::wire::{
    EtherType, EthernetFrame, IpProtocol, Ipv4FrameRepr, Ipv4Packet, MacAddr, TcpFlags, TcpPacket,
    TcpTimestamps,
};
use stack::FrameBatch;

/// Segments in flight, reusing their buffers.
#[derive(Default)]
struct Link {
    segs: Vec<(TcpRepr, Vec<u8>)>,
    len: usize,
}

impl SegmentSink for Link {
    fn emit(&mut self, repr: &TcpRepr, payload: [&[u8]; 2]) {
        if self.len == self.segs.len() {
            self.segs.push((*repr, Vec::with_capacity(65_536)));
        }
        let (r, buf) = &mut self.segs[self.len];
        *r = *repr;
        buf.clear();
        buf.extend_from_slice(payload[0]);
        buf.extend_from_slice(payload[1]);
        self.len += 1;
    }
}

fn deliver(link: &mut Link, to: &mut Tcb, now: Instant, back: &mut Link) -> bool {
    let mut wrote = false;
    for (r, p) in &link.segs[..link.len] {
        wrote |= to.on_segment(r, p, now, back).host_write;
    }
    link.len = 0;
    wrote
}

fn run(mss: u16, total: usize) -> f64 {
    let t0 = Instant::now();
    let cfg = TcpConfig {
        mss,
        ..TcpConfig::default()
    };
    let ep_a = Endpoints {
        guest: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80),
        remote: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5000),
    };
    let ep_b = Endpoints {
        guest: ep_a.remote,
        remote: ep_a.guest,
    };
    let mut ab = Link::default();
    let mut ba = Link::default();
    let mut a = Tcb::connect(ep_a, SeqNumber(1), &cfg, t0, &mut ab);
    let syn = ab.segs[0].0;
    ab.len = 0;
    let mut b = Tcb::accept_syn(ep_b, &syn, SeqNumber(2), &cfg, t0).unwrap();
    b.host_connected(t0, &mut ba);
    deliver(&mut ba, &mut a, t0, &mut ab);
    a.poll_output(t0, &mut ab);
    deliver(&mut ab, &mut b, t0, &mut ba);

    let mut sent = 0usize;
    let mut received = 0usize;
    // Simulated time advances 10 us per turn; the clock is only read for the result.
    let mut now = t0;
    let started = Instant::now();
    while received < total {
        now += Duration::from_micros(10);
        // A's shard turn: ACKs in, host bytes into the send ring, segments out.
        deliver(&mut ba, &mut a, now, &mut ab);
        if sent < total {
            let [x, y] = a.send_spare();
            let n = (x.len() + y.len()).min(total - sent);
            a.host_read(n);
            sent += n;
        }
        a.poll_output(now, &mut ab);
        // B's shard turn: segments in, guest data to the "host", ACK out.
        deliver(&mut ab, &mut b, now, &mut ba);
        let [x, y] = b.host_data();
        let n = x.len() + y.len();
        received += n;
        b.host_wrote(n, now, &mut ba);
        b.poll_output(now, &mut ba);
        if let Some(d) = a.next_deadline() {
            if d <= now {
                a.on_timer(now, &mut ab);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(a.stats().retransmits, 0);
    total as f64 * 8.0 / secs / 1e9
}

fn checksum_gbytes_per_s() -> f64 {
    let buf: Vec<u8> = (0..65_536u32).map(|i| (i * 7) as u8).collect();
    let rounds = 20_000;
    let t = Instant::now();
    let mut acc = 0u64;
    for i in 0..rounds {
        acc += u64::from(stack::wire::checksum::data(black_box(&buf[i % 3..])));
    }
    black_box(acc);
    (buf.len() * rounds) as f64 / t.elapsed().as_secs_f64() / 1e9
}

// Frames of a guest at 192.168.127.2 talking to 192.168.127.254, which the default NAT
// table maps to 127.0.0.1.

/// Upstream's gateway MAC (`GatewayConfig::default().mac`).
const GATEWAY_MAC: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]);
const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);
const GUEST_MAC: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
const NAT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);
/// Payload of a full segment at MTU 1500 with timestamps: a 1514-byte frame.
const PAYLOAD_BYTES: usize = 1448;

/// A guest segment with timestamps (what Linux sends once established).
fn guest_repr(src_port: u16, dst_port: u16, seq: SeqNumber, ack: SeqNumber, ts: u32) -> TcpRepr {
    TcpRepr {
        src_port,
        dst_port,
        seq,
        ack,
        flags: TcpFlags::ACK,
        window: 65_535,
        timestamps: Some(TcpTimestamps {
            tsval: ts,
            tsecr: 7,
        }),
        ..TcpRepr::default()
    }
}

/// Appends a guest → `NAT_IP` frame carrying `repr` and `payload`, checksums filled.
fn push_guest_frame(batch: &mut FrameBatch, repr: &TcpRepr, ident: u16, payload: &[u8]) {
    let fr = Ipv4FrameRepr {
        src_mac: GUEST_MAC,
        dst_mac: GATEWAY_MAC,
        src_ip: GUEST_IP,
        dst_ip: NAT_IP,
        ttl: 64,
        ident,
        dont_frag: true,
        dscp_ecn: 0,
    };
    let at = repr.frame_payload_offset();
    batch
        .try_push_with(at + payload.len(), |buf| {
            buf[at..].copy_from_slice(payload);
            repr.emit_frame(buf, &fr, payload.len())
        })
        .unwrap();
}

/// Runs `f(i)` for `iters / 10` warm-up rounds, then `iters` timed ones: ns per call.
fn time_ns(iters: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..iters / 10 {
        f(i);
    }
    let t = Instant::now();
    for i in 0..iters {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

/// The shard's parse of a guest frame (`process_guest_frame`, `process_tcp` up to the flow
/// lookup): checked views and `TcpRepr::parse`, no checksums.
fn shard_parse(frame: &[u8]) -> Option<(FlowKey, TcpRepr, usize)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::IPV4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.protocol() != IpProtocol::TCP {
        return None;
    }
    let seg = TcpPacket::new_checked(ip.payload_slice()).ok()?;
    let repr = TcpRepr::parse(&seg).ok()?;
    let key = FlowKey {
        proto: Protocol::Tcp,
        guest: SocketAddrV4::new(ip.src(), repr.src_port),
        remote: SocketAddrV4::new(ip.dst(), repr.dst_port),
    };
    Some((key, repr, seg.payload_slice().len()))
}

/// What the gateway verifies before it hands a TCP frame on (`Gateway::process_ipv4`):
/// IPv4 header checksum, fragments, TCP options, TCP checksum.
fn gateway_checks(frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return false;
    };
    if !ip.verify_checksum() || ip.is_fragment() {
        return false;
    }
    let Ok(tcp) = TcpPacket::new_checked(ip.payload_slice()) else {
        return false;
    };
    !tcp.options_iter().any(|o| o.is_err()) && tcp.verify_checksum(ip.src(), ip.dst())
}

/// 64 different full-size guest data segments (ports, sequence numbers, payload bytes).
fn parse_fixture() -> FrameBatch {
    let mut frames = FrameBatch::new();
    for i in 0..64u16 {
        let repr = guest_repr(
            40_000 + i,
            443,
            SeqNumber(u32::from(i) * 1_000_003),
            SeqNumber(77),
            u32::from(i),
        );
        let payload: Vec<u8> = (0..PAYLOAD_BYTES).map(|b| (b as u8) ^ (i as u8)).collect();
        push_guest_frame(&mut frames, &repr, i, &payload);
    }
    frames
}

fn bench_parse() {
    const ITERS: usize = 2_000_000;
    let batch = parse_fixture();
    let frames: Vec<&[u8]> = batch.iter().collect();
    let frame_len = frames[0].len();
    assert!(frames.iter().all(|f| gateway_checks(f)));
    let (_, repr, plen) = shard_parse(frames[0]).unwrap();
    assert_eq!((plen, repr.timestamps.is_some()), (PAYLOAD_BYTES, true));

    let mut acc = 0usize;
    let ns = time_ns(ITERS, |i| {
        let (key, repr, plen) = shard_parse(black_box(frames[i % 64])).unwrap();
        acc += usize::from(key.guest.port()) + plen + repr.seq.0 as usize;
    });
    black_box(acc);
    report_parse("shard parse (views + TcpRepr, no checksums)", ns, frame_len);

    let ns = time_ns(ITERS, |i| {
        let f = black_box(frames[i % 64]);
        assert!(gateway_checks(f));
        let (key, _, plen) = shard_parse(f).unwrap();
        acc += usize::from(key.guest.port()) + plen;
    });
    black_box(acc);
    report_parse(
        "gateway checks + shard parse (IPv4 + TCP checksums)",
        ns,
        frame_len,
    );

    let mut gw = Gateway::new(GatewayConfig::default());
    let mut out = FrameBatch::new();
    let hasher = FlowHasher::with_key(1, 2);
    let ns = time_ns(ITERS, |i| {
        let f = black_box(frames[i % 64]);
        assert_eq!(gw.process_frame(f, &mut out), Verdict::Transport);
        let key = FlowKey::of_frame(f).unwrap();
        acc += hasher.shard_of(&key, 4);
    });
    black_box(acc);
    assert!(out.is_empty());
    report_parse(
        "switch loop: Gateway::process_frame + FlowKey::of_frame + shard_of",
        ns,
        frame_len,
    );
}

fn report_parse(what: &str, ns: f64, frame_len: usize) {
    eprintln!(
        "parse a frame, {what}: {ns:.1} ns/frame, {:.2} Mpps ({frame_len}-byte frame)",
        1e3 / ns
    );
}

/// One shard → guest data segment per call, the way `Out::tcp` builds it: room reserved
/// (zeroed) in the batch, payload copied from the send ring (two slices where it wraps),
/// then Ethernet + IPv4 + TCP headers and both checksums.
fn bench_build() {
    const ITERS: usize = 2_000_000;
    /// `out::BATCH_BYTES`: the shard hands a batch over (and gets an empty one) here.
    const BATCH_BYTES: usize = 512 << 10;
    let ring: Vec<u8> = (0..65_536u32).map(|i| (i * 13) as u8).collect();
    let mut batch = FrameBatch::with_capacity(64 << 10, 64);
    let mut repr = TcpRepr {
        src_port: 443,
        dst_port: 40_000,
        seq: SeqNumber(1),
        ack: SeqNumber(2),
        flags: TcpFlags::ACK,
        window: 4_000,
        timestamps: Some(TcpTimestamps {
            tsval: 100,
            tsecr: 200,
        }),
        ..TcpRepr::default()
    };
    let mut fr = Ipv4FrameRepr {
        src_mac: GATEWAY_MAC,
        dst_mac: GUEST_MAC,
        src_ip: NAT_IP,
        dst_ip: GUEST_IP,
        ttl: 64,
        ident: 0,
        dont_frag: true,
        dscp_ecn: 0,
    };
    let mut frame_len = 0;
    let ns = time_ns(ITERS, |i| {
        let off = (i * PAYLOAD_BYTES) % ring.len();
        let a = &ring[off..(off + PAYLOAD_BYTES).min(ring.len())];
        let b = &ring[..PAYLOAD_BYTES - a.len()];
        repr.seq = SeqNumber((i * PAYLOAD_BYTES) as u32);
        fr.ident = i as u16;
        let at = repr.frame_payload_offset();
        let len = at + PAYLOAD_BYTES;
        frame_len = batch
            .try_push_with(len, |buf| {
                buf[at..at + a.len()].copy_from_slice(a);
                buf[at + a.len()..len].copy_from_slice(b);
                repr.emit_frame(buf, &fr, PAYLOAD_BYTES)
            })
            .unwrap();
        if batch.bytes() >= BATCH_BYTES {
            batch.clear();
        }
    });
    assert!(gateway_checks(batch.last().unwrap()));
    eprintln!(
        "build a segment ({frame_len}-byte frame, {PAYLOAD_BYTES} payload, TS, checksums): \
         {ns:.1} ns/frame, {:.1} Gbit/s of payload ({:.2} Mpps)",
        PAYLOAD_BYTES as f64 * 8.0 / ns,
        1e3 / ns
    );
}

// ---------------------------------------------------------------------------------------
// A shard turn with N flows.

/// Guest segments per `ShardMsg::Frames` batch.
const TURN_BATCH: usize = 256;
/// Guest ports of the flows: `FIRST_PORT + i`.
const FIRST_PORT: u16 = 20_000;
/// Guest payload bytes not yet read by the host peer before the bench waits (a bound on
/// what sits in socket buffers; the shard's windows bound its rings).
const MAX_UNREAD: u64 = 16 << 20;
/// Timed rounds per measurement; the best one is reported (the machine is shared).
const ROUNDS: usize = 3;
/// Give up on any wait after this long.
const PATIENCE: Duration = Duration::from_secs(10);

const LISTENER: Token = Token(0);
const STOP: Token = Token(1);

/// The host side: accepts the shard's connections on the loopback listener and reads and
/// discards whatever arrives, counting bytes.
struct Drain {
    accepted: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    waker: Arc<Waker>,
    thread: thread::JoinHandle<()>,
}

impl Drain {
    fn spawn(listener: TcpListener) -> Drain {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), STOP).unwrap());
        let accepted = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (a, b) = (accepted.clone(), bytes.clone());
        let thread = thread::Builder::new()
            .name("drain".into())
            .spawn(move || drain_loop(poll, listener, &a, &b))
            .unwrap();
        Drain {
            accepted,
            bytes,
            waker,
            thread,
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn stop(self) {
        self.waker.wake().unwrap();
        self.thread.join().unwrap();
    }
}

fn drain_loop(mut poll: Poll, mut listener: TcpListener, accepted: &AtomicU64, bytes: &AtomicU64) {
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .unwrap();
    let mut conns: Vec<Option<TcpStream>> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match poll.poll(&mut events, Some(Duration::from_secs(1))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("drain: poll: {e}"),
        }
        for ev in events.iter() {
            match ev.token() {
                STOP => return,
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let t = Token(2 + conns.len());
                            poll.registry()
                                .register(&mut s, t, Interest::READABLE)
                                .unwrap();
                            conns.push(Some(s));
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("drain: accept: {e}"),
                    }
                },
                Token(t) => {
                    let Some(slot) = conns.get_mut(t - 2) else {
                        continue;
                    };
                    let Some(s) = slot.as_mut() else {
                        continue;
                    };
                    // Edge-triggered: read until WouldBlock. EOF or a reset (the shard
                    // closing its flows at shutdown) ends the connection.
                    let gone = loop {
                        match s.read(&mut buf) {
                            Ok(0) => break true,
                            Ok(n) => {
                                bytes.fetch_add(n as u64, Ordering::Relaxed);
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => break true,
                        }
                    };
                    if gone {
                        *slot = None;
                    }
                }
            }
        }
    }
}

/// The guest's side of one connection.
#[derive(Clone, Copy)]
struct GuestFlow {
    port: u16,
    /// Next sequence number to send.
    seq: SeqNumber,
    /// The shard's ISS + 1 once its SYN-ACK arrived.
    ack: Option<SeqNumber>,
    /// Right edge of the window the shard advertised last.
    wnd_right: SeqNumber,
    /// The shard's window scale.
    wnd_shift: u8,
}

/// One shard thread and the switch loop's end of its channels, played by the bench.
struct ShardRig {
    handle: ShardHandle,
    rx: Receiver<SwitchMsg>,
    /// The switch loop's poll, there only for the waker the shard wakes.
    _poll: Poll,
    /// Input batches back from the shard, for reuse.
    spare: Vec<FrameBatch>,
    /// Input batches at the shard.
    in_flight: usize,
    flows: Vec<GuestFlow>,
    /// Round-robin position over `flows`.
    next: usize,
    ident: u16,
    tsval: u32,
    host_port: u16,
    frames_sent: u64,
    bytes_sent: u64,
}

impl ShardRig {
    fn spawn(host_port: u16, n: usize) -> ShardRig {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        let cfg = ShardConfig::new(GATEWAY_MAC, GATEWAY_IP, 1500, NatTable::default());
        let handle = shard::spawn(cfg, 0, tx, waker).unwrap();
        let flows = (0..n)
            .map(|i| GuestFlow {
                port: FIRST_PORT + i as u16,
                seq: SeqNumber(1_000_000 + i as u32 * 7_919),
                ack: None,
                wnd_right: SeqNumber(0),
                wnd_shift: 0,
            })
            .collect();
        ShardRig {
            handle,
            rx,
            _poll: poll,
            spare: Vec::new(),
            in_flight: 0,
            flows,
            next: 0,
            ident: 0,
            tsval: 1,
            host_port,
            frames_sent: 0,
            bytes_sent: 0,
        }
    }

    fn batch(&mut self) -> FrameBatch {
        self.spare
            .pop()
            .unwrap_or_else(|| FrameBatch::with_capacity(TURN_BATCH * 1514, TURN_BATCH))
    }

    fn send(&mut self, batch: FrameBatch) {
        self.frames_sent += batch.len() as u64;
        assert!(self.handle.send(ShardMsg::Frames(batch)), "shard gone");
        self.in_flight += 1;
    }

    /// Handles one message from the shard, waiting up to `timeout`: frames for the guest
    /// update the flows and go back (`Recycle`, as the switch loop does once it switched
    /// them); input batches come back for reuse.
    fn pump(&mut self, timeout: Duration) {
        match self.rx.recv_timeout(timeout) {
            Ok(SwitchMsg::Frames { batch, .. }) => {
                for frame in batch.iter() {
                    self.on_shard_frame(frame);
                }
                assert!(self.handle.send(ShardMsg::Recycle(batch)), "shard gone");
            }
            Ok(SwitchMsg::Recycle { mut batch, .. }) => {
                batch.clear();
                self.spare.push(batch);
                self.in_flight -= 1;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("shard gone"),
        }
    }

    /// A segment from the shard to the guest: SYN-ACK or ACK (window updates).
    fn on_shard_frame(&mut self, frame: &[u8]) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return;
        };
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return;
        };
        let Some(repr) = TcpPacket::new_checked(ip.payload_slice())
            .ok()
            .and_then(|seg| TcpRepr::parse(&seg).ok())
        else {
            return;
        };
        assert!(
            !repr.flags.contains(TcpFlags::RST),
            "RST from the shard to guest port {}",
            repr.dst_port
        );
        let Some(f) = repr
            .dst_port
            .checked_sub(FIRST_PORT)
            .and_then(|i| self.flows.get_mut(usize::from(i)))
        else {
            return;
        };
        if repr.flags.contains(TcpFlags::SYN | TcpFlags::ACK) {
            if f.ack.is_none() {
                f.seq = f.seq + 1;
                f.ack = Some(repr.seq + 1);
                f.wnd_shift = repr.window_scale.unwrap_or(0);
                // RFC 7323 §2.2: the window of a SYN is never scaled.
                f.wnd_right = repr.ack + u32::from(repr.window);
            }
        } else if repr.flags.contains(TcpFlags::ACK) {
            let right = repr.ack + (u32::from(repr.window) << f.wnd_shift);
            f.wnd_right = f.wnd_right.max(right);
        }
    }

    /// Pumps until `done(self)`; panics after `PATIENCE`.
    fn wait(&mut self, what: &str, done: impl Fn(&ShardRig) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.pump(Duration::from_micros(200));
        }
    }

    /// SYN, SYN-ACK, ACK for every flow; the shard connects to the loopback listener. A
    /// batch of SYNs at a time, each accepted before the next (the listen backlog is 1024).
    fn handshake(&mut self, drain: &Drain) {
        for chunk in 0..self.flows.len().div_ceil(TURN_BATCH) {
            let mut batch = self.batch();
            let start = chunk * TURN_BATCH;
            let end = (start + TURN_BATCH).min(self.flows.len());
            for i in start..end {
                let f = self.flows[i];
                let syn = TcpRepr {
                    flags: TcpFlags::SYN,
                    mss: Some(1460),
                    window_scale: Some(7),
                    sack_permitted: true,
                    ..guest_repr(f.port, self.host_port, f.seq, SeqNumber(0), self.tsval)
                };
                self.ident = self.ident.wrapping_add(1);
                push_guest_frame(&mut batch, &syn, self.ident, &[]);
            }
            self.send(batch);
            self.wait("SYN-ACKs", |r| {
                r.flows[start..end].iter().all(|f| f.ack.is_some())
            });
            self.wait("accepts", |_| drain.accepted() >= end as u64);
        }
        self.run_batch(0);
        self.wait("the handshake ACKs", |r| r.in_flight == 0);
    }

    /// Sends one batch of up to `TURN_BATCH` segments carrying `payload_len` bytes each,
    /// round-robin over the flows, each within the window the shard advertised. Returns
    /// false if no flow had room.
    fn run_batch(&mut self, payload_len: usize) -> bool {
        static PAYLOAD: [u8; PAYLOAD_BYTES] = [0xa5; PAYLOAD_BYTES];
        let payload = &PAYLOAD[..payload_len];
        let mut batch = self.batch();
        self.tsval += 1;
        let n = self.flows.len();
        let mut misses = 0;
        while batch.len() < TURN_BATCH && misses < n {
            let f = &mut self.flows[self.next];
            self.next = (self.next + 1) % n;
            let end = f.seq + payload_len as u32;
            if end > f.wnd_right {
                misses += 1;
                continue;
            }
            misses = 0;
            let mut repr = guest_repr(f.port, self.host_port, f.seq, f.ack.unwrap(), self.tsval);
            if payload_len > 0 {
                repr.flags |= TcpFlags::PSH;
            }
            f.seq = end;
            self.ident = self.ident.wrapping_add(1);
            push_guest_frame(&mut batch, &repr, self.ident, payload);
        }
        if batch.is_empty() {
            self.spare.push(batch);
            return false;
        }
        self.bytes_sent += (batch.len() * payload_len) as u64;
        self.send(batch);
        true
    }

    /// `batches` batches, at most 2 at the shard and `MAX_UNREAD` bytes not yet at the
    /// host peer at once; returns once all came back and every byte arrived.
    fn run(&mut self, drain: &Drain, payload_len: usize, batches: usize) {
        for _ in 0..batches {
            let deadline = Instant::now() + PATIENCE;
            loop {
                if self.in_flight < 2
                    && self.bytes_sent - drain.bytes() < MAX_UNREAD
                    && self.run_batch(payload_len)
                {
                    break;
                }
                assert!(Instant::now() < deadline, "stalled: no window");
                self.pump(Duration::from_micros(100));
            }
        }
        let sent = self.bytes_sent;
        self.wait("the last batches and bytes", |r| {
            r.in_flight == 0 && drain.bytes() >= sent
        });
    }

    fn stats(&self) -> ShardStats {
        self.handle
            .stats(PATIENCE)
            .expect("no stats from the shard")
    }

    /// Closes every flow, ends the shard thread and waits until it is gone.
    fn shutdown(self) {
        assert!(self.handle.send(ShardMsg::Shutdown));
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.rx.recv_timeout(Duration::from_millis(10)) {
                // The thread dropped its senders: it ended.
                Err(RecvTimeoutError::Disconnected) => return,
                Ok(_) | Err(RecvTimeoutError::Timeout) => {
                    assert!(Instant::now() < deadline, "the shard did not stop");
                }
            }
        }
    }
}

/// N flows to a loopback listener; pure ACKs, then full data segments.
fn bench_shard_turn(n: usize) {
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let host_port = listener.local_addr().unwrap().port();
    let drain = Drain::spawn(listener);
    let mut rig = ShardRig::spawn(host_port, n);
    rig.handshake(&drain);
    let s = rig.stats();
    assert_eq!(
        (s.tcp.flows_open, s.tcp.connects_ok),
        (n as u64, n as u64),
        "flows not established: {s:?}"
    );

    let flows = if n == 1 { "flow" } else { "flows" };
    for (kind, payload_len, batches) in [("acks", 0, 1000), ("data", PAYLOAD_BYTES, 200)] {
        rig.run(&drain, payload_len, 20);
        let mut ns = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let frames0 = rig.frames_sent;
            let t = Instant::now();
            rig.run(&drain, payload_len, batches);
            ns.push(t.elapsed().as_nanos() as f64 / (rig.frames_sent - frames0) as f64);
        }
        ns.sort_by(f64::total_cmp);
        let (best, worst) = (ns[0], ns[ROUNDS - 1]);
        let extra = if payload_len > 0 {
            format!(
                ", {:.1} Gbit/s to the host peer",
                (payload_len * 8) as f64 / best
            )
        } else {
            String::new()
        };
        eprintln!(
            "shard turn, {n} {flows}, {kind}: {best:.0} ns/frame, {:.2} Mpps{extra} \
             (best of {ROUNDS} x {} frames, worst {worst:.0} ns; {TURN_BATCH}-frame batches, \
             end to end)",
            1e3 / best,
            batches * TURN_BATCH,
        );
    }

    let s = rig.stats();
    let e = &s.tcp_engine;
    let sound = s.drops.total() == 0
        && s.frames.frames_in == rig.frames_sent
        && s.tcp.flows_open == n as u64
        && s.tcp.host_resets == 0
        && e.bytes_in == rig.bytes_sent
        && e.unacceptable == 0
        && e.paws_rejected == 0
        && e.ooo_segments == 0
        && e.resets_out == 0;
    assert!(sound, "the shard did not take every segment: {s:?}");
    rig.shutdown();
    drain.stop();
}

fn main() {
    // Optional arguments pick benches by name: checksum, engine, parse, build, shard.
    let only: Vec<String> = std::env::args().skip(1).collect();
    let on = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if on("checksum") {
        eprintln!("checksum: {:.1} GB/s", checksum_gbytes_per_s());
    }
    if on("engine") {
        for (mss, total) in [(1460u16, 1usize << 30), (65_480, 4 << 30)] {
            let gbps = run(mss, total);
            eprintln!(
                "MSS {mss}: {gbps:.1} Gbit/s through two Tcbs (engine + one copy per segment)"
            );
        }
    }
    if on("parse") {
        bench_parse();
    }
    if on("build") {
        bench_build();
    }
    if on("shard") {
        for n in [1, 64, 1024] {
            bench_shard_turn(n);
        }
    }
}
