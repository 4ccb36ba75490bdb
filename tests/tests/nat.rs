//! Issue 3 end to end: the NAT data path. A guest namespace behind a TAP driven by
//! gvforwarder, configured statically (192.168.127.2/24, default via .1), talks to the
//! host's 127.0.0.1 through 192.168.127.254 and to a remote namespace of the test's own;
//! real clients (curl, nc, ping, the guest kernel's own TCP/UDP sockets) on one side,
//! servers of the test's own on the other.
//!
//! ```text
//!  guest netns: tap0 ── gvforwarder ──[lossy relay]── gvproxy (-shards N) ── host sockets
//!                                                          ├─▶ 127.0.0.1:PORT (servers in this process)
//!                                                          └─▶ veth ─▶ remote netns (drops SYNs)
//! ```
//!
//! Safety: guests only ever target 192.168.127.254 (the host's loopback), the gateway
//! 192.168.127.1, or the remote namespace's address on a veth of the test's own.
//!
//! The functional tests run with `-shards 1` and `-shards 2` (modules `shards1`,
//! `shards2`); the 1 GiB transfers run once per MTU with the default shard count.
//! Tests that move a lot of data take the `HEAVY` lock exclusively, tests that measure
//! latency take it shared, so one never distorts the other on this 2-core machine.

// Test code: a failed unwrap/expect is a test failure with a location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::e2e::{
    forwarder, free_tcp_port, guest_with_mtu, raise_nofile_limit, Gvproxy, GUEST_MAC,
};
use tests::relay::{seed_from_env, DirectionStats, FaultConfig, Relay};
use tests::{ensure_sysctl_ping_group, next_id, run_cmd, run_ok, ChildGuard, Netns, TempDir, Veth};

const HOST_ALIAS: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);
const GATEWAY: &str = "192.168.127.1";
const GUEST_IP: &str = "192.168.127.2";
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Upper bound for one 1 GiB transfer in one direction (48 Mbit/s).
const BULK_TIMEOUT: Duration = Duration::from_secs(180);
/// Upper bound for one 200 MiB transfer over the lossy link (28 Mbit/s): slower is the
/// collapse the issue rules out (and would eat the suite's time budget).
const LOSSY_TIMEOUT: Duration = Duration::from_secs(60);
/// A blocked read or write this long means the transfer stalled.
const STALL: Duration = Duration::from_secs(30);
const IO_CHUNK: usize = 1 << 20;
const PEAK_RSS_LIMIT: u64 = 64 * MIB;

static HEAVY: RwLock<()> = RwLock::new(());

/// For tests that load the machine: nothing else heavy or latency-sensitive at once.
fn heavy() -> RwLockWriteGuard<'static, ()> {
    HEAVY.write().unwrap_or_else(PoisonError::into_inner)
}

/// For tests that measure latency: no heavy test at the same time.
fn quiet() -> RwLockReadGuard<'static, ()> {
    HEAVY.read().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------
// The setup: gvproxy, a guest namespace, gvforwarder, optionally the lossy relay.

struct Opts {
    shards: Option<usize>,
    mtu: u32,
    faults: Option<FaultConfig>,
    /// gvproxy serves the guest's TAP itself (`-listen-tap`, TSO both ways): no gvforwarder.
    tap: bool,
}

/// How a functional test's guest is served: through gvforwarder with N shards, or by
/// gvproxy on the guest's TAP itself (default shard count).
#[derive(Clone, Copy, Debug)]
enum Mode {
    Shards(usize),
    Tap,
}

impl Mode {
    fn opts(self) -> Opts {
        match self {
            Mode::Shards(n) => Opts::shards(n),
            Mode::Tap => Opts {
                shards: None,
                mtu: 1500,
                faults: None,
                tap: true,
            },
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Shards(n) => write!(f, "{n}"),
            Mode::Tap => f.write_str("tap"),
        }
    }
}

impl Opts {
    fn shards(n: usize) -> Opts {
        Opts {
            shards: Some(n),
            mtu: 1500,
            faults: None,
            tap: false,
        }
    }
}

/// A guest namespace whose only link goes through gvproxy. Fields drop in order: the
/// forwarder and the relay first, then the namespace, then gvproxy.
struct NatGuest {
    /// None when gvproxy serves the TAP itself.
    fwd: Option<ChildGuard>,
    relay: Option<Relay>,
    ns: Netns,
    gv: Gvproxy,
    mtu: u32,
}

impl NatGuest {
    fn start(label: &str, opts: Opts) -> NatGuest {
        let mtu = opts.mtu.to_string();
        let mut extra = vec!["-mtu".to_string(), mtu.clone()];
        if let Some(n) = opts.shards {
            extra.extend(["-shards".to_string(), n.to_string()]);
        }
        let ns = guest_with_mtu(label, GUEST_MAC, GUEST_IP, opts.mtu);
        if opts.tap {
            extra.extend([
                "-listen-tap".to_string(),
                format!("/run/netns/{}:tap0", ns.name()),
            ]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let gv = Gvproxy::start(label, &extra);
        let relay = opts
            .faults
            .map(|cfg| Relay::start(&gv.path("relay.sock"), &gv.api(), cfg));
        let url = match &relay {
            Some(r) => format!("unix://{}", r.path().display()),
            None => format!("unix://{}", gv.api().display()),
        };
        let fwd = (!opts.tap).then(|| forwarder(&ns, &["-url", &url, "-mtu", &mtu]));
        let mut g = NatGuest {
            fwd,
            relay,
            ns,
            gv,
            mtu: opts.mtu,
        };
        g.wait_link();
        if let Some(n) = opts.shards {
            let stats = g.stats();
            assert_eq!(
                stats["flows"]["shards_configured"].as_u64(),
                Some(n as u64),
                "gvproxy -shards {n} runs another number of shards: {stats}"
            );
        }
        g
    }

    /// Until the gateway answers a ping (the link is up and the gateway's MAC known).
    /// The gateway answers its own address itself: no NAT flow is made.
    fn wait_link(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.ns.exec(&["ping", "-c", "1", "-W", "1", GATEWAY]);
            if out.status.success() {
                return;
            }
            if let Some(fwd) = &mut self.fwd {
                assert!(
                    fwd.is_running(),
                    "gvforwarder exited; log:\n{}",
                    fwd.log_tail(30)
                );
            }
            self.gv.assert_running();
            assert!(
                Instant::now() < deadline,
                "the guest cannot ping the gateway:\n{}\ngvforwarder log:\n{}\ngvproxy log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                self.fwd
                    .as_mut()
                    .map(|f| f.log_tail(30))
                    .unwrap_or_default(),
                self.gv.child.log_tail(30)
            );
        }
    }

    fn stats(&self) -> Value {
        self.gv.stats_json()
    }

    /// Runs `f` on a thread inside the guest namespace (its sockets are the guest's).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.ns.run(f)
    }

