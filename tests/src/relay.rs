//! A seeded fault-injecting relay for a `/connect` link: this kernel has no netem,
//! so loss, reordering and duplication are made here, between gvforwarder and
//! gvproxy.
//!
//! ```text
//!  gvforwarder ──unix──▶ Relay (listen path)          ──unix──▶ gvproxy API socket
//!     POST /connect ............ head copied as is ..............▶
//!     (any other request, e.g. POST /connect-vnet: 404, as upstream gvproxy answers)
//!     u16-LE frames ─▶ [parse ─ drop? dup? hold? ─ write] ───────▶   (guest_to_host)
//!                   ◀─ [write ─ drop? dup? hold? ─ parse] ◀───────   (host_to_guest)
//! ```
//!
//! Per direction and per frame, one draw of a seeded generator picks: drop (loss),
//! send twice (duplicate), hold back (reorder: the frame goes out after the next 1-3
//! frames of that direction, or after `max_hold` if none come), or pass. Held frames
//! never wait longer than `max_hold`, so the relay adds no unbounded delay. Every
//! connection's two generators derive from the seed, the connection's number and the
//! direction, so the same seed replays the same fault pattern frame by frame
//! (`GVTEST_RELAY_SEED=N`); timing, and so the exact packet trace, still varies.
//! Counters per direction show what was done, so a test can assert that the faults
//! really happened.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Longest HTTP request head accepted from the client.
const MAX_HEAD_BYTES: usize = 8 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// What the relay does to frames, the same in both directions.
#[derive(Debug, Clone, Copy)]
pub struct FaultConfig {
    pub seed: u64,
    /// Probability that a frame is dropped.
    pub loss: f64,
    /// Probability that a frame is held back and sent after the next 1-3 frames.
    pub reorder: f64,
    /// Probability that a frame is sent twice.
    pub duplicate: f64,
    /// Longest a held frame waits when no later frame comes.
    pub max_hold: Duration,
    /// Frames held back at once per direction; a reorder draw beyond that passes.
    pub max_held: usize,
}

impl FaultConfig {
    /// No faults: a plain frame-parsing relay.
    pub fn clean(seed: u64) -> FaultConfig {
        FaultConfig {
            seed,
            loss: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
            max_hold: Duration::from_millis(3),
            max_held: 8,
        }
    }

    /// `loss`, `reorder` and `duplicate` as fractions (0.02 = 2 %).
    pub fn new(seed: u64, loss: f64, reorder: f64, duplicate: f64) -> FaultConfig {
        assert!(
            loss >= 0.0 && reorder >= 0.0 && duplicate >= 0.0 && loss + reorder + duplicate <= 1.0,
            "fault rates must be fractions that add up to at most 1"
        );
        FaultConfig {
            loss,
            reorder,
            duplicate,
            ..FaultConfig::clean(seed)
        }
    }
}

/// `GVTEST_RELAY_SEED` if set (to replay a failure), else a fresh seed.
pub fn seed_from_env() -> u64 {
    if let Ok(s) = std::env::var("GVTEST_RELAY_SEED") {
        return s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("GVTEST_RELAY_SEED={s:?} is not a u64"));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut x = now.as_secs()
        ^ (u64::from(now.subsec_nanos()) << 20)
        ^ (u64::from(std::process::id()) << 44)
        ^ u64::from(crate::next_id());
    splitmix64(&mut x)
}

/// SplitMix64: small, fast, and good enough to draw fault decisions.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The relay's counters for one direction.
#[derive(Debug, Default)]
struct Counters {
    frames: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    /// Held frames that went out on `max_hold` rather than after later frames.
    released_by_timeout: AtomicU64,
    /// Frames written to the other side (duplicates count twice).
    sent: AtomicU64,
}

/// A snapshot of one direction's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirectionStats {
    /// Frames read from the source.
    pub frames: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub released_by_timeout: u64,
    pub sent: u64,
}

