//! Hot-path micro-benchmarks, run by hand in release:
//! `cargo run --release -p stack --example microbench`.
//!
//! - checksum: RFC 1071 sum over 64 KiB buffers at odd offsets.
//! - TCP engine alone: two `Tcb`s back to back on a perfect link, one shard turn per
//!   batch of segments, bulk data one way. Counts engine work plus one copy of each
//!   segment into the "link" (what the shard's frame building costs instead); no
//!   checksums.

// Benchmark code: a failed unwrap is a failed run; casts are of small values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use stack::tcp::{Endpoints, SegmentSink, SeqNumber, Tcb, TcpConfig, TcpRepr};

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
        acc += u64::from(stack::wire::checksum::data(std::hint::black_box(
            &buf[i % 3..],
        )));
    }
    std::hint::black_box(acc);
    (buf.len() * rounds) as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn main() {
    eprintln!("checksum: {:.1} GB/s", checksum_gbytes_per_s());
    for (mss, total) in [(1460u16, 1usize << 30), (65_480, 4 << 30)] {
        let gbps = run(mss, total);
        eprintln!("MSS {mss}: {gbps:.1} Gbit/s through two Tcbs (engine + one copy per segment)");
    }
}