    /// Waits up to `timeout` for `proto`'s open flows (None: all) to reach `want`.
    fn wait_flows(&self, proto: Option<&str>, want: u64, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let stats = self.stats();
            let open = flows_open(&stats, proto);
            if open == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "{open} {} flows still open after {timeout:?} (want {want}): {stats}",
                proto.unwrap_or("(all)")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Open flows in gvproxy's /stats for `proto` ("tcp", "udp", "icmp"), or in all (None):
/// the `flows` section, summed over the shards, `{"flows": {"open": N, "tcp": N, "udp":
/// N, "icmp": N, "shards_configured": S, "shards_answered": S, "shards": [...]}}`.
/// Panics if a shard did not answer (its flows would be missing from the sum).
fn flows_open(stats: &Value, proto: Option<&str>) -> u64 {
    let flows = &stats["flows"];
    assert_eq!(
        flows["shards_answered"], flows["shards_configured"],
        "a shard did not answer /stats: {stats}"
    );
    flows[proto.unwrap_or("open")].as_u64().unwrap_or_else(|| {
        panic!(
            "no open-flow count for {} in gvproxy's /stats: {stats}",
            proto.unwrap_or("all protocols")
        )
    })
}

// ---------------------------------------------------------------------------------
// Host-side servers, all on 127.0.0.1, all bounded in time.

fn listen_local() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Accepts one connection before `deadline` (or fails).
fn accept_before(listener: &TcpListener, deadline: Instant) -> io::Result<(TcpStream, SocketAddr)> {
    listener.set_nonblocking(true)?;
    loop {
        match listener.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false)?;
                return Ok((s, peer));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        "no connection from the guest arrived",
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

fn join<T>(h: JoinHandle<T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// A TCP echo server for many connections: each connection's bytes come back until it
/// closes. Counts connections accepted and those that ended with a clean EOF.
struct EchoServer {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    clean_eof: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start() -> EchoServer {
        let (listener, port) = listen_local();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let clean_eof = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (s, a, c, e) = (
            Arc::clone(&stop),
            Arc::clone(&accepted),
            Arc::clone(&clean_eof),
            Arc::clone(&errors),
        );
        let thread = std::thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            while !s.load(Ordering::Relaxed) {
                let (conn, _) = match listener.accept() {
                    Ok(x) => x,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                };
                a.fetch_add(1, Ordering::Relaxed);
                let (c2, e2) = (Arc::clone(&c), Arc::clone(&e));
                let spawned = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || match echo(conn) {
                        Ok(()) => {
                            c2.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => e2.lock().unwrap().push(err.to_string()),
                    });
                if let Err(err) = spawned {
                    e.lock().unwrap().push(format!("spawn: {err}"));
                }
            }
        });
        EchoServer {
            port,
            stop,
            accepted,
            clean_eof,
            errors,
            thread: Some(thread),
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(HOST_ALIAS, self.port))
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

fn echo(mut conn: TcpStream) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    conn.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        conn.write_all(&buf[..n])?;
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Bytes `0..len` of the stream numbered `seed` (cheap, seeded, not compressible).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------------------------
// Bulk data: a seeded file in /dev/shm, its sha256 from sha256sum.

struct DataFile {
    dir: TempDir,
    path: PathBuf,
    len: u64,
    sha256: String,
}

impl DataFile {
    /// `len` seeded bytes (the seed is printed; the data is the same for the same seed).
    fn create(label: &str, len: u64) -> DataFile {
        let dir = TempDir::new_in(Path::new("/dev/shm"), label);
        let path = dir.join("source");
        let seed = (u64::from(std::process::id()) << 16) | u64::from(next_id());
        let mut f = File::create(&path).unwrap();
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut buf = vec![0u8; IO_CHUNK];
        let mut left = len;
        while left > 0 {
            for w in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            let n = usize::try_from(left.min(IO_CHUNK as u64)).unwrap();
            f.write_all(&buf[..n]).unwrap();
            left -= n as u64;
        }
        drop(f);
        let sha256 = sha256_file(&path);
        println!(
            "{label}: {} MiB of data, seed {seed}, sha256 {sha256}",
            len / MIB
        );
        DataFile {
            dir,
            path,
            len,
            sha256,
        }
    }

    /// A path for a received copy, in the same memory-backed directory.
    fn copy_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn sha256_file(path: &Path) -> String {
    let out = run_ok(&["sha256sum", path.to_str().unwrap()]);
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Copies `src` into `dst` until EOF, within `deadline`; returns the bytes copied.
fn copy_until_eof(src: &mut impl Read, dst: &mut impl Write, deadline: Instant) -> io::Result<u64> {
    let mut buf = vec![0u8; IO_CHUNK];
    let mut total = 0u64;
    loop {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                format!("transfer not done in time after {total} bytes"),
            ));
        }
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("after {total} bytes: {e}"),
                ))
            }
        };
        dst.write_all(&buf[..n])
            .map_err(|e| io::Error::new(e.kind(), format!("after {total} bytes: {e}")))?;
        total += n as u64;
    }
}