impl Counters {
    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            frames: self.frames.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
            released_by_timeout: self.released_by_timeout.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |n: u64| 100.0 * n as f64 / self.frames.max(1) as f64;
        write!(
            f,
            "{} frames ({} bytes): dropped {} ({:.2} %), reordered {} ({:.2} %, {} released by \
             timeout), duplicated {} ({:.2} %), sent {}",
            self.frames,
            self.bytes,
            self.dropped,
            pct(self.dropped),
            self.reordered,
            pct(self.reordered),
            self.released_by_timeout,
            self.duplicated,
            pct(self.duplicated),
            self.sent
        )
    }
}

/// Both directions, summed over every connection the relay carried.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayStats {
    pub connections: u64,
    /// gvforwarder → gvproxy.
    pub guest_to_host: DirectionStats,
    /// gvproxy → gvforwarder.
    pub host_to_guest: DirectionStats,
}

struct Shared {
    cfg: FaultConfig,
    upstream: PathBuf,
    stop: AtomicBool,
    /// Connections relayed (a refused `/connect-vnet` is not one).
    connections: AtomicU64,
    accepted: AtomicU64,
    guest_to_host: Counters,
    host_to_guest: Counters,
    /// Sockets to shut down on drop, and the pump threads to join.
    open: Mutex<Vec<UnixStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The relay: listens on a unix socket, relays each connection to `upstream`.
/// Drop stops it (shuts every connection down and joins its threads).
pub struct Relay {
    path: PathBuf,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on `listen` (a path that must not exist) and relays every connection
    /// to the unix socket `upstream`. Prints the seed.
    pub fn start(listen: &Path, upstream: &Path, cfg: FaultConfig) -> Relay {
        let listener = UnixListener::bind(listen)
            .unwrap_or_else(|e| panic!("relay: cannot listen on {}: {e}", listen.display()));
        println!(
            "relay {}: seed {} (GVTEST_RELAY_SEED={} replays the fault pattern), loss {:.1} %, \
             reorder {:.1} %, duplicate {:.1} %, max hold {:?}",
            listen.display(),
            cfg.seed,
            cfg.seed,
            cfg.loss * 100.0,
            cfg.reorder * 100.0,
            cfg.duplicate * 100.0,
            cfg.max_hold
        );
        let shared = Arc::new(Shared {
            cfg,
            upstream: upstream.to_path_buf(),
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            guest_to_host: Counters::default(),
            host_to_guest: Counters::default(),
            open: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || accept_loop(&listener, &s))
            .expect("spawn relay thread");
        Relay {
            path: listen.to_path_buf(),
            shared,
            accept: Some(accept),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> RelayStats {
        RelayStats {
            connections: self.shared.connections.load(Ordering::Relaxed),
            guest_to_host: self.shared.guest_to_host.snapshot(),
            host_to_guest: self.shared.host_to_guest.snapshot(),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for s in lock(&self.shared.open).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = lock(&self.shared.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) {
    loop {
        let conn = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let client = match conn {
            Ok((c, _)) => c,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("relay: accept failed: {e}");
                return;
            }
        };
        let n = shared.accepted.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = start_connection(client, n, shared) {
            eprintln!("relay: connection {n}: {e}");
        }
    }
}

/// Copies the request head to the upstream socket, then starts one pump per direction.
fn start_connection(mut client: UnixStream, n: u64, shared: &Arc<Shared>) -> io::Result<()> {
    client.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        let got = client.read(&mut buf)?;
        if got == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed before the head",
            ));
        }
        head.extend_from_slice(&buf[..got]);
    };
    client.set_read_timeout(None)?;
    if !head.starts_with(b"POST /connect ") {
        // As upstream gvproxy answers any other path (`/connect-vnet` included): the
        // client falls back to `/connect` and plain frames, which this relay understands.
        client.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\n\r\n404 page not found\n",
        )?;
        return Ok(());
    }
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let leftover = head.split_off(end);
    let mut upstream = UnixStream::connect(&shared.upstream)?;
    upstream.write_all(&head)?;
    {
        let mut open = lock(&shared.open);
        open.push(client.try_clone()?);
        open.push(upstream.try_clone()?);
    }
    let mut seed = shared.cfg.seed ^ n.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let g2h_seed = splitmix64(&mut seed);
    let h2g_seed = splitmix64(&mut seed);
    let pumps = [
        (
            client.try_clone()?,
            upstream.try_clone()?,
            leftover,
            g2h_seed,
            true,
        ),
        (upstream, client, Vec::new(), h2g_seed, false),
    ];
    let mut threads = lock(&shared.threads);
    for (src, dst, initial, seed, g2h) in pumps {
        let s = Arc::clone(shared);
        let name = if g2h { "relay-g2h" } else { "relay-h2g" };
        threads.push(
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    let counters = if g2h {
                        &s.guest_to_host
                    } else {
                        &s.host_to_guest
                    };
                    let mut pump = Pump {
                        cfg: s.cfg,
                        rng: Rng(seed),
                        counters,
                        held: VecDeque::new(),
                        out: Vec::new(),
                    };
                    pump.run(src, dst, initial);
                })?,
        );
    }
    Ok(())
}

