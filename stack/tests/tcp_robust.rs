//! Robustness: seeded random segments (wild flags, sequence and acknowledgment numbers,
//! windows, options, SACK blocks) against every state, mixed with host reads and writes,
//! EOFs and timers. Nothing may panic, and the connection must stay consistent: buffers
//! within their bounds, SND.UNA <= SND.NXT, a timer armed whenever data is outstanding,
//! every segment within the MSS, host_shutdown/host_close at most once.

// Test code: a failed unwrap is a failed test; casts are of small values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod tcp_common;

use std::time::Duration;

use tcp_common::*;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A sequence number near `base` most of the time, anywhere otherwise.
fn near(rng: &mut XorShift, base: SeqNumber, spread: u64) -> SeqNumber {
    match rng.below(10) {
        0 => SeqNumber(rng.next() as u32),
        1 => base,
        2..=5 => base + rng.below(spread) as u32,
        _ => base - rng.below(spread) as u32,
    }
}

fn random_segment(rng: &mut XorShift, f: &Fix) -> (TcpRepr, Vec<u8>) {
    let v = f.t.vars();
    let mut flags = TcpFlags(rng.next() as u8);
    if !rng.chance(5) {
        // An exact-sequence RST ends the connection; keep them rare so that runs are long.
        flags = TcpFlags(flags.0 & !RST.0);
    }
    if rng.chance(60) {
        // Mostly plausible: ACK, sometimes PSH/FIN, rarely SYN/RST.
        flags = ACK;
        if rng.chance(30) {
            flags |= PSH;
        }
        if rng.chance(5) {
            flags |= FIN;
        }
    }
    let mut r = TcpRepr {
        src_port: GUEST_PORT,
        dst_port: REMOTE_PORT,
        seq: near(rng, v.rcv_nxt, 70_000),
        ack: match rng.below(10) {
            0..=4 => {
                v.snd_una + rng.below(u64::from(v.snd_nxt.diff(v.snd_una).max(0) as u32) + 1) as u32
            }
            5 | 6 => v.snd_nxt,
            _ => near(rng, v.snd_una, 70_000),
        },
        flags,
        window: if rng.chance(20) { 0 } else { rng.next() as u16 },
        ..TcpRepr::default()
    };
    if rng.chance(10) {
        r.mss = Some(rng.next() as u16);
    }
    if rng.chance(10) {
        r.window_scale = Some(rng.next() as u8);
    }
    r.sack_permitted = rng.chance(5);
    if rng.chance(80) {
        let tsval = if rng.chance(90) {
            f.gts.wrapping_add(rng.below(3) as u32)
        } else {
            rng.next() as u32
        };
        r.timestamps = Some(TcpTimestamps {
            tsval,
            tsecr: if rng.chance(80) {
                f.our_tsval
            } else {
                rng.next() as u32
            },
        });
    }
    if rng.chance(30) {
        let mut blocks = SackBlocks::new();
        for _ in 0..rng.below(5) {
            let l = near(rng, v.snd_una, 100_000);
            let r2 = if rng.chance(80) {
                l + rng.below(20_000) as u32
            } else {
                SeqNumber(rng.next() as u32)
            };
            blocks.push(SackBlock { left: l, right: r2 });
        }
        r.sack_blocks = blocks;
    }
    let len = match rng.below(4) {
        0 => 0,
        1 => rng.below(10) as usize,
        2 => rng.below(1500) as usize,
        _ => rng.below(70_000) as usize,
    };
    let payload = (0..len).map(|i| i as u8).collect();
    (r, payload)
}

struct Tracker {
    shutdown: u32,
    close: u32,
}

impl Tracker {
    fn note(&mut self, e: Effects) {
        self.shutdown += u32::from(e.host_shutdown);
        self.close += u32::from(e.host_close);
        assert!(self.shutdown <= 1, "host_shutdown twice");
        assert!(self.close <= 1, "host_close twice");
    }
}