fn tune(s: &TcpStream) {
    s.set_read_timeout(Some(STALL)).unwrap();
    s.set_write_timeout(Some(STALL)).unwrap();
}

/// What one bulk transfer did.
struct Transfer {
    bytes: u64,
    elapsed: Duration,
    sha256: String,
    /// How the host's side saw the end: `Err` if not a clean EOF.
    host_close: Result<(), String>,
}

impl Transfer {
    fn gbit_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
}

/// The guest connects to a sink on the host's 127.0.0.1 through .254 and sends `src`
/// as fast as it can; the sink stores what it gets. sha256 of what arrived.
fn guest_to_host(g: &NatGuest, src: &DataFile, timeout: Duration) -> Transfer {
    let (listener, port) = listen_local();
    let out_path = src.copy_path("guest-to-host");
    let sink_path = out_path.clone();
    let sink = std::thread::spawn(move || -> io::Result<u64> {
        let start = Instant::now();
        let (mut conn, _) = accept_before(&listener, start + Duration::from_secs(15))?;
        tune(&conn);
        let mut f = File::create(&sink_path)?;
        let n = copy_until_eof(&mut conn, &mut f, start + timeout)
            .map_err(|e| io::Error::new(e.kind(), format!("receiving: {e}")))?;
        // Closing tells the guest that everything arrived.
        Ok(n)
    });
    let to = SocketAddr::V4(SocketAddrV4::new(HOST_ALIAS, port));
    let src_path = src.path.clone();
    let elapsed = g.run(move || {
        let start = Instant::now();
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("guest: connect to {to}: {e}"));
        tune(&conn);
        let mut f = File::open(&src_path).unwrap();
        copy_until_eof(&mut f, &mut conn, start + timeout)
            .unwrap_or_else(|e| panic!("guest → host: sending: {e} (bound {timeout:?})"));
        conn.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let n = conn
            .read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("guest → host: waiting for the sink to close: {e}"));
        assert_eq!(n, 0, "the sink sent data");
        start.elapsed()
    });
    let bytes = join(sink).unwrap_or_else(|e| panic!("guest → host: sink: {e}"));
    let sha256 = sha256_file(&out_path);
    let _ = std::fs::remove_file(&out_path);
    Transfer {
        bytes,
        elapsed,
        sha256,
        host_close: Ok(()),
    }
}

/// The guest connects to a source on the host's 127.0.0.1 that sends `src` as fast as
/// it can; the guest stores what it gets. sha256 of what arrived.
fn host_to_guest(g: &NatGuest, src: &DataFile, timeout: Duration) -> Transfer {
    let (listener, port) = listen_local();
    let src_path = src.path.clone();
    let source = std::thread::spawn(move || -> io::Result<(u64, Result<(), String>)> {
        let start = Instant::now();
        let (mut conn, _) = accept_before(&listener, start + Duration::from_secs(15))?;
        tune(&conn);
        let mut f = File::open(&src_path)?;
        let n = copy_until_eof(&mut f, &mut conn, start + timeout)
            .map_err(|e| io::Error::new(e.kind(), format!("sending: {e}")))?;
        conn.shutdown(Shutdown::Write)?;
        // The guest closes once it has everything: a clean EOF, not a reset.
        let mut rest = Vec::new();
        let close = conn
            .read_to_end(&mut rest)
            .map(drop)
            .map_err(|e| format!("all {n} bytes sent, then waiting for the guest's close: {e}"));
        Ok((n, close))
    });
    let to = SocketAddr::V4(SocketAddrV4::new(HOST_ALIAS, port));
    let out_path = src.copy_path("host-to-guest");
    let guest_path = out_path.clone();
    let (bytes, elapsed) = g.run(move || {
        let start = Instant::now();
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("guest: connect to {to}: {e}"));
        tune(&conn);
        let mut f = File::create(&guest_path).unwrap();
        let n = copy_until_eof(&mut conn, &mut f, start + timeout)
            .unwrap_or_else(|e| panic!("host → guest: receiving: {e} (bound {timeout:?})"));
        (n, start.elapsed())
    });
    let (sent, host_close) = join(source)
        .unwrap_or_else(|e| panic!("host → guest: source: {e} (the guest got {bytes} bytes)"));
    assert_eq!(sent, src.len, "the source did not send everything");
    let sha256 = sha256_file(&out_path);
    let _ = std::fs::remove_file(&out_path);
    Transfer {
        bytes,
        elapsed,
        sha256,
        host_close,
    }
}

/// Both directions, checked by sha256 and printed. Returns what went wrong at the end of
/// the connections (a reset instead of a clean close), for the caller to assert last.
fn transfer_both_ways(g: &NatGuest, src: &DataFile, timeout: Duration, what: &str) -> Vec<String> {
    let mut close_errors = Vec::new();
    let mut check = |dir: &str, t: Transfer| {
        println!(
            "{what}: {dir}: {} MiB in {:.2} s = {:.2} Gbit/s",
            t.bytes / MIB,
            t.elapsed.as_secs_f64(),
            t.gbit_s()
        );
        assert_eq!(t.bytes, src.len, "{what}: {dir}: byte count differs");
        assert_eq!(t.sha256, src.sha256, "{what}: {dir}: sha256 differs");
        if let Err(e) = t.host_close {
            close_errors.push(format!("{what}: {dir}: the host's side: {e}"));
        }
    };
    check("guest → host", guest_to_host(g, src, timeout));
    check("host → guest", host_to_guest(g, src, timeout));
    close_errors
}

// ---------------------------------------------------------------------------------
// 1 GiB each way, once per MTU, default shard count; peak RSS of gvproxy.

