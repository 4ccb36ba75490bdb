//! Micro-benchmarks of the learning switch, run by hand in release:
//! `cargo run --release -p switch --example switch_microbench` (about 1 s).
//!
//! - switch decision: `Switch::process` (count the frame, learn its source, decide where
//!   it goes) with N = 2, 64 and 4096 learned MACs spread over up to 8 ports. Each frame
//!   comes in on its source's own port (the steady state: the source is known) and goes to
//!   a random learned MAC (unicast, or filtered when it sits on the same port); 1 frame in
//!   16 is broadcast. The inputs are drawn beforehand from a seeded xorshift, so the timed
//!   loop is the switch alone. Reported in ns/decision and millions of decisions/s.
//! - ageing: `Switch::age` over the same N entries when none has expired (the periodic
//!   scan the switch loop runs), in ns per call.

// Benchmark code: a failed unwrap is a failed run; casts are of small values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use stack::wire::MacAddr;
use switch::{Decision, Learned, PortId, Switch};

/// Decisions timed per N.
const DECISIONS: usize = 5_000_000;
/// Distinct precomputed inputs, cycled (a power of two).
const INPUTS: usize = 1 << 14;

/// Marsaglia's xorshift64: reproducible and cheap.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The i-th guest MAC: locally administered unicast.
fn mac(i: usize) -> MacAddr {
    let b = (i as u32).to_be_bytes();
    MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]])
}

/// A frame: ingress port, destination, source.
type Input = (PortId, MacAddr, MacAddr);

/// A switch that learned `n` MACs, MAC i on port `i % ports`, and the inputs to time.
fn setup(n: usize, now: Instant) -> (Switch, Vec<Input>) {
    let ports = n.min(8);
    let mut sw = Switch::new();
    let ids: Vec<PortId> = (0..ports).map(|_| sw.add_port()).collect();
    let port_of = |i: usize| ids[i % ports];
    for i in 0..n {
        let (_, learned) = sw.process(port_of(i), MacAddr::BROADCAST, mac(i), 60, now);
        assert_eq!(learned, Learned::New);
    }
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let inputs = (0..INPUTS)
        .map(|_| {
            let src = rng.below(n);
            let dst = if rng.below(16) == 0 {
                MacAddr::BROADCAST
            } else {
                mac(rng.below(n))
            };
            (port_of(src), dst, mac(src))
        })
        .collect();
    (sw, inputs)
}

fn bench_decisions(n: usize) {
    // Frames arrive within a second of learning: every entry is fresh.
    let learned_at = Instant::now();
    let now = learned_at + Duration::from_millis(500);
    let (mut sw, inputs) = setup(n, learned_at);
    let mut tally = [0u64; 3];
    let mut step = |i: usize| {
        let (port, dst, src) = inputs[i & (INPUTS - 1)];
        let (d, learned) = sw.process(port, black_box(dst), black_box(src), 1514, now);
        debug_assert_eq!(learned, Learned::Known);
        tally[match d {
            Decision::Unicast(_) => 0,
            Decision::Flood => 1,
            Decision::Filter => 2,
        }] += 1;
    };
    for i in 0..DECISIONS / 10 {
        step(i);
    }
    let t = Instant::now();
    for i in 0..DECISIONS {
        step(i);
    }
    let ns = t.elapsed().as_nanos() as f64 / DECISIONS as f64;
    black_box(&tally);
    let total: u64 = tally.iter().sum();
    let pct = |k: usize| tally[k] as f64 * 100.0 / total as f64;
    // Nothing may have been forgotten or moved: every unicast to a known MAC stays known.
    assert_eq!(sw.cam().count(), n);
    eprintln!(
        "switch decision, {n} MACs: {ns:.1} ns/decision, {:.1} M decisions/s \
         ({:.0}% unicast, {:.0}% flood, {:.0}% filtered)",
        1e3 / ns,
        pct(0),
        pct(1),
        pct(2)
    );
}

fn bench_age(n: usize) {
    let learned_at = Instant::now();
    let (mut sw, _) = setup(n, learned_at);
    let now = learned_at + Duration::from_secs(1);
    let calls = (2_000_000 / n).clamp(100, 100_000);
    let mut removed = 0;
    for _ in 0..calls / 10 {
        removed += sw.age(black_box(now)).len();
    }
    let t = Instant::now();
    for _ in 0..calls {
        removed += sw.age(black_box(now)).len();
    }
    let ns = t.elapsed().as_nanos() as f64 / calls as f64;
    assert_eq!(removed, 0);
    eprintln!(
        "switch age, {n} MACs, none expired: {ns:.0} ns/call ({:.1} ns/entry)",
        ns / n as f64
    );
}

fn main() {
    for n in [2, 64, 4096] {
        bench_decisions(n);
    }
    for n in [2, 64, 4096] {
        bench_age(n);
    }
}
