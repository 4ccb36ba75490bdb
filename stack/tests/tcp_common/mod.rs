//! Fixtures for the TCP state-machine tests: a fake clock, a `Recorder` sink, a fixture per
//! state and helpers that play the guest's side.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

pub use stack::tcp::{
    Effects, Endpoints, SackBlock, SackBlocks, SegmentSink, SeqNumber, State, Tcb, TcpConfig,
    TcpFlags, TcpRepr, TcpTimestamps,
};

pub const GUEST_PORT: u16 = 40_000;
pub const REMOTE_PORT: u16 = 443;
pub const ISS: SeqNumber = SeqNumber(10_000);
pub const GUEST_ISN: SeqNumber = SeqNumber(500_000);
pub const ACK: TcpFlags = TcpFlags::ACK;
pub const SYN: TcpFlags = TcpFlags::SYN;
pub const FIN: TcpFlags = TcpFlags::FIN;
pub const RST: TcpFlags = TcpFlags::RST;
pub const PSH: TcpFlags = TcpFlags::PSH;

pub fn ep() -> Endpoints {
    Endpoints {
        guest: SocketAddrV4::new(Ipv4Addr::new(192, 168, 127, 2), GUEST_PORT),
        remote: SocketAddrV4::new(Ipv4Addr::new(93, 184, 216, 34), REMOTE_PORT),
    }
}

/// One segment we emitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seg {
    pub r: TcpRepr,
    pub data: Vec<u8>,
}

impl Seg {
    pub fn flags(&self) -> TcpFlags {
        self.r.flags
    }
    pub fn seq(&self) -> u32 {
        self.r.seq.0
    }
    pub fn ack(&self) -> u32 {
        self.r.ack.0
    }
    pub fn sacks(&self) -> Vec<(u32, u32)> {
        self.r
            .sack_blocks
            .as_slice()
            .iter()
            .map(|b| (b.left.0, b.right.0))
            .collect()
    }
}

/// Captures emitted segments (the shard would build frames around them).
#[derive(Default, Debug)]
pub struct Recorder(pub Vec<Seg>);

impl SegmentSink for Recorder {
    fn emit(&mut self, repr: &TcpRepr, payload: [&[u8]; 2]) {
        assert_eq!(repr.src_port, REMOTE_PORT);
        assert_eq!(repr.dst_port, GUEST_PORT);
        self.0.push(Seg {
            r: *repr,
            data: [payload[0], payload[1]].concat(),
        });
    }
}

/// The guest's SYN as Linux sends it.
pub fn guest_syn() -> TcpRepr {
    TcpRepr {
        src_port: GUEST_PORT,
        dst_port: REMOTE_PORT,
        seq: GUEST_ISN,
        flags: SYN,
        window: 64_240,
        mss: Some(1460),
        window_scale: Some(7),
        sack_permitted: true,
        timestamps: Some(TcpTimestamps {
            tsval: 1_000,
            tsecr: 0,
        }),
        ..TcpRepr::default()
    }
}

/// The guest's SYN without any option but MSS.
pub fn guest_syn_plain() -> TcpRepr {
    TcpRepr {
        window_scale: None,
        sack_permitted: false,
        timestamps: None,
        ..guest_syn()
    }
}

/// Host→guest test bytes.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

pub struct Fix {
    pub t: Tcb,
    pub cfg: TcpConfig,
    pub t0: Instant,
    pub now: Instant,
    pub out: Recorder,
    /// The guest's next sequence number.
    pub gseq: SeqNumber,
    /// The guest's timestamp clock, and whether it sends timestamps.
    pub gts: u32,
    pub ts: bool,
    /// Window field the guest sends.
    pub gwin: u16,
    /// The last TSval we sent (echoed by the guest).
    pub our_tsval: u32,
    /// Host bytes handed to the Tcb so far.
    pub host_sent: usize,
}

impl Fix {
    /// accept_syn only: `AwaitingHost`.
    pub fn awaiting_with(syn: TcpRepr, cfg: TcpConfig) -> Fix {
        let t0 = Instant::now();
        let t = Tcb::accept_syn(ep(), &syn, ISS, &cfg, t0).expect("valid SYN");
        Fix {
            t,
            cfg,
            t0,
            now: t0,
            out: Recorder::default(),
            gseq: syn.seq + 1,
            gts: syn.timestamps.map_or(0, |t| t.tsval),
            ts: syn.timestamps.is_some(),
            gwin: 1000,
            our_tsval: 0,
            host_sent: 0,
        }
    }

    pub fn awaiting() -> Fix {
        Fix::awaiting_with(guest_syn(), TcpConfig::default())
    }