fn bulk_1gib(mtu: u32, tap: bool) {
    let _heavy = heavy();
    let label = format!("bulk{mtu}{}", if tap { "tap" } else { "" });
    let src = DataFile::create(&label, GIB);
    let mut g = NatGuest::start(
        &label,
        Opts {
            shards: None,
            mtu,
            faults: None,
            tap,
        },
    );
    let how = if tap { "-listen-tap" } else { "gvforwarder" };
    let close_errors = transfer_both_ways(
        &g,
        &src,
        BULK_TIMEOUT,
        &format!("1 GiB at MTU {} ({how})", g.mtu),
    );
    if tap {
        assert_tso_used(&g);
    } else {
        assert_vnet_connect_used(&g);
    }
    g.gv.assert_running();
    let peak = g.gv.peak_rss_bytes();
    println!(
        "gvproxy peak RSS (VmHWM) after 2 GiB at MTU {mtu}: {:.1} MiB",
        peak as f64 / MIB as f64
    );
    assert!(
        peak < PEAK_RSS_LIMIT,
        "gvproxy's peak RSS {:.1} MiB is over {} MiB",
        peak as f64 / MIB as f64,
        PEAK_RSS_LIMIT / MIB
    );
    assert!(close_errors.is_empty(), "{close_errors:?}");
}

#[test]
fn bulk_1gib_each_way_mtu1500() {
    bulk_1gib(1500, false);
}

#[test]
fn bulk_1gib_each_way_mtu65520() {
    bulk_1gib(65520, false);
}

#[test]
fn bulk_1gib_each_way_mtu1500_listen_tap() {
    bulk_1gib(1500, true);
}

#[test]
fn bulk_1gib_each_way_mtu65520_listen_tap() {
    bulk_1gib(65520, true);
}

/// gvforwarder asks for `/connect-vnet` first; a gvproxy that answers 404 (upstream, here
/// the relay, which answers as upstream does) gets plain `/connect` and plain frames: the
/// TAP is reopened without the virtio-net header and its offloads are switched off, so no
/// frame above the MTU crosses the link. 64 MiB each way, sha256-equal.
#[test]
fn gvforwarder_falls_back_to_plain_connect() {
    let label = "fallback";
    let src = DataFile::create(label, 64 * MIB);
    let mut g = NatGuest::start(
        label,
        Opts {
            shards: None,
            mtu: 1500,
            faults: Some(FaultConfig::new(seed_from_env(), 0.0, 0.0, 0.0)),
            tap: false,
        },
    );
    let close_errors = transfer_both_ways(&g, &src, BULK_TIMEOUT, "64 MiB after the fallback");
    let stats = g.stats();
    let link = &stats["links"][0];
    assert_eq!(link["name"], "/connect", "{link}");
    let (frames, bytes) = (
        link["rx_frames"].as_u64().unwrap(),
        link["rx_bytes"].as_u64().unwrap(),
    );
    assert!(
        frames > 40_000 && bytes / frames <= 1514,
        "frames from the guest: {link}"
    );
    let log = g.fwd.as_mut().unwrap().log();
    assert!(
        log.contains("/connect-vnet") && log.contains("plain /connect"),
        "gvforwarder did not try /connect-vnet, then fall back:\n{log}"
    );
    assert!(close_errors.is_empty(), "{close_errors:?}");
}

/// With our gvproxy, gvforwarder's link is `/connect-vnet`: TSO segments from the guest
/// and merged segments to it cross the link (checked after the 1 GiB transfers).
fn assert_vnet_connect_used(g: &NatGuest) {
    let stats = g.stats();
    let link = &stats["links"][0];
    println!("gvforwarder link counters: {link}");
    assert_eq!(link["name"], "/connect-vnet", "{link}");
    if g.mtu == 1500 {
        let (frames, bytes) = (
            link["rx_frames"].as_u64().unwrap(),
            link["rx_bytes"].as_u64().unwrap(),
        );
        assert!(
            bytes / frames.max(1) > 3000,
            "no TSO from the guest: {link}"
        );
        assert!(
            link["tx_gso_writes"].as_u64().unwrap() > 1000,
            "no merged segments to the guest: {link}"
        );
    }
}

/// At MTU 1500 the TAP's offloads must have been used both ways: frames from the guest
/// larger than the MTU (TSO segments, checksums completed by gvproxy) and TSO writes to it.
fn assert_tso_used(g: &NatGuest) {
    let stats = g.stats();
    let link = &stats["links"][0];
    println!("tap link counters: {link}");
    let (rx_frames, rx_bytes) = (
        link["rx_frames"].as_u64().unwrap(),
        link["rx_bytes"].as_u64().unwrap(),
    );
    let gso_writes = link["tx_gso_writes"].as_u64().unwrap();
    assert_eq!(link["rx_malformed"].as_u64(), Some(0), "{link}");
    if g.mtu == 1500 {
        // 1 GiB in frames of at most 1514 bytes would be ~709,000 frames.
        assert!(
            rx_bytes / rx_frames.max(1) > 3000,
            "frames from the guest average {} bytes: no TSO from the guest ({link})",
            rx_bytes / rx_frames.max(1)
        );
        assert!(
            gso_writes > 1000,
            "only {gso_writes} TSO writes to the guest ({link})"
        );
    }
}

// ---------------------------------------------------------------------------------
// The functional tests, with 1 and with 2 shards.