fn check(f: &Fix, segs: &[Seg]) {
    let v = f.t.vars();
    assert!(v.snd_una <= v.snd_nxt, "{v:?}");
    assert!(v.send_buffered <= f.cfg.send_buf);
    assert!(v.recv_buffered <= f.cfg.recv_buf + 128);
    assert!(v.ooo_bytes <= f.cfg.ooo_buf);
    assert!(v.cwnd >= 1);
    let outstanding = v.snd_nxt > v.snd_una;
    let sync = matches!(
        v.state,
        State::Established | State::CloseWait | State::FinWait1 | State::Closing | State::LastAck
    );
    if outstanding && sync {
        assert!(
            f.t.next_deadline().is_some(),
            "data outstanding without a timer"
        );
    }
    for s in segs {
        let opts = s.r.header_len() - 20;
        assert!(s.r.header_len() <= 60);
        if !s.data.is_empty() {
            assert!(
                s.data.len() + opts <= usize::from(v.snd_mss),
                "segment over the MSS"
            );
            assert!(!s.flags().contains(SYN));
        }
        if s.flags().contains(RST) {
            assert!(s.data.is_empty());
        }
    }
}

fn hammer(mut f: Fix, seed: u64, steps: usize) {
    let mut rng = XorShift(seed);
    let mut tr = Tracker {
        shutdown: 0,
        close: 0,
    };
    for _ in 0..steps {
        match rng.below(12) {
            0..=5 => {
                f.gts = f.gts.wrapping_add(1);
                let (r, p) = random_segment(&mut rng, &f);
                let e = f.input(r, &p);
                tr.note(e);
            }
            6 => {
                // A plausible in-order segment, so that data flows too.
                let n = rng.below(3000) as usize;
                let mut r = f.seg(ACK);
                r.seq = f.t.vars().rcv_nxt;
                let e = f.input(r, &vec![1; n]);
                tr.note(e);
            }
            7 => {
                let (e, segs) = f.poll_eff();
                tr.note(e);
                check(&f, &segs);
            }
            8 => {
                let n = rng.below(200_000) as usize;
                f.host_send(n);
            }
            9 => {
                let pending = f.host_pending().len();
                let n = rng.below(pending as u64 + 2) as usize;
                let e = f.t.host_wrote(n, f.now, &mut f.out);
                tr.note(e);
            }
            10 => {
                f.tick(rng.below(3000));
                let e = f.t.on_timer(f.now, &mut f.out);
                tr.note(e);
            }
            _ => {
                if rng.chance(10) {
                    f.t.host_eof();
                }
                if rng.chance(1) {
                    f.t.host_reset(&mut f.out);
                    tr.close += 1;
                }
            }
        }
        let segs = f.take();
        check(&f, &segs);
        if f.t.is_closed() {
            // A closed connection stays inert.
            let (r, p) = random_segment(&mut rng, &f);
            assert_eq!(f.input(r, &p), Effects::default());
            assert!(f.poll().is_empty());
            return;
        }
    }
}

type Fixture = (&'static str, fn() -> Fix);

fn fixtures() -> Vec<Fixture> {
    vec![
        ("awaiting", Fix::awaiting),
        ("syn_received", Fix::syn_received),
        ("established", Fix::established),
        ("established_plain", Fix::established_plain),
        ("close_wait", Fix::close_wait),
        ("fin_wait1", Fix::fin_wait1),
        ("fin_wait2", Fix::fin_wait2),
        ("last_ack", Fix::last_ack),
        ("closing", Fix::closing),
        ("time_wait", Fix::time_wait),
        ("syn_sent", || Fix::syn_sent().0),
    ]
}

#[test]
fn random_segments_never_break_a_connection() {
    for (name, make) in fixtures() {
        for seed in 1..=20u64 {
            let seed = seed * 0x9E37_79B9 + name.len() as u64;
            let r = std::panic::catch_unwind(|| hammer(make(), seed, 1500));
            if r.is_err() {
                panic!("fixture {name}, seed {seed}");
            }
        }
    }
}

#[test]
fn small_buffers_and_odd_config() {
    let cfgs = [
        TcpConfig {
            mss: 0,
            recv_buf: 1,
            send_buf: 1,
            ooo_buf: 0,
            ..TcpConfig::default()
        },
        TcpConfig {
            mss: u16::MAX,
            recv_buf: 3000,
            send_buf: 5000,
            ooo_buf: 100,
            rto_min: Duration::ZERO,
            rto_max: Duration::MAX,
            rto_initial: Duration::MAX,
            delayed_ack: Duration::ZERO,
            time_wait: Duration::MAX,
            ..TcpConfig::default()
        },
    ];
    for (k, cfg) in cfgs.into_iter().enumerate() {
        for seed in 1..=10u64 {
            let cfg = cfg.clone();
            let r = std::panic::catch_unwind(move || {
                hammer(Fix::established_with(guest_syn(), cfg), seed, 1500)
            });
            if r.is_err() {
                panic!("config {k}, seed {seed}");
            }
        }
    }
}