struct Held {
    frame: Vec<u8>,
    /// Frames still to go out before this one.
    after: u64,
    deadline: Instant,
}

struct Pump<'a> {
    cfg: FaultConfig,
    rng: Rng,
    counters: &'a Counters,
    held: VecDeque<Held>,
    /// Encoded frames (length prefix included) waiting for one write.
    out: Vec<u8>,
}

impl Pump<'_> {
    fn run(&mut self, mut src: UnixStream, mut dst: UnixStream, initial: Vec<u8>) {
        let mut pending = initial;
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        loop {
            let consumed = self.parse(&pending);
            pending.drain(..consumed);
            self.release_expired(Instant::now());
            if !self.out.is_empty() {
                if dst.write_all(&self.out).is_err() {
                    break;
                }
                self.out.clear();
            }
            // With frames held, wait for input only until the earliest deadline (poll's
            // timer is precise to the millisecond; SO_RCVTIMEO rounds up to jiffies).
            if let Some(deadline) = self.held.iter().map(|h| h.deadline).min() {
                let wait = deadline.saturating_duration_since(Instant::now());
                let ms = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(src.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            match src.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // The source is gone: what was held still goes out, then the other side
        // learns of the close.
        while let Some(h) = self.held.pop_front() {
            self.emit(&h.frame);
        }
        let _ = dst.write_all(&self.out);
        let _ = dst.shutdown(Shutdown::Write);
        let _ = src.shutdown(Shutdown::Read);
    }

    /// Handles every complete frame at the start of `bytes`; returns the bytes used.
    fn parse(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while bytes.len() - at >= 2 {
            let len = usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
            if bytes.len() - at - 2 < len {
                break;
            }
            self.on_frame(&bytes[at + 2..at + 2 + len]);
            at += 2 + len;
        }
        at
    }

    fn on_frame(&mut self, frame: &[u8]) {
        let c = self.counters;
        c.frames.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
        let r = self.rng.next_f64();
        let cfg = self.cfg;
        if r < cfg.loss {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if r < cfg.loss + cfg.duplicate {
            c.duplicated.fetch_add(1, Ordering::Relaxed);
            self.emit(frame);
            self.emit(frame);
        } else if r < cfg.loss + cfg.duplicate + cfg.reorder && self.held.len() < cfg.max_held {
            c.reordered.fetch_add(1, Ordering::Relaxed);
            self.held.push_back(Held {
                frame: frame.to_vec(),
                after: 1 + self.rng.next_u64() % 3,
                deadline: Instant::now() + cfg.max_hold,
            });
            return;
        } else {
            self.emit(frame);
        }
        // One more frame went out: held frames whose turn came follow it.
        for h in &mut self.held {
            h.after = h.after.saturating_sub(1);
        }
        while let Some(i) = self.held.iter().position(|h| h.after == 0) {
            if let Some(h) = self.held.remove(i) {
                self.emit(&h.frame);
            }
        }
    }

    fn release_expired(&mut self, now: Instant) {
        while let Some(i) = self.held.iter().position(|h| h.deadline <= now) {
            if let Some(h) = self.held.remove(i) {
                self.counters
                    .released_by_timeout
                    .fetch_add(1, Ordering::Relaxed);
                self.emit(&h.frame);
            }
        }
    }

    fn emit(&mut self, frame: &[u8]) {
        let len = u16::try_from(frame.len()).unwrap_or(u16::MAX);
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(frame);
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u16, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..2].copy_from_slice(&i.to_le_bytes());
        f
    }

    fn encode(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&u16::try_from(f.len()).unwrap().to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    fn decode(mut bytes: &[u8]) -> Vec<u16> {
        let mut ids = Vec::new();
        while bytes.len() >= 2 {
            let len = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
            ids.push(u16::from_le_bytes([bytes[2], bytes[3]]));
            bytes = &bytes[2 + len..];
        }
        ids
    }

    /// Runs frames through one pump's decisions (no sockets, no timeouts).
    fn run(cfg: FaultConfig, n: u16) -> (Vec<u16>, DirectionStats) {
        let counters = Counters::default();
        let mut pump = Pump {
            cfg,
            rng: Rng(cfg.seed),
            counters: &counters,
            held: VecDeque::new(),
            out: Vec::new(),
        };
        let frames: Vec<Vec<u8>> = (0..n).map(|i| frame(i, 60 + usize::from(i % 7))).collect();
        let wire = encode(&frames);
        // Fed in uneven pieces, as reads come.
        let mut pending = Vec::new();
        for piece in wire.chunks(333) {
            pending.extend_from_slice(piece);
            let used = pump.parse(&pending);
            pending.drain(..used);
        }
        assert!(pending.is_empty());
        while let Some(h) = pump.held.pop_front() {
            pump.emit(&h.frame);
        }
        (decode(&pump.out), counters.snapshot())
    }

    #[test]
    fn clean_relay_keeps_every_frame_in_order() {
        let (ids, st) = run(FaultConfig::clean(1), 1000);
        assert_eq!(ids, (0..1000).collect::<Vec<_>>());
        assert_eq!((st.frames, st.sent, st.dropped), (1000, 1000, 0));
    }

    #[test]
    fn faults_happen_at_their_rates_and_replay_from_the_seed() {
        let cfg = FaultConfig::new(42, 0.02, 0.05, 0.01);
        let (ids, st) = run(cfg, 50_000);
        let rate = |n: u64| n as f64 / st.frames as f64;
        assert!((0.015..0.025).contains(&rate(st.dropped)), "{st}");
        assert!((0.04..0.06).contains(&rate(st.reordered)), "{st}");
        assert!((0.007..0.013).contains(&rate(st.duplicated)), "{st}");
        assert_eq!(ids.len() as u64, st.sent);
        assert_eq!(st.sent, st.frames - st.dropped + st.duplicated);
        // Every frame not dropped arrives; nothing arrives more than 3 frames late.
        let mut seen = vec![0u32; 50_000];
        for id in &ids {
            seen[usize::from(*id)] += 1;
        }
        let missing = seen.iter().filter(|n| **n == 0).count() as u64;
        assert_eq!(missing, st.dropped);
        let mut max_late = 0usize;
        for (pos, id) in ids.iter().enumerate() {
            let later_before = ids[..pos].iter().filter(|x| *x > id).count();
            max_late = max_late.max(later_before);
            if pos > 2000 {
                break;
            }
        }
        assert!((1..=3 * cfg.max_held).contains(&max_late), "{max_late}");
        // Same seed, same pattern; another seed, another.
        assert_eq!(run(cfg, 50_000).0, ids);
        assert_ne!(run(FaultConfig { seed: 43, ..cfg }, 50_000).0, ids);
    }
}