macro_rules! with_shards {
    ($($name:ident),* $(,)?) => {
        mod shards1 {
            $( #[test] fn $name() { super::$name(super::Mode::Shards(1)) } )*
        }
        mod shards2 {
            $( #[test] fn $name() { super::$name(super::Mode::Shards(2)) } )*
        }
    };
}

/// The functional tests that matter for the TAP path: checksums completed, TSO both
/// ways, half-close, UDP, ICMP through the NAT, all with gvproxy on the guest's TAP.
mod listen_tap {
    use super::*;

    #[test]
    fn curl_reaches_host_http_server() {
        super::curl_reaches_host_http_server(Mode::Tap)
    }

    #[test]
    fn closed_host_port_is_refused_within_1s() {
        super::closed_host_port_is_refused_within_1s(Mode::Tap)
    }

    #[test]
    fn half_close_guest_stops_sending_host_keeps_sending() {
        super::half_close_guest_stops_sending_host_keeps_sending(Mode::Tap)
    }

    #[test]
    fn udp_echo_10000_datagrams_then_idle_expiry() {
        super::udp_echo_10000_datagrams_then_idle_expiry(Mode::Tap)
    }

    #[test]
    fn ping_host_through_nat() {
        super::ping_host_through_nat(Mode::Tap)
    }
}

with_shards!(
    curl_reaches_host_http_server,
    closed_host_port_is_refused_within_1s,
    two_thousand_connections_then_flows_drain,
    half_close_guest_stops_sending_host_keeps_sending,
    syn_dropping_remote_does_not_delay_other_connections,
    udp_echo_10000_datagrams_then_idle_expiry,
    ping_host_through_nat,
    lossy_link_200mib_each_way,
);

/// `curl http://192.168.127.254:PORT/` from the guest gets the content of a server on
/// the host's 127.0.0.1:PORT.
fn curl_reaches_host_http_server(mode: Mode) {
    let g = NatGuest::start(&format!("curl{mode}"), mode.opts());
    let token = format!("gvtest-{}-{}", std::process::id(), next_id());
    let mut body = format!("hello from the host, {token}\n").into_bytes();
    // Plus 256 KiB, so the answer spans many segments and windows.
    for (i, b) in pattern(7, 256 * 1024).iter().enumerate() {
        body.push(if i % 64 == 63 { b'\n' } else { b'a' + b % 26 });
    }
    let (listener, port) = listen_local();
    let served = body.clone();
    let server = std::thread::spawn(move || -> io::Result<(String, SocketAddr)> {
        let (mut conn, peer) = accept_before(&listener, Instant::now() + Duration::from_secs(15))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte)? == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "request cut short",
                ));
            }
            head.push(byte[0]);
        }
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            served.len()
        )?;
        conn.write_all(&served)?;
        let request = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        Ok((request, peer))
    });
    let url = format!("http://{HOST_ALIAS}:{port}/");
    let start = Instant::now();
    let out = g.ns.exec(&["curl", "-sS", "--max-time", "10", &url]);
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "curl {url} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == body,
        "curl got {} bytes, not the server's {} (starts {:?})",
        out.stdout.len(),
        body.len(),
        String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(80)])
    );
    let (request, peer) = join(server).unwrap();
    assert_eq!(request, "GET / HTTP/1.1");
    assert_eq!(peer.ip().to_string(), "127.0.0.1", "the host saw {peer}");
    println!(
        "curl: {} bytes in {:.0} ms",
        body.len(),
        elapsed.as_secs_f64() * 1e3
    );
}

/// A connection to a closed host port fails with "Connection refused", fast.
fn closed_host_port_is_refused_within_1s(mode: Mode) {
    let _quiet = quiet();
    let g = NatGuest::start(&format!("refused{mode}"), mode.opts());
    let port = free_tcp_port().to_string();
    for attempt in 0..3 {
        let start = Instant::now();
        let out =
            g.ns.exec(&["nc", "-z", "-v", "-w", "5", &HOST_ALIAS.to_string(), &port]);
        let elapsed = start.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        println!(
            "attempt {attempt}: {:.1} ms: {}",
            elapsed.as_secs_f64() * 1e3,
            err.trim()
        );
        assert!(
            !out.status.success(),
            "nc connected to closed port {port}: {err}"
        );
        assert!(err.contains("Connection refused"), "nc said: {err}");
        assert!(
            elapsed < Duration::from_secs(1),
            "refusal took {elapsed:?} (must be under 1 s)"
        );
    }
}