    /// `SynReceived`: SYN-ACK sent (and taken from the recorder).
    pub fn syn_received_with(syn: TcpRepr, cfg: TcpConfig) -> Fix {
        let mut f = Fix::awaiting_with(syn, cfg);
        f.t.host_connected(f.now, &mut f.out);
        let synack = f.take_one();
        assert_eq!(synack.flags(), SYN | ACK);
        f.note_ts(&synack);
        f
    }

    pub fn syn_received() -> Fix {
        Fix::syn_received_with(guest_syn(), TcpConfig::default())
    }

    /// `Established`, through the guest's ACK of our SYN-ACK. Quick ACKs used up, so that
    /// ACK timing follows the delayed-ACK rules unless a test wants otherwise.
    pub fn established_with(syn: TcpRepr, cfg: TcpConfig) -> Fix {
        let mut f = Fix::syn_received_with(syn, cfg);
        f.tick(1);
        let eff = f.ack_now();
        assert_eq!(eff, Effects::default());
        assert_eq!(f.t.state(), State::Established);
        assert!(f.take().is_empty());
        f
    }

    pub fn established() -> Fix {
        Fix::established_with(guest_syn(), TcpConfig::default())
    }

    pub fn established_plain() -> Fix {
        Fix::established_with(guest_syn_plain(), TcpConfig::default())
    }

    /// Established, with the quick-ACK budget of the connection start spent.
    pub fn established_no_quickack() -> Fix {
        let mut f = Fix::established();
        for _ in 0..16 {
            f.data(b"x");
            f.poll();
            f.host_write_all();
        }
        f.take();
        f
    }

    /// `CloseWait`: the guest sent FIN (acknowledged).
    pub fn close_wait() -> Fix {
        let mut f = Fix::established();
        let eff = f.send_flags(FIN | ACK, b"");
        assert!(eff.host_shutdown);
        f.poll();
        f.take();
        assert_eq!(f.t.state(), State::CloseWait);
        f
    }