/// 2,000 connections open at once, each exchanging data; then all close and the flow
/// count returns to zero.
fn two_thousand_connections_then_flows_drain(mode: Mode) {
    const CONNS: usize = 2000;
    const THREADS: usize = 8;
    const MSG: usize = 1024;
    let _heavy = heavy();
    raise_nofile_limit(16 * 1024);
    let g = NatGuest::start(&format!("conns{mode}"), mode.opts());
    let server = EchoServer::start();
    let to = server.addr();
    let start = Instant::now();
    // Connect from several threads at once; each connection sends its own message.
    let streams: Vec<(usize, TcpStream)> = g.run(move || {
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    s.spawn(move || {
                        (t * CONNS / THREADS..(t + 1) * CONNS / THREADS)
                            .map(|i| {
                                let mut c =
                                    TcpStream::connect_timeout(&to, Duration::from_secs(10))
                                        .unwrap_or_else(|e| panic!("connection {i}: connect: {e}"));
                                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                                c.write_all(&pattern(i as u64, MSG))
                                    .unwrap_or_else(|e| panic!("connection {i}: write: {e}"));
                                (i, c)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(join_scoped).collect()
        })
    });
    let connected = start.elapsed();
    assert_eq!(streams.len(), CONNS);
    // Every connection's echo comes back while all of them are open.
    let mut streams = streams;
    for (i, c) in &mut streams {
        let mut got = vec![0u8; MSG];
        c.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("connection {i}: reading the echo: {e}"));
        assert!(
            got == pattern(*i as u64, MSG),
            "connection {i}: echo differs"
        );
    }
    let stats = g.stats();
    let open = flows_open(&stats, Some("tcp"));
    println!(
        "{CONNS} connections set up in {:.2} s, echoes in {:.2} s; gvproxy: {open} TCP flows open",
        connected.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        open >= CONNS as u64,
        "gvproxy counts {open} open TCP flows: {stats}"
    );
    assert_eq!(server.accepted.load(Ordering::Relaxed), CONNS);
    // The guest closes first; the host's side sees a clean EOF on every connection.
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.clean_eof.load(Ordering::Relaxed) < CONNS {
        assert!(
            server.errors().is_empty(),
            "echo server: {:?}",
            server.errors()
        );
        assert!(
            Instant::now() < deadline,
            "only {} of {CONNS} connections ended cleanly on the host",
            server.clean_eof.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let drained = g.wait_flows(None, 0, Duration::from_secs(30));
    println!(
        "all flows gone {:.2} s after the host saw every close",
        drained.as_secs_f64()
    );
    assert!(
        server.errors().is_empty(),
        "echo server: {:?}",
        server.errors()
    );
}

fn join_scoped<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Half-close: the guest shuts down its sending side, the host keeps sending, the
/// guest receives everything, then both close cleanly (no reset on either side).
fn half_close_guest_stops_sending_host_keeps_sending(mode: Mode) {
    const REQUEST: usize = 100 * 1024;
    const BEFORE: usize = 64 * 1024;
    const AFTER: usize = 16 * 1024 * 1024;
    let g = NatGuest::start(&format!("halfclose{mode}"), mode.opts());
    let (listener, port) = listen_local();
    let host = std::thread::spawn(move || -> io::Result<(usize, Duration)> {
        let (mut conn, _) = accept_before(&listener, Instant::now() + Duration::from_secs(15))?;
        tune(&conn);
        let reply = pattern(2, BEFORE + AFTER);
        conn.write_all(&reply[..BEFORE])?;
        // Everything the guest sends, up to its FIN.
        let mut request = Vec::new();
        conn.read_to_end(&mut request)?;
        if request != pattern(1, REQUEST) {
            return Err(io::Error::other(format!(
                "the host got {} bytes, not the guest's {REQUEST}",
                request.len()
            )));
        }
        // The guest's FIN came; the host goes on sending, in pieces.
        let after_fin = Instant::now();
        for piece in reply[BEFORE..].chunks(256 * 1024) {
            conn.write_all(piece)?;
        }
        conn.shutdown(Shutdown::Write)?;
        // The guest closes after reading everything: a clean EOF, not a reset.
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest)?;
        if !rest.is_empty() {
            return Err(io::Error::other("the guest sent data after its FIN"));
        }
        Ok((request.len(), after_fin.elapsed()))
    });
    let to = SocketAddr::V4(SocketAddrV4::new(HOST_ALIAS, port));
    let received = g.run(move || {
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("guest: connect to {to}: {e}"));
        tune(&conn);
        conn.write_all(&pattern(1, REQUEST)).unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap_or_else(|e| {
            panic!(
                "guest: reading after its half-close: {e} ({} bytes in)",
                got.len()
            )
        });
        got
    });
    let (request_len, host_time) = join(host).unwrap_or_else(|e| panic!("host side: {e}"));
    assert_eq!(request_len, REQUEST);
    assert_eq!(
        received.len(),
        BEFORE + AFTER,
        "the guest got a short reply"
    );
    assert!(
        received == pattern(2, BEFORE + AFTER),
        "the reply's bytes differ"
    );
    println!(
        "half-close: {} MiB after the guest's FIN in {:.2} s",
        AFTER as u64 / MIB,
        host_time.as_secs_f64()
    );
    g.wait_flows(Some("tcp"), 0, Duration::from_secs(10));
}

/// A nftables table in a namespace (or on the host: `ns` None), deleted on drop.
struct NftTable {
    ns: Option<String>,
    family_name: String,
}

impl NftTable {
    fn create(ns: Option<&Netns>, family: &str, name: &str, body: &str, dir: &TempDir) -> NftTable {
        let file = dir.join(&format!("{name}.nft"));
        std::fs::write(&file, format!("table {family} {name} {{\n{body}\n}}\n")).unwrap();
        let t = NftTable {
            ns: ns.map(|n| n.name().to_string()),
            family_name: format!("{family} {name}"),
        };
        t.nft(&["-f", file.to_str().unwrap()]);
        t
    }

    fn nft(&self, args: &[&str]) -> String {
        let mut full: Vec<&str> = Vec::new();
        if let Some(ns) = &self.ns {
            full.extend(["ip", "netns", "exec", ns]);
        }
        full.push("nft");
        full.extend_from_slice(args);
        run_ok(&full)
    }

    /// `nft -j list ...` of an object of this table ("set NAME", "chain NAME"), parsed.
    fn list_json(&self, what: &str, name: &str) -> Value {
        let mut args = vec!["-j", "list", what];
        args.extend(self.family_name.split(' '));
        args.push(name);
        let text = self.nft(&args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("nft -j: {e}: {text}"))
    }

    /// Packets counted by the rules of `chain` (summed).
    fn counter_packets(&self, chain: &str) -> u64 {
        let v = self.list_json("chain", chain);
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["rule"]["expr"].as_array())
            .flatten()
            .filter_map(|e| e["counter"]["packets"].as_u64())
            .sum()
    }

    /// Elements of a set.
    fn set_len(&self, set: &str) -> usize {
        let v = self.list_json("set", set);
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["set"]["elem"].as_array())
            .map(Vec::len)
            .sum()
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        let mut full: Vec<&str> = Vec::new();
        if let Some(ns) = &self.ns {
            full.extend(["ip", "netns", "exec", ns]);
        }
        full.extend(["nft", "delete", "table"]);
        full.extend(self.family_name.split(' '));
        let _ = run_cmd(&full);
    }
}

/// A test host of the test's own that never answers (its firewall drops SYNs): while
/// 50 connections to it hang, other connections work without delay.
fn syn_dropping_remote_does_not_delay_other_connections(mode: Mode) {
    const HANGING: usize = 50;
    const OTHERS: usize = 20;
    let _quiet = quiet();
    let g = NatGuest::start(&format!("syndrop{mode}"), mode.opts());
    // The remote host: its own namespace behind a veth from the host, on a /30 of its
    // own (private, so the firewall guard keeps it off eth0 in any case).
    let remote = Netns::new(&format!("remote{mode}"));
    let veth = Veth::host_to(&remote);
    let base = 4 * (next_id() % 64);
    let host_ip = format!("172.31.250.{}", base + 1);
    let remote_ip = format!("172.31.250.{}", base + 2);
    veth.a.addr_add(&format!("{host_ip}/30"));
    veth.b.addr_add(&format!("{remote_ip}/30"));
    let port = 8000 + (next_id() % 1000);
    let dir = tests::tmp_dir("syndrop");
    let fw = NftTable::create(
        Some(&remote),
        "inet",
        "gvt_syndrop",
        &format!(
            "set synports {{ type inet_service; flags dynamic; size 4096; }}\n\
             chain input {{ type filter hook input priority 0; policy accept;\n\
               tcp dport {port} tcp flags & (syn | ack) == syn add @synports {{ tcp sport }} counter drop\n\
             }}"
        ),
        &dir,
    );
    // The veth works (ICMP is not filtered): silence below is the firewall's doing.
    run_ok(&["ping", "-c", "1", "-W", "2", &remote_ip]);
    let server = EchoServer::start();
    let echo_to = server.addr();
    let hang_to: SocketAddr = format!("{remote_ip}:{port}").parse().unwrap();
    let (hanging, times) = g.run(move || {
        // 50 connects that nobody will answer, all in progress at once.
        let hanging: Vec<socket2::Socket> = (0..HANGING)
            .map(|i| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                s.set_nonblocking(true).unwrap();
                match s.connect(&hang_to.into()) {
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    other => panic!("hanging connection {i}: connect gave {other:?}"),
                }
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // Meanwhile, other connections: each set up and echoed at once.
        let times: Vec<Duration> = (0..OTHERS)
            .map(|i| {
                let start = Instant::now();
                let mut c = TcpStream::connect_timeout(&echo_to, Duration::from_secs(5))
                    .unwrap_or_else(|e| {
                        panic!("connection {i} to {echo_to} while others hang: {e}")
                    });
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let msg = pattern(i as u64, 64);
                c.write_all(&msg).unwrap();
                let mut got = vec![0u8; 64];
                c.read_exact(&mut got)
                    .unwrap_or_else(|e| panic!("connection {i}: echo: {e}"));
                assert_eq!(got, msg);
                start.elapsed()
            })
            .collect();
        (hanging, times)
    });
    let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
    println!("connections to .254 while {HANGING} hang: {ms:?} ms");
    // All 50 are still waiting: neither connected nor refused.
    for (i, s) in hanging.iter().enumerate() {
        let err = s.take_error().unwrap();
        assert!(
            err.is_none(),
            "hanging connection {i} failed early: {err:?}"
        );
        assert!(
            s.peer_addr().is_err(),
            "hanging connection {i} got connected: the firewall let it through"
        );
    }
    // gvproxy dialled every one of them at once (no small limit on connects in progress).
    let dialled = fw.set_len("synports");
    assert!(
        dialled >= HANGING,
        "the remote saw SYNs from {dialled} host connections, not {HANGING}"
    );
    for (i, t) in times.iter().enumerate() {
        assert!(
            *t < Duration::from_secs(1),
            "connection {i} to .254 took {t:?} while {HANGING} connections hang: {ms:?} ms"
        );
    }
    drop(hanging);
    drop(veth);
}

/// UDP: an echo server on the host's loopback answers through .254; 10,000 datagrams of
/// mixed sizes up to the MTU arrive intact; after 90 s idle the flow is gone.
fn udp_echo_10000_datagrams_then_idle_expiry(mode: Mode) {
    const COUNT: u32 = 10_000;
    const WINDOW: u32 = 16;
    const IDLE: Duration = Duration::from_secs(90);
    let g = NatGuest::start(&format!("udp{mode}"), mode.opts());
    let max = usize::try_from(g.mtu).unwrap() - 20 - 8;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let echo = std::thread::spawn(move || {
        let mut peers: HashMap<SocketAddr, u64> = HashMap::new();
        let mut buf = vec![0u8; 65536];
        while !s2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                *peers.entry(from).or_default() += 1;
                let _ = sock.send_to(&buf[..n], from);
            }
        }
        peers
    });
    let datagram = |seq: u32| -> Vec<u8> {
        // Mixed sizes: every 7th the largest that fits the MTU, the rest spread below.
        let len = if seq % 7 == 0 {
            max
        } else {
            8 + usize::try_from(u64::from(seq).wrapping_mul(2_654_435_761) % (max as u64 - 7))
                .unwrap()
        };
        let mut d = pattern(u64::from(seq) + 1000, len);
        d[..4].copy_from_slice(&seq.to_le_bytes());
        d[4..8].copy_from_slice(&u32::try_from(len).unwrap().to_le_bytes());
        d
    };
    let to = SocketAddr::V4(SocketAddrV4::new(HOST_ALIAS, port));
    let start = Instant::now();
    let (bytes, largest) = g.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut got = vec![false; COUNT as usize];
        let (mut next, mut outstanding, mut bytes, mut largest) = (0u32, 0u32, 0u64, 0usize);
        let mut buf = vec![0u8; 65536];
        while next < COUNT || outstanding > 0 {
            while next < COUNT && outstanding < WINDOW {
                let d = datagram(next);
                let n = s
                    .send(&d)
                    .unwrap_or_else(|e| panic!("datagram {next}: send: {e}"));
                assert_eq!(n, d.len());
                next += 1;
                outstanding += 1;
            }
            let n = match s.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let missing: Vec<u32> =
                        (0..next).filter(|i| !got[*i as usize]).take(20).collect();
                    panic!(
                        "no echo within 3 s ({e}); {outstanding} outstanding, first missing \
                         {missing:?} of {next} sent"
                    );
                }
            };
            assert!(n >= 8, "a {n}-byte datagram came back");
            let seq = u32::from_le_bytes(buf[..4].try_into().unwrap());
            assert!(seq < next, "an echo of datagram {seq}, never sent");
            assert!(!got[seq as usize], "datagram {seq} came back twice");
            assert!(
                buf[..n] == datagram(seq),
                "datagram {seq} came back altered ({n} bytes)"
            );
            got[seq as usize] = true;
            outstanding -= 1;
            bytes += n as u64;
            largest = largest.max(n);
        }
        (bytes, largest)
    });
    let last = Instant::now();
    println!(
        "udp: {COUNT} datagrams ({} KiB, largest {largest} bytes) echoed in {:.2} s",
        bytes / 1024,
        start.elapsed().as_secs_f64()
    );
    assert_eq!(largest, max, "no datagram of the MTU's size came back");
    let stats = g.stats();
    assert!(
        flows_open(&stats, Some("udp")) >= 1,
        "no UDP flow open: {stats}"
    );
    // The flow stays while idle for less than 90 s, and is gone soon after.
    std::thread::sleep((IDLE - Duration::from_secs(5)).saturating_sub(last.elapsed()));
    let stats = g.stats();
    assert!(
        flows_open(&stats, Some("udp")) >= 1,
        "the UDP flow expired before 85 s idle: {stats}"
    );
    let deadline = last + IDLE + Duration::from_secs(20);
    loop {
        let stats = g.stats();
        if flows_open(&stats, Some("udp")) == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the UDP flow is still open {:.0} s after the last datagram: {stats}",
            last.elapsed().as_secs_f64()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "udp flow gone after {:.1} s idle",
        last.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);
    let peers = join(echo);
    // One host socket carried the whole flow.
    assert_eq!(
        peers.len(),
        1,
        "the echo server saw several sources: {peers:?}"
    );
}