    /// `FinWait1`: the host reached EOF and our FIN is out.
    pub fn fin_wait1() -> Fix {
        let mut f = Fix::established();
        f.t.host_eof();
        assert_eq!(f.t.state(), State::FinWait1);
        let segs = f.poll();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].flags(), FIN | ACK);
        f
    }

    /// `FinWait2`: our FIN acknowledged.
    pub fn fin_wait2() -> Fix {
        let mut f = Fix::fin_wait1();
        f.ack_now();
        assert_eq!(f.t.state(), State::FinWait2);
        f
    }

    /// `LastAck`: guest FIN, then host EOF; our FIN is out.
    pub fn last_ack() -> Fix {
        let mut f = Fix::close_wait();
        f.t.host_eof();
        assert_eq!(f.t.state(), State::LastAck);
        let segs = f.poll();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].flags(), FIN | ACK);
        f
    }

    /// `Closing`: both FINs crossed, ours not yet acknowledged.
    pub fn closing() -> Fix {
        let mut f = Fix::fin_wait1();
        let mut r = f.seg(FIN | ACK);
        r.ack = ISS + 1; // does not acknowledge our FIN
        f.input(r, b"");
        f.gseq = f.gseq + 1;
        assert_eq!(f.t.state(), State::Closing);
        f.poll();
        f.take();
        f
    }

    /// `TimeWait`.
    pub fn time_wait() -> Fix {
        let mut f = Fix::fin_wait2();
        let eff = f.send_flags(FIN | ACK, b"");
        assert!(eff.host_shutdown && eff.host_close);
        assert_eq!(f.t.state(), State::TimeWait);
        f.poll();
        f.take();
        f
    }

    /// `SynSent`: we opened into the guest.
    pub fn syn_sent() -> (Fix, Seg) {
        let t0 = Instant::now();
        let cfg = TcpConfig::default();
        let mut out = Recorder::default();
        let t = Tcb::connect(ep(), ISS, &cfg, t0, &mut out);
        let syn = out.0.remove(0);
        let f = Fix {
            t,
            cfg,
            t0,
            now: t0,
            out,
            gseq: GUEST_ISN + 1,
            gts: 5_000,
            ts: true,
            gwin: 1000,
            our_tsval: syn.r.timestamps.map_or(0, |t| t.tsval),
            host_sent: 0,
        };
        (f, syn)
    }

    pub fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.gts = self.gts.wrapping_add(ms as u32);
    }

    fn note_ts(&mut self, s: &Seg) {
        if let Some(ts) = s.r.timestamps {
            self.our_tsval = ts.tsval;
        }
    }

    /// Segments emitted since the last call.
    pub fn take(&mut self) -> Vec<Seg> {
        let v = std::mem::take(&mut self.out.0);
        if let Some(s) = v.last() {
            self.note_ts(&s.clone());
        }
        v
    }

    pub fn take_one(&mut self) -> Seg {
        let v = self.take();
        assert_eq!(v.len(), 1, "expected one segment, got {v:#?}");
        v.into_iter().next().unwrap()
    }

    /// A guest segment with the current ACK of our data, window and timestamps.
    pub fn seg(&self, flags: TcpFlags) -> TcpRepr {
        TcpRepr {
            src_port: GUEST_PORT,
            dst_port: REMOTE_PORT,
            seq: self.gseq,
            ack: self.t.vars().snd_nxt,
            flags,
            window: self.gwin,
            timestamps: self.ts.then_some(TcpTimestamps {
                tsval: self.gts,
                tsecr: self.our_tsval,
            }),
            ..TcpRepr::default()
        }
    }

    pub fn input(&mut self, r: TcpRepr, payload: &[u8]) -> Effects {
        self.t.on_segment(&r, payload, self.now, &mut self.out)
    }

    /// The guest sends `payload` in order, acknowledging everything we sent.
    pub fn data(&mut self, payload: &[u8]) -> Effects {
        let r = self.seg(ACK | PSH);
        self.gseq = self.gseq + payload.len() as u32;
        self.input(r, payload)
    }

    /// A segment with these flags and payload at the guest's sequence number.
    pub fn send_flags(&mut self, flags: TcpFlags, payload: &[u8]) -> Effects {
        let r = self.seg(flags);
        self.gseq = self.gseq + payload.len() as u32 + u32::from(flags.contains(FIN));
        self.input(r, payload)
    }

    /// A pure ACK of everything we sent.
    pub fn ack_now(&mut self) -> Effects {
        let r = self.seg(ACK);
        self.input(r, b"")
    }

    /// A pure ACK of `ack`.
    pub fn ack_to(&mut self, ack: SeqNumber) -> Effects {
        let mut r = self.seg(ACK);
        r.ack = ack;
        self.input(r, b"")
    }

    /// A pure ACK of `ack` with SACK blocks.
    pub fn sack(&mut self, ack: SeqNumber, blocks: &[(SeqNumber, SeqNumber)]) -> Effects {
        let mut r = self.seg(ACK);
        r.ack = ack;
        let mut sb = SackBlocks::new();
        for &(l, rr) in blocks {
            sb.push(SackBlock { left: l, right: rr });
        }
        r.sack_blocks = sb;
        self.input(r, b"")
    }

    pub fn poll(&mut self) -> Vec<Seg> {
        self.t.poll_output(self.now, &mut self.out);
        self.take()
    }

    pub fn poll_eff(&mut self) -> (Effects, Vec<Seg>) {
        let e = self.t.poll_output(self.now, &mut self.out);
        (e, self.take())
    }

    /// Runs the clock to the next deadline and fires it.
    pub fn fire(&mut self) -> (Effects, Vec<Seg>) {
        let d = self.t.next_deadline().expect("a timer is armed");
        let ms = d.saturating_duration_since(self.now).as_millis() as u64;
        self.now = d;
        self.gts = self.gts.wrapping_add(ms as u32);
        let e = self.t.on_timer(self.now, &mut self.out);
        (e, self.take())
    }

    pub fn deadline_in(&self) -> Option<Duration> {
        self.t
            .next_deadline()
            .map(|d| d.saturating_duration_since(self.now))
    }

    /// Host bytes (the pattern continued) into the send ring.
    pub fn host_send(&mut self, n: usize) -> usize {
        let [a, b] = self.t.send_spare();
        let n = n.min(a.len() + b.len());
        let na = n.min(a.len());
        for (i, x) in a[..na].iter_mut().enumerate() {
            *x = ((self.host_sent + i) % 251) as u8;
        }
        for (i, x) in b[..n - na].iter_mut().enumerate() {
            *x = ((self.host_sent + na + i) % 251) as u8;
        }
        self.t.host_read(n);
        self.host_sent += n;
        n
    }

    /// Everything pending goes into the host socket.
    pub fn host_write_all(&mut self) -> (Vec<u8>, Effects) {
        let [a, b] = self.t.host_data();
        let v = [a, b].concat();
        let e = self.t.host_wrote(v.len(), self.now, &mut self.out);
        (v, e)
    }

    pub fn host_pending(&self) -> Vec<u8> {
        let [a, b] = self.t.host_data();
        [a, b].concat()
    }

    pub fn our_nxt(&self) -> SeqNumber {
        self.t.vars().snd_nxt
    }

    pub fn our_una(&self) -> SeqNumber {
        self.t.vars().snd_una
    }

    pub fn rcv_nxt(&self) -> SeqNumber {
        self.t.vars().rcv_nxt
    }
}