/// `ping -c 3 192.168.127.254` from the guest is answered through the host: the echo
/// requests (marked with a pattern of this test's own) cross the host's loopback.
fn ping_host_through_nat(mode: Mode) {
    ensure_sysctl_ping_group();
    let g = NatGuest::start(&format!("ping{mode}"), mode.opts());
    let id = next_id();
    let mark = format!("{:08x}", (std::process::id() << 12) ^ id ^ 0x5a00_0000);
    let name = format!("gvt_ping_{}_{id}", std::process::id());
    let dir = tests::tmp_dir("ping");
    // iputils ping puts a 16-byte timestamp first, then the pattern: data offset 16 is
    // the ICMP header's 8 bytes plus 16 = bit 192 of the transport header.
    let counter = NftTable::create(
        None,
        "ip",
        &name,
        &format!(
            "chain out {{ type filter hook output priority 0; policy accept;\n\
               ip daddr 127.0.0.1 icmp type echo-request @th,192,32 0x{mark} counter\n\
             }}"
        ),
        &dir,
    );
    let out = g.ns.exec(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "3",
        "-p",
        &mark,
        &HOST_ALIAS.to_string(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success() && text.contains("3 received"),
        "ping {HOST_ALIAS} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = counter.counter_packets("out");
    assert!(
        seen >= 3,
        "the host's loopback saw {seen} of the guest's echo requests: answered elsewhere"
    );
}

/// The same as the bulk tests through a lossy link (2 % loss, 5 % reordering, 1 %
/// duplication of frames both ways), 200 MiB each way, unpaced senders on both sides.
fn lossy_link_200mib_each_way(mode: Mode) {
    let _heavy = heavy();
    let label = format!("lossy{mode}");
    let Mode::Shards(shards) = mode else {
        panic!("the lossy relay sits on the /connect link: no TAP mode");
    };
    let src = DataFile::create(&label, 200 * MIB);
    let faults = FaultConfig::new(seed_from_env(), 0.02, 0.05, 0.01);
    let g = NatGuest::start(
        &label,
        Opts {
            shards: Some(shards),
            mtu: 1500,
            faults: Some(faults),
            tap: false,
        },
    );
    let transfers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        transfer_both_ways(&g, &src, LOSSY_TIMEOUT, "200 MiB over a lossy link")
    }));
    // What the relay and gvproxy's TCP did, printed whether or not the transfers worked.
    print_tcp_counters(&g);
    let st = g.relay.as_ref().unwrap().stats();
    println!("relay guest → host: {}", st.guest_to_host);
    println!("relay host → guest: {}", st.host_to_guest);
    let close_errors = transfers.unwrap_or_else(|p| std::panic::resume_unwind(p));
    assert_eq!(st.connections, 1, "gvforwarder reconnected");
    for (dir, d) in [
        ("guest → host", st.guest_to_host),
        ("host → guest", st.host_to_guest),
    ] {
        assert_faults(dir, &d, &faults);
    }
    assert!(close_errors.is_empty(), "{close_errors:?}");
}

/// The relay really did what was asked, near the asked rates.
fn assert_faults(dir: &str, d: &DirectionStats, cfg: &FaultConfig) {
    assert!(
        d.frames > 10_000,
        "{dir}: only {} frames crossed the relay",
        d.frames
    );
    let frames = d.frames as f64;
    for (what, n, rate) in [
        ("dropped", d.dropped, cfg.loss),
        ("reordered", d.reordered, cfg.reorder),
        ("duplicated", d.duplicated, cfg.duplicate),
    ] {
        let got = n as f64 / frames;
        assert!(
            got > rate * 0.5 && got < rate * 1.5,
            "{dir}: {what} {:.2} % of frames, asked {:.2} %: {d}",
            got * 100.0,
            rate * 100.0
        );
    }
}

/// gvproxy's TCP counters (totals over the shards), for the log of a lossy run.
fn print_tcp_counters(g: &NatGuest) {
    let stats = g.stats();
    let tcp = &stats["tcp"];
    let names = [
        "segments_out",
        "retransmits",
        "fast_retransmits",
        "rto_expiries",
        "dup_acks",
        "ooo_segments",
        "ooo_dropped",
        "resets_in",
        "resets_out",
    ];
    let shown: Vec<String> = names.iter().map(|n| format!("{n} {}", tcp[*n])).collect();
    println!("gvproxy tcp: {}", shown.join(", "));
}
