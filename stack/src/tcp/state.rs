//! The connection (transmission control block) and RFC 9293 §3.10 event processing.

use std::time::{Duration, Instant};

use super::rack::{AckCtx, LossStats, Rack};
use super::recv::{select_window, window_shift_for, Placed, RecvBuffer, WindowInputs};
use super::ring::Ring;
use super::rtt::RttEstimator;
use super::send::{Congestion, Recovery, Scoreboard, DUP_THRESH};
use super::timer::{expired, Timers};
use super::{
    Effects, Endpoints, SackBlock, SegmentSink, SeqNumber, State, TcbStats, TcbVars, TcpConfig,
    TcpFlags, TcpRepr, TcpTimestamps,
};

/// RFC 9293 §3.7.1: without an MSS option, assume 536.
const DEFAULT_MSS: u16 = 536;
/// Smaller MSS options are raised to this (Linux's TCP_MIN_MSS), so that options always
/// leave room for data.
const MIN_MSS: u16 = 88;
/// Bytes of the timestamps option as laid out on data segments (NOP NOP TS).
const TS_OPTION_LEN: usize = 12;
/// Fixed TCP header.
const HEADER_LEN: usize = 20;
/// `send_room` lets this much be buffered even when the guest's window is small or closed,
/// so that there is something to probe with and to send the moment it opens.
const READ_FLOOR: usize = 64 * 1024;
/// Data segments acknowledged without delay at the start of a connection (Linux's
/// quick-ACK mode), so that the guest's slow start is not held back by delayed ACKs.
const QUICK_ACKS: u32 = 16;
/// PAWS tolerates a TSval this much older than TS.Recent (Linux's TCP_PAWS_WINDOW): with a
/// millisecond clock, segments sent in the same tick may arrive reordered.
const PAWS_WINDOW: u32 = 1;
/// RFC 7323 §5.5: TS.Recent is invalid after 24 days of idleness.
const PAWS_IDLE: Duration = Duration::from_secs(24 * 24 * 3600);
/// Bound for a timer deadline that would overflow `Instant`.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
/// RFC 8985 §7.2 floor of the probe timeout 2 * SRTT. The guest link's RTT is tens of
/// microseconds to a few milliseconds, below the shard's timer resolution (1 ms); Linux
/// adds 2 jiffies for the same reason.
const PTO_MIN: Duration = Duration::from_millis(2);
/// RFC 8985 §7.2 WCDelAckT, added to the probe timeout when one segment is in flight (the
/// guest may hold its ACK for it): Linux delays an ACK by at most max(its SRTT, 40 ms)
/// (TCP_DELACK_MIN) once it has an RTT estimate, which on this link is 40 ms. A probe sent
/// too early only costs one segment and a D-SACK.
const GUEST_DELACK_MAX: Duration = Duration::from_millis(40);

fn at(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

/// `b - a` in bytes, 0 when `b` is not after `a`.
fn span(a: SeqNumber, b: SeqNumber) -> u32 {
    u32::try_from(b.diff(a).max(0)).unwrap_or(0)
}

fn span_usize(a: SeqNumber, b: SeqNumber) -> usize {
    usize::try_from(span(a, b)).unwrap_or(0)
}

fn seq_add(s: SeqNumber, n: usize) -> SeqNumber {
    s + u32::try_from(n).unwrap_or(u32::MAX)
}

/// RFC 7323 §5.2: timestamps compare in modulo-2^32 arithmetic.
fn ts_before(a: u32, b: u32) -> bool {
    SeqNumber(a).diff(SeqNumber(b)) < 0
}

/// One connection between the guest and us.
pub struct Tcb {
    ep: Endpoints,
    cfg: TcpConfig,
    state: State,
    /// Origin of our TSval clock.
    epoch: Instant,

    // RFC 9293 §3.3.1 send sequence variables.
    iss: SeqNumber,
    snd_una: SeqNumber,
    /// The next new sequence number to send (the highest sent so far; retransmissions of
    /// holes do not move it).
    snd_nxt: SeqNumber,
    /// The guest's window, scaled.
    snd_wnd: u32,
    snd_wl1: SeqNumber,
    snd_wl2: SeqNumber,
    max_snd_wnd: u32,
    /// RFC 7323: the guest's window scale (0 when not negotiated).
    snd_shift: u8,
    /// Largest segment we send, options included: min(guest MSS, cfg.mss).
    snd_mss: u16,
    /// Sequence number of the send ring's first byte (SND.UNA once the SYN is acked).
    snd_buf_seq: SeqNumber,
    send: Ring,
    /// The host reached EOF: a FIN follows the data.
    fin_queued: bool,
    fin_sent: bool,
    fin_acked: bool,
    sb: Scoreboard,
    /// RACK-TLP (RFC 8985): the log of segments sent, loss detection, loss probes.
    rack: Rack,
    cc: Congestion,
    rtt: RttEstimator,
    /// `timers.rtx` is a loss probe timeout (RFC 8985 §7.2), not the RTO.
    rtx_probe: bool,
    /// Karn's algorithm without timestamps: the sequence number that, once acknowledged,
    /// completes a measurement, and when it was sent.
    rtt_probe: Option<(SeqNumber, Instant)>,
    syn_sent_at: Instant,
    syn_retransmitted: bool,
    /// Consecutive retransmission timeouts (or SYN retransmissions) with no
    /// acknowledgment from the guest in between.
    retries: u32,
    /// A zero-window probe is outstanding.
    probing: bool,
    /// TSval of our first retransmission after an RTO, while recovering from it: an echo
    /// older than this measures the timeout too, not the path (Karn's rule for
    /// timestamps), and is not an RTT sample.
    rto_tsval: Option<u32>,

    // RFC 9293 §3.3.1 receive sequence variables.
    irs: SeqNumber,
    rcv_nxt: SeqNumber,
    /// Right edge of the window we advertised (RCV.NXT + RCV.WND as last sent).
    rcv_adv: SeqNumber,
    /// Our window scale (0 when not negotiated).
    rcv_shift: u8,
    /// The shift we offered in our SYN (sizes the ring's slack).
    rcv_shift_offered: u8,
    recv: RecvBuffer,
    /// Sequence number of the guest's FIN once seen (possibly ahead of a gap).
    rcv_fin: Option<SeqNumber>,
    fin_received: bool,
    last_ack_sent: SeqNumber,
    /// Largest guest payload seen: "full-sized" for the ACK-every-second-segment rule.
    rcv_mss: usize,
    quick_acks: u32,
    ack_now: bool,
    /// The window in our SYN or SYN-ACK (never scaled, RFC 7323 §2.2).
    syn_window: u16,

    // Options (RFC 7323, RFC 2018).
    ws_ok: bool,
    sack_ok: bool,
    ts_ok: bool,
    ts_recent: u32,
    ts_recent_at: Instant,
    ts_offset: u32,

    timers: Timers,

    // Host side bookkeeping.
    read_paused: bool,
    shutdown_reported: bool,
    close_reported: bool,
    aborted: bool,

    stats: TcbStats,
}

/// RFC 9293 §3.10.7.1: the reply to a segment for which no connection exists (never to an
/// RST): `<SEQ=SEG.ACK><CTL=RST>` when it carried an ACK, else
/// `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`.
pub fn reset_for_unknown(seg: &TcpRepr, payload_len: usize) -> Option<TcpRepr> {
    if seg.flags.contains(TcpFlags::RST) {
        return None;
    }
    let mut r = TcpRepr {
        src_port: seg.dst_port,
        dst_port: seg.src_port,
        ..TcpRepr::default()
    };
    if seg.flags.contains(TcpFlags::ACK) {
        r.seq = seg.ack;
        r.flags = TcpFlags::RST;
    } else {
        let len = payload_len
            + usize::from(seg.flags.contains(TcpFlags::SYN))
            + usize::from(seg.flags.contains(TcpFlags::FIN));
        r.ack = seq_add(seg.seq, len);
        r.flags = TcpFlags::RST | TcpFlags::ACK;
    }
    Some(r)
}

impl Tcb {
    fn new(ep: Endpoints, iss: SeqNumber, cfg: &TcpConfig, now: Instant, state: State) -> Tcb {
        let cfg_mss = cfg.mss.max(MIN_MSS);
        let shift = window_shift_for(cfg.recv_buf);
        let syn_window = u16::try_from(cfg.recv_buf.min(65_535)).unwrap_or(u16::MAX);
        Tcb {
            ep,
            cfg: cfg.clone(),
            state,
            epoch: now,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_wnd: 0,
            snd_wl1: SeqNumber(0),
            snd_wl2: iss,
            max_snd_wnd: 0,
            snd_shift: 0,
            snd_mss: DEFAULT_MSS.min(cfg_mss),
            snd_buf_seq: iss + 1,
            send: Ring::new(cfg.send_buf),
            fin_queued: false,
            fin_sent: false,
            fin_acked: false,
            sb: Scoreboard::default(),
            rack: Rack::new(iss),
            cc: Congestion::new(u32::from(DEFAULT_MSS), iss),
            rtt: RttEstimator::new(cfg.rto_initial, cfg.rto_min, cfg.rto_max),
            rtx_probe: false,
            rtt_probe: None,
            syn_sent_at: now,
            syn_retransmitted: false,
            retries: 0,
            probing: false,
            rto_tsval: None,
            irs: SeqNumber(0),
            rcv_nxt: SeqNumber(0),
            rcv_adv: SeqNumber(0),
            rcv_shift: shift,
            rcv_shift_offered: shift,
            recv: RecvBuffer::new(cfg.recv_buf, cfg.ooo_buf, 1 << shift),
            rcv_fin: None,
            fin_received: false,
            last_ack_sent: SeqNumber(0),
            rcv_mss: usize::from(DEFAULT_MSS.min(cfg_mss)),
            quick_acks: 0,
            ack_now: false,
            syn_window,
            ws_ok: false,
            sack_ok: false,
            ts_ok: false,
            ts_recent: 0,
            ts_recent_at: now,
            // RFC 7323 §5.4 suggests a per-connection offset; the ISN is already a keyed
            // hash of the 4-tuple.
            ts_offset: iss.0.rotate_left(16),
            timers: Timers::default(),
            read_paused: true,
            shutdown_reported: false,
            close_reported: false,
            aborted: false,
            stats: TcbStats::default(),
        }
    }

    /// Our MSS (advertised, and the cap of what we send).
    fn cfg_mss(&self) -> u16 {
        self.cfg.mss.max(MIN_MSS)
    }

    /// The guest's MSS option, sanitized: absent or zero means 536 (RFC 9293 §3.7.1).
    fn take_peer_mss(&mut self, mss: Option<u16>) {
        let m = match mss {
            None | Some(0) => DEFAULT_MSS,
            Some(m) => m.max(MIN_MSS),
        };
        self.snd_mss = m.min(self.cfg_mss());
        self.cc
            .reset_initial(u32::from(self.payload_mss_base()), self.snd_una);
    }

    /// Payload of a full segment with only the timestamps option.
    fn payload_mss_base(&self) -> u16 {
        let ts = if self.ts_ok { 12 } else { 0 };
        self.snd_mss.saturating_sub(ts).max(1)
    }

    fn mss32(&self) -> u32 {
        u32::from(self.payload_mss_base())
    }

    /// A guest SYN to `ep.remote` (passive open). `None` unless it is a SYN without
    /// ACK/RST/FIN. Records the guest's ISN, MSS, window scale, SACK-permitted and
    /// timestamps; state `AwaitingHost`: nothing is sent until [`host_connected`].
    ///
    /// [`host_connected`]: Tcb::host_connected
    pub fn accept_syn(
        ep: Endpoints,
        syn: &TcpRepr,
        iss: SeqNumber,
        cfg: &TcpConfig,
        now: Instant,
    ) -> Option<Tcb> {
        if !syn.flags.contains(TcpFlags::SYN)
            || syn
                .flags
                .intersects(TcpFlags::ACK | TcpFlags::RST | TcpFlags::FIN)
        {
            return None;
        }
        let mut t = Tcb::new(ep, iss, cfg, now, State::AwaitingHost);
        t.irs = syn.seq;
        t.rcv_nxt = syn.seq + 1;
        t.rcv_adv = t.rcv_nxt;
        t.last_ack_sent = t.rcv_nxt;
        t.take_options(syn, now);
        // RFC 7323 §2.2: the window field of a SYN is never scaled.
        t.snd_wnd = u32::from(syn.window);
        t.max_snd_wnd = t.snd_wnd;
        t.snd_wl1 = syn.seq;
        Some(t)
    }

    /// Options of the guest's SYN or SYN-ACK.
    fn take_options(&mut self, syn: &TcpRepr, now: Instant) {
        // RFC 7323 §2.3: window scaling only if both sides sent the option; a shift above
        // 14 is used as 14.
        self.ws_ok = syn.window_scale.is_some();
        match syn.window_scale {
            Some(s) => self.snd_shift = s.min(14),
            None => {
                self.snd_shift = 0;
                self.rcv_shift = 0;
            }
        }
        self.sack_ok = syn.sack_permitted;
        if let Some(ts) = syn.timestamps {
            self.ts_ok = true;
            self.ts_recent = ts.tsval;
            self.ts_recent_at = now;
        }
        self.take_peer_mss(syn.mss);
    }

    /// The host connect() succeeded: send SYN-ACK (MSS, and WS, SACK-permitted, TS as the
    /// guest offered), state `SynReceived`.
    pub fn host_connected(&mut self, now: Instant, out: &mut dyn SegmentSink) {
        if self.state != State::AwaitingHost {
            return;
        }
        self.state = State::SynReceived;
        self.snd_nxt = self.iss + 1;
        self.syn_sent_at = now;
        // The shard may read the host socket from now on, while send_room() > 0.
        self.read_paused = false;
        self.send_syn(now, out);
        self.timers.rtx = Some(at(now, self.rtt.rto()));
    }

    /// The host connect() failed: RST+ACK to the guest (connection refused), state `Closed`.
    pub fn host_refused(&mut self, out: &mut dyn SegmentSink) {
        if self.state == State::AwaitingHost || self.state == State::SynReceived {
            let r = TcpRepr {
                src_port: self.ep.remote.port(),
                dst_port: self.ep.guest.port(),
                seq: if self.state == State::SynReceived {
                    self.snd_nxt
                } else {
                    SeqNumber(0)
                },
                ack: self.rcv_nxt,
                flags: TcpFlags::RST | TcpFlags::ACK,
                ..TcpRepr::default()
            };
            self.stats.resets_out += 1;
            self.emit(out, &r);
        }
        self.close_by_host();
    }

    /// Active open into the guest (port forwarding): send SYN, state `SynSent`.
    pub fn connect(
        ep: Endpoints,
        iss: SeqNumber,
        cfg: &TcpConfig,
        now: Instant,
        out: &mut dyn SegmentSink,
    ) -> Tcb {
        let mut t = Tcb::new(ep, iss, cfg, now, State::SynSent);
        t.snd_nxt = iss + 1;
        t.read_paused = false;
        t.send_syn(now, out);
        t.timers.rtx = Some(at(now, t.rtt.rto()));
        t
    }

    /// SYN (SynSent) or SYN-ACK (SynReceived), first transmission or retransmission.
    fn send_syn(&mut self, now: Instant, out: &mut dyn SegmentSink) {
        let passive = self.state == State::SynReceived;
        let mut r = TcpRepr {
            src_port: self.ep.remote.port(),
            dst_port: self.ep.guest.port(),
            seq: self.iss,
            flags: TcpFlags::SYN,
            window: self.syn_window,
            mss: Some(self.cfg_mss()),
            ..TcpRepr::default()
        };
        if passive {
            r.flags |= TcpFlags::ACK;
            r.ack = self.rcv_nxt;
            // Offer back only what the guest offered (RFC 7323 §1.3, RFC 2018 §2).
            r.window_scale = self.ws_ok.then_some(self.rcv_shift);
            r.sack_permitted = self.sack_ok;
            if self.ts_ok {
                r.timestamps = Some(TcpTimestamps {
                    tsval: self.ts_val(now),
                    tsecr: self.ts_recent,
                });
            }
            self.rcv_adv = self.rcv_nxt + u32::from(self.syn_window);
            self.last_ack_sent = self.rcv_nxt;
        } else {
            r.window_scale = Some(self.rcv_shift_offered);
            r.sack_permitted = true;
            r.timestamps = Some(TcpTimestamps {
                tsval: self.ts_val(now),
                tsecr: 0,
            });
        }
        self.emit(out, &r);
    }

    /// Microseconds since the epoch, plus one (RACK's transmission times; 0 is "never").
    fn micros(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn ts_val(&self, now: Instant) -> u32 {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        // The TSval clock wraps modulo 2^32 by design (RFC 7323 §5.4).
        u32::try_from(ms & 0xffff_ffff)
            .unwrap_or(0)
            .wrapping_add(self.ts_offset)
    }

    fn emit(&mut self, out: &mut dyn SegmentSink, r: &TcpRepr) {
        self.stats.segments_out += 1;
        out.emit(r, [&[], &[]]);
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn endpoints(&self) -> Endpoints {
        self.ep
    }

    /// True once the connection can be forgotten: `Closed` (TIME-WAIT over, or reset) and
    /// the host was told (`host_close`), so no guest data is left unwritten.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed && self.close_reported
    }

    pub fn stats(&self) -> TcbStats {
        self.stats
    }

    /// Counters of RACK-TLP loss detection (RFC 8985).
    pub fn loss_stats(&self) -> LossStats {
        self.rack.stats.into()
    }

    /// A new guest SYN for this 4-tuple may replace this connection (RFC 1122 §4.2.2.13:
    /// in TIME-WAIT, when its sequence number is above RCV.NXT), or the connection is over.
    pub fn reusable_by(&self, syn: &TcpRepr) -> bool {
        match self.state {
            State::Closed => true,
            State::TimeWait => {
                syn.flags.contains(TcpFlags::SYN)
                    && !syn.flags.contains(TcpFlags::ACK)
                    && syn.seq > self.rcv_nxt
            }
            _ => false,
        }
    }

    pub fn vars(&self) -> TcbVars {
        TcbVars {
            state: self.state,
            iss: self.iss,
            snd_una: self.snd_una,
            snd_nxt: self.snd_nxt,
            snd_wnd: self.snd_wnd,
            snd_wl1: self.snd_wl1,
            snd_wl2: self.snd_wl2,
            snd_shift: self.snd_shift,
            snd_mss: self.snd_mss,
            irs: self.irs,
            rcv_nxt: self.rcv_nxt,
            rcv_wnd: span(self.rcv_nxt, self.rcv_adv),
            rcv_shift: self.rcv_shift,
            cwnd: self.cc.cwnd,
            ssthresh: self.cc.ssthresh,
            srtt: self.rtt.srtt(),
            rto: self.rtt.rto(),
            in_recovery: self.cc.recovery != Recovery::Open,
            sack_ok: self.sack_ok,
            ts_ok: self.ts_ok,
            ts_recent: self.ts_recent,
            send_buffered: self.send.len(),
            recv_buffered: self.recv.ring.len(),
            ooo_bytes: self.recv.ooo.bytes(),
            sacked_bytes: self.sb.sacked_bytes(),
            min_rtt: self.rack.min_rtt_us().map(Duration::from_micros),
            reordering_seen: self.rack.reordering_seen,
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ---------------------------------------------------------------------------------
    // Guest segments.

    /// One segment from the guest for this connection (already checksum-verified).
    /// RFC 9293 §3.10.7 with RFC 5961 (RST and SYN validation, ACK range), RFC 7323 (PAWS,
    /// TS.Recent) and RFC 2018 (SACK blocks to the scoreboard). Immediate replies (ACKs to
    /// unacceptable segments, challenge ACKs, RSTs) are emitted here; ACKs for data, new
    /// data and retransmissions go out from [`poll_output`](Tcb::poll_output).
    pub fn on_segment(
        &mut self,
        seg: &TcpRepr,
        payload: &[u8],
        now: Instant,
        out: &mut dyn SegmentSink,
    ) -> Effects {
        self.on_segment_direct(seg, payload, now, out, &mut |_| 0)
    }

    /// [`Tcb::on_segment`], with a way around the receive ring: in-order text that finds
    /// the ring empty (nothing older is waiting for the host) is first offered to
    /// `direct`, which writes what it can to the host and returns how much; only the rest
    /// is copied into the ring. The bytes written count as received and consumed at once.
    pub fn on_segment_direct(
        &mut self,
        seg: &TcpRepr,
        payload: &[u8],
        now: Instant,
        out: &mut dyn SegmentSink,
        direct: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Effects {
        self.stats.segments_in += 1;
        let mut eff = Effects::default();
        match self.state {
            State::Closed => {}
            State::AwaitingHost => self.on_segment_awaiting_host(seg),
            State::SynSent => self.on_segment_syn_sent(seg, payload, now, out, &mut eff),
            _ => self.on_segment_synchronized(seg, payload, now, out, direct, &mut eff),
        }
        self.finish(eff)
    }

    /// Nothing was sent to the guest yet: only its RST (it gave up) matters.
    fn on_segment_awaiting_host(&mut self, seg: &TcpRepr) {
        if seg.flags.contains(TcpFlags::RST) && seg.seq == self.rcv_nxt {
            self.stats.resets_in += 1;
            self.abort();
        }
        // A retransmitted SYN is answered once the host connected; anything else cannot be
        // valid yet.
    }

    /// RFC 9293 §3.10.7.3, SYN-SENT.
    fn on_segment_syn_sent(
        &mut self,
        seg: &TcpRepr,
        payload: &[u8],
        now: Instant,
        out: &mut dyn SegmentSink,
        eff: &mut Effects,
    ) {
        let f = seg.flags;
        let has_ack = f.contains(TcpFlags::ACK);
        // First, check the ACK bit: "If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset
        // (unless the RST bit is set, if so drop the segment and return)".
        if has_ack && (seg.ack <= self.iss || seg.ack > self.snd_nxt) {
            if !f.contains(TcpFlags::RST) {
                self.send_rst(seg.ack, None, out);
            }
            return;
        }
        // Second, the RST bit: acceptable only with an acceptable ACK (RFC 5961 §3.2).
        if f.contains(TcpFlags::RST) {
            if has_ack {
                self.stats.resets_in += 1;
                self.abort();
            }
            return;
        }
        // Fourth, the SYN bit.
        if !f.contains(TcpFlags::SYN) {
            return;
        }
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq + 1;
        self.last_ack_sent = self.rcv_nxt;
        self.take_options(seg, now);
        self.rcv_adv = self.rcv_nxt + u32::from(self.syn_window);
        if !has_ack {
            // Simultaneous open: SYN-RECEIVED, SYN-ACK with the options we offered.
            self.state = State::SynReceived;
            self.snd_wnd = u32::from(seg.window);
            self.max_snd_wnd = self.snd_wnd;
            self.snd_wl1 = seg.seq;
            self.send_syn(now, out);
            return;
        }
        // "If SND.UNA > ISS (our SYN has been ACKed), change the connection state to
        // ESTABLISHED, form an ACK segment and send it" (from poll_output, with any data).
        self.snd_una = seg.ack;
        self.snd_wnd = u32::from(seg.window);
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = seg.ack;
        let tsecr = seg.timestamps.map(|ts| ts.tsecr);
        self.established(now, tsecr);
        self.schedule_ack_now(now);
        // Data or FIN in the SYN-ACK: "Continue processing at the sixth step".
        if !payload.is_empty() || f.contains(TcpFlags::FIN) {
            self.process_text(
                seg.seq + 1,
                payload,
                f.contains(TcpFlags::FIN),
                now,
                &mut |_| 0,
                eff,
            );
        }
    }

    /// The handshake completed.
    fn established(&mut self, now: Instant, tsecr: Option<u32>) {
        self.state = State::Established;
        if !self.syn_retransmitted {
            // RFC 8985 §6.2 Step 1: the handshake is the first sample of the minimum RTT.
            let rtt = now.saturating_duration_since(self.syn_sent_at);
            let now_us = self.micros(now);
            self.rack
                .sample_min_rtt(u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX), now_us);
        }
        // RFC 8985 §7.3 condition 2: the connection start counts as an RTT sample.
        self.rack.rtt_sampled = true;
        match tsecr {
            Some(e) if self.ts_ok && e != 0 => self.ts_rtt_sample(now, e),
            _ if !self.syn_retransmitted => self
                .rtt
                .sample(now.saturating_duration_since(self.syn_sent_at)),
            _ => {}
        }
        if self.syn_retransmitted {
            self.rtt.syn_was_retransmitted();
        }
        self.rtt.reset_backoff();
        self.retries = 0;
        self.timers.rtx = None;
        self.cc.reset_initial(self.mss32(), self.snd_una);
        self.quick_acks = QUICK_ACKS;
        self.apply_host_eof();
    }

    /// RFC 9293 §3.10.7.4: SYN-RECEIVED and the synchronized states.
    fn on_segment_synchronized(
        &mut self,
        seg: &TcpRepr,
        payload: &[u8],
        now: Instant,
        out: &mut dyn SegmentSink,
        direct: &mut dyn FnMut(&[u8]) -> usize,
        eff: &mut Effects,
    ) {
        let f = seg.flags;
        let rst = f.contains(TcpFlags::RST);
        let syn = f.contains(TcpFlags::SYN);
        let fin = f.contains(TcpFlags::FIN);

        // The guest retransmitted its SYN: our SYN-ACK was lost. Answer it again (as Linux
        // does; the generic rule below would only send an ACK).
        if self.state == State::SynReceived
            && syn
            && !f.intersects(TcpFlags::ACK | TcpFlags::RST)
            && seg.seq == self.irs
        {
            // Echo this SYN's timestamp (Linux does), so that the guest's RTT sample
            // measures this exchange and not the one that failed.
            if let (true, Some(ts)) = (self.ts_ok, seg.timestamps) {
                self.ts_recent = ts.tsval;
                self.ts_recent_at = now;
            }
            self.stats.retransmits += 1;
            self.send_syn(now, out);
            return;
        }

        // RFC 7323 §5.3 R1 (PAWS): a timestamp older than TS.Recent makes the segment
        // unacceptable; ACK it (unless RST) and drop it.
        if self.ts_ok && !rst {
            if let Some(ts) = seg.timestamps {
                if ts_before(ts.tsval.wrapping_add(PAWS_WINDOW), self.ts_recent)
                    && now.saturating_duration_since(self.ts_recent_at) < PAWS_IDLE
                    && !self.disordered_ack(seg, payload.len(), ts.tsval)
                {
                    self.stats.paws_rejected += 1;
                    self.send_ack(now, out);
                    return;
                }
            }
        }

        // First, check the sequence number (RFC 9293 §3.10.7.4 table), with Linux's bounds
        // (tcp_sequence()): the segment must end at or after Last.ACK.sent and start at or
        // before the right edge.
        //
        // * The left bound is Last.ACK.sent rather than RCV.NXT: a retransmission of the
        //   segment our last (lost) ACK covered is then processed, so that RFC 7323 §4.3
        //   records its TSval (SEG.SEQ =< Last.ACK.sent) and our reply echoes the
        //   retransmission, not the original; otherwise the guest measures an RTT of a
        //   whole (backed-off) RTO and inflates its timer. Its text is old and dropped.
        // * The right edge itself is accepted: a pure ACK from a guest that filled our
        //   window, and with a zero window the segment at RCV.NXT ("special allowance
        //   should be made to accept valid ACKs, URGs, and RSTs"): its ACK is processed,
        //   its text dropped.
        //
        // Entirely old segments, and segments beyond the window, are not acceptable.
        let seg_len = payload.len() + usize::from(syn) + usize::from(fin);
        let wnd = span(self.rcv_nxt, self.rcv_adv);
        let edge = self.rcv_nxt + wnd;
        let seg_end = seq_add(seg.seq, seg_len);
        let acceptable = self.last_ack_sent <= seg_end && seg.seq <= edge;
        if !acceptable {
            self.stats.unacceptable += 1;
            // "If an incoming segment is not acceptable, an acknowledgment should be sent in
            // reply (unless the RST bit is set, if so drop the segment and return)".
            if !rst {
                if self.state == State::TimeWait && fin {
                    // A retransmitted FIN: our ACK was lost. Restart the 2 MSL timeout.
                    self.timers.time_wait = Some(at(now, self.cfg.time_wait));
                }
                self.send_ack(now, out);
            }
            return;
        }

        if seg_len > 0 && seg_end <= self.rcv_nxt {
            // A duplicate (our ACK was lost, or the guest retransmitted early): answer it,
            // whatever the state (a retransmitted FIN in CLOSE-WAIT, LAST-ACK, ...). The
            // guest is recovering from a loss it believes in: acknowledge the next
            // segments at once too, as Linux does (tcp_send_dupack() enters quick-ACK
            // mode), so that a small window is not clocked by our delayed-ACK timer.
            self.schedule_ack_now(now);
            self.quick_acks = self.quick_acks.max(QUICK_ACKS);
        }

        // RFC 7323 §4.3 (2): SEG.TSval >= TS.Recent and SEG.SEQ =< Last.ACK.sent: remember it.
        if self.ts_ok {
            if let Some(ts) = seg.timestamps {
                if !ts_before(ts.tsval, self.ts_recent) && seg.seq <= self.last_ack_sent {
                    self.ts_recent = ts.tsval;
                    self.ts_recent_at = now;
                }
            }
        }

        // Second, the RST bit (RFC 5961 §3.2): reset only on an exact match; in the window
        // but not exact, send a challenge ACK.
        if rst {
            if seg.seq == self.rcv_nxt {
                self.stats.resets_in += 1;
                self.abort();
            } else {
                self.stats.challenge_acks += 1;
                self.send_ack(now, out);
            }
            return;
        }

        // Fourth, the SYN bit (RFC 5961 §4.2): a SYN in a synchronized state gets a
        // challenge ACK, whatever its sequence number.
        if syn {
            self.stats.challenge_acks += 1;
            self.send_ack(now, out);
            return;
        }

        // Fifth, the ACK field. "If the ACK bit is off, drop the segment and return."
        if !f.contains(TcpFlags::ACK) {
            return;
        }
        if self.state == State::SynReceived {
            // "If SND.UNA < SEG.ACK =< SND.NXT, then enter ESTABLISHED state and continue
            // processing with the variables below set to: SND.WND <- SEG.WND,
            // SND.WL1 <- SEG.SEQ, SND.WL2 <- SEG.ACK. If the segment acknowledgment is not
            // acceptable, form a reset segment <SEQ=SEG.ACK><CTL=RST> and send it."
            if self.snd_una < seg.ack && seg.ack <= self.snd_nxt {
                self.snd_una = seg.ack;
                self.snd_wnd = u32::from(seg.window) << self.snd_shift;
                self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
                self.snd_wl1 = seg.seq;
                self.snd_wl2 = seg.ack;
                let tsecr = seg.timestamps.map(|ts| ts.tsecr);
                self.established(now, tsecr);
            } else {
                self.send_rst(seg.ack, None, out);
                return;
            }
        }
        if !self.process_ack(seg, payload.len(), now, out) {
            return;
        }
        if self.state == State::Closed {
            return;
        }

        // Seventh, the segment text; eighth, the FIN bit.
        match self.state {
            State::Established | State::FinWait1 | State::FinWait2
                if !payload.is_empty() || fin =>
            {
                self.process_text(seg.seq, payload, fin, now, direct, eff);
            }
            // The guest's FIN was already received: text is ignored. A FIN in TIME-WAIT is
            // acknowledged and restarts the timeout.
            State::TimeWait if fin => {
                self.timers.time_wait = Some(at(now, self.cfg.time_wait));
                self.schedule_ack_now(now);
            }
            _ => {}
        }
    }

    /// RFC 9293 §3.10.7.4 fifth step for ESTABLISHED and later states, with RFC 5961 §5.2,
    /// RFC 5681 duplicate ACKs, RFC 6675 scoreboard and recovery, RFC 6298 timer rules.
    /// Returns false when the segment was answered and must be dropped.
    fn process_ack(
        &mut self,
        seg: &TcpRepr,
        payload_len: usize,
        now: Instant,
        out: &mut dyn SegmentSink,
    ) -> bool {
        let ack = seg.ack;
        // "If the ACK acknowledges something not yet sent (SEG.ACK > SND.NXT), then send an
        // ACK, drop the segment, and return."
        if ack > self.snd_nxt {
            self.send_ack(now, out);
            return false;
        }
        // RFC 5961 §5.2: acceptable only within [SND.UNA - MAX.SND.WND, SND.NXT].
        if ack < self.snd_una - self.max_snd_wnd.max(1) {
            self.stats.challenge_acks += 1;
            self.send_ack(now, out);
            return false;
        }
        // The guest is alive.
        self.retries = 0;

        let mss = self.mss32();
        let now_us = self.micros(now);
        let ctx = AckCtx {
            now: now_us,
            tsecr: seg
                .timestamps
                .filter(|_| self.ts_ok)
                .map(|ts| ts.tsecr)
                .filter(|&e| e != 0),
            ts_offset: self.ts_offset,
        };
        self.rack.begin_ack();
        let sacked_before = self.sb.sacked_bytes();
        if ack > self.snd_una {
            // RACK sees what the ACK delivers in sequence order: the cumulative part first
            // (RFC 8985 §6.2 Step 3 compares each segment with the highest delivered).
            self.rack.on_cum_ack(ack, &ctx);
        }

        // RFC 2018 / RFC 6675 Update(): SACK blocks to the scoreboard, clipped to what is
        // outstanding; blocks beyond SND.NXT are ignored. Only the parts not SACKed before
        // are inserted and shown to RACK, so that an ACK costs what it newly reports.
        let mut sack_new = false;
        // RFC 2883 §4: a D-SACK is the first block, below the cumulative ACK or inside the
        // second block. It reports a duplicate: no new SACK information.
        let mut dsack = None;
        if self.sack_ok {
            let blocks = seg.sack_blocks.as_slice();
            if let Some(b0) = blocks.first() {
                if b0.left < b0.right
                    && (b0.right <= ack
                        || blocks
                            .get(1)
                            .is_some_and(|b1| b1.left <= b0.left && b0.right <= b1.right))
                {
                    dsack = Some(*b0);
                    self.rack.stats.dsacks += 1;
                }
            }
            for (k, b) in blocks.iter().enumerate() {
                if b.left >= b.right || (k == 0 && dsack.is_some()) {
                    continue;
                }
                let l = b.left.max(ack).max(self.snd_una);
                let r = b.right.min(self.snd_nxt);
                let mut from = l;
                while let Some((hl, hr)) = self.sb.next_hole(from, r) {
                    if self.sb.insert(hl, hr) {
                        sack_new = true;
                        self.rack.on_sacked(hl, hr, &self.sb, &ctx);
                    }
                    from = hr;
                }
            }
        }

        let seg_wnd = u32::from(seg.window) << self.snd_shift;
        let prior_una = self.snd_una;
        let mut acked = 0;
        let mut exiting_recovery = false;
        let mut reneged = false;
        if ack > self.snd_una {
            // "If SND.UNA < SEG.ACK =< SND.NXT, then set SND.UNA <- SEG.ACK."
            acked = span(self.snd_una, ack);
            let data_acked = span_usize(self.snd_buf_seq, ack).min(self.send.len());
            self.send.consume(data_acked);
            self.send.rewind_if_empty();
            self.snd_buf_seq = seq_add(self.snd_buf_seq, data_acked);
            if self.fin_sent && ack == self.snd_nxt {
                self.fin_acked = true;
            }
            self.snd_una = ack;
            if self.sb.first_left() == Some(ack) {
                // RFC 2018 §8: the guest acknowledged up to data it had SACKed but not
                // through it, so it discarded ("reneged") that data. Forget the SACK
                // information; those segments are lost and resent (Linux does the same).
                self.sb.clear();
                self.rack.reneged();
                self.stats.sack_reneging += 1;
                reneged = true;
            }
            self.sb.prune(ack);

            // RTT: RFC 7323 §4.1 from TSecr, else Karn's rule with the timed segment.
            match seg.timestamps {
                Some(ts) if self.ts_ok && ts.tsecr != 0 => self.ts_rtt_sample(now, ts.tsecr),
                _ => {
                    if let Some((s, t)) = self.rtt_probe {
                        if ack >= s {
                            self.rtt.sample(now.saturating_duration_since(t));
                            self.rtt_probe = None;
                        }
                    }
                }
            }
            self.rtt.reset_backoff();
            self.cc.dupacks = 0;

            // RFC 3522 Eifel detection: the first ACK for the retransmitted data echoes a
            // timestamp older than the retransmission's, so the original arrived.
            if let Some(u) = self.cc.undo.as_mut() {
                if let (Some(rtx), Some(ts), false) = (u.tsval, seg.timestamps, u.eifel_done) {
                    if self.cc.recovery != Recovery::Open && ts_before(ts.tsecr, rtx) {
                        self.undo_spurious();
                    } else {
                        u.eifel_done = true;
                    }
                }
            }
            if let Some(u) = self.cc.undo {
                if u.until.is_some_and(|e| ack >= e) && self.cc.recovery == Recovery::Open {
                    // A round trip after the episode: its D-SACKs have come.
                    self.cc.undo = None;
                }
            }

            match self.cc.recovery {
                Recovery::Open => self.cc.on_ack(acked, mss),
                _ if ack >= self.cc.recover => {
                    self.cc.exit(self.snd_nxt, mss);
                    self.rto_tsval = None;
                    exiting_recovery = true;
                }
                Recovery::Loss => self.cc.on_ack(acked, mss),
                Recovery::Fast => {
                    if !self.sack_ok {
                        // A partial ACK (RFC 6582 §3.2 (5)): the segment now at SND.UNA was
                        // sent before the one just repaired and is still missing: lost
                        // too, and retransmitted at once. (With SACK, RACK finds it.)
                        self.rack.mark_head_lost(&self.sb);
                        self.cc.rtx_first = true;
                    }
                }
            }

            // RFC 6298 §5.2/5.3: stop the timer when all is acknowledged, else restart it.
            // RFC 8985 §7.2: an ACK of new data (re)schedules the loss probe instead, when
            // one may be sent.
            self.rtx_probe = false;
            self.timers.rtx = if self.snd_una == self.snd_nxt {
                None
            } else {
                Some(at(now, self.rtt.rto()))
            };
        } else if ack == self.snd_una
            && self.snd_nxt > self.snd_una
            && payload_len == 0
            && !seg.flags.intersects(TcpFlags::SYN | TcpFlags::FIN)
            && (seg_wnd == self.snd_wnd || sack_new)
        {
            // RFC 5681 §2 duplicate ACK (RFC 6675: or one carrying new SACK information).
            self.cc.dupacks += 1;
            self.stats.dup_acks += 1;
        }
        self.rack.end_ack();

        // Window update: "If SND.UNA =< SEG.ACK =< SND.NXT ... If (SND.WL1 < SEG.SEQ or
        // (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK)), set SND.WND <- SEG.WND, set
        // SND.WL1 <- SEG.SEQ, and set SND.WL2 <- SEG.ACK."
        if ack >= self.snd_una
            && (self.snd_wl1 < seg.seq || (self.snd_wl1 == seg.seq && self.snd_wl2 <= ack))
        {
            self.snd_wnd = seg_wnd;
            self.max_snd_wnd = self.max_snd_wnd.max(seg_wnd);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = ack;
        }
        if self.probing && self.snd_wnd > 0 {
            // The window reopened. What we sent into the closed window (probes) was
            // dropped by the guest unless acknowledged: resend it at once.
            self.probing = false;
            self.rtt.reset_backoff();
            if self.snd_nxt > self.snd_una {
                self.rack.mark_all_lost(&self.sb);
                self.cc.enter_loss(self.snd_nxt);
            }
        }

        // RFC 8985 §7.4: what the ACK says about an outstanding loss probe.
        let tlp_dsack = self.tlp_dsack(dsack);
        self.tlp_process_ack(ack, prior_una, dsack, sack_new, payload_len, mss);

        // A D-SACK within what was retransmitted since cwnd was reduced reports one of
        // those retransmissions as a duplicate; once all of them are, the reduction is
        // undone (Linux's tcp_try_undo_dsack(); RFC 4015 response).
        if let (Some(d), Some(u)) = (dsack, self.cc.undo.as_mut()) {
            if !tlp_dsack {
                u.dsack(d.left, d.right, mss);
                if u.all_dsacked() {
                    self.undo_spurious();
                }
            }
        }

        // Loss detection. With SACK: RACK (RFC 8985 §6.2 Steps 4-5) on every ACK that
        // delivered a segment sent later than the last one known delivered; entering fast
        // recovery on the first loss (not again before RecoveryPoint is passed). Without
        // SACK: NewReno, three duplicate ACKs (RFC 5681 §3.2).
        let mut entered = false;
        if self.sack_ok {
            // A D-SACK may mean the window was too small for the reordering seen; not
            // the loss probe's, which says nothing about reordering (Linux).
            let reo_dsack = dsack.is_some() && self.rack.reordering_seen && !tlp_dsack;
            self.rack
                .update_reo_wnd(reo_dsack, self.snd_una, self.snd_nxt, exiting_recovery);
            let marked = if self.rack.advanced() {
                self.rack_detect(now)
            } else {
                0
            };
            if (marked > 0 || reneged) && self.cc.recovery == Recovery::Open {
                self.enter_fast_recovery(now);
                entered = true;
            }
        } else if self.cc.recovery == Recovery::Open
            && self.snd_nxt > self.snd_una
            && self.snd_una >= self.cc.recover
            && self.cc.dupacks >= DUP_THRESH
        {
            self.rack.mark_head_lost(&self.sb);
            self.enter_fast_recovery(now);
            entered = true;
        }

        // RFC 6937 PRR: in fast recovery every ACK sets how much may be sent.
        if self.cc.recovery == Recovery::Fast {
            let sacked_now = self.sb.sacked_bytes();
            let mut delivered = acked
                .saturating_add(sacked_now)
                .saturating_sub(sacked_before);
            if !self.sack_ok && ack == prior_una && self.cc.dupacks > 0 && !entered {
                // Without SACK a duplicate ACK stands for one segment delivered.
                delivered = delivered.saturating_add(mss);
            }
            if delivered > 0 || entered {
                let pipe = self.pipe();
                self.cc.prr_ack(delivered, pipe, mss);
            }
        }
        self.arm_loss_probe(now);

        if self.fin_acked {
            match self.state {
                // "In addition to the processing for the ESTABLISHED state, if the FIN
                // segment is now acknowledged, then enter FIN-WAIT-2".
                State::FinWait1 => self.state = State::FinWait2,
                // "if the ACK acknowledges our FIN, then enter the TIME-WAIT state".
                State::Closing => self.enter_time_wait(now),
                // "If our FIN is now acknowledged, delete the TCB, enter the CLOSED state".
                State::LastAck => {
                    self.state = State::Closed;
                    self.timers.clear();
                    self.send.release();
                    self.rack.release();
                }
                _ => {}
            }
        }
        true
    }

    /// Linux's exemption from PAWS (tcp_disordered_ack()): a pure duplicate ACK that
    /// changes nothing but was overtaken by a later segment carries SACK information and
    /// is harmless; dropping it would only slow loss recovery.
    fn disordered_ack(&self, seg: &TcpRepr, payload_len: usize, tsval: u32) -> bool {
        let seg_wnd = u32::from(seg.window) << self.snd_shift;
        let may_update_window = seg.ack > self.snd_una
            || seg.seq > self.snd_wl1
            || (seg.seq == self.snd_wl1 && seg_wnd > self.snd_wnd);
        let rto_ms = u32::try_from(self.rtt.rto().as_millis()).unwrap_or(u32::MAX);
        seg.flags.contains(TcpFlags::ACK)
            && !seg.flags.intersects(TcpFlags::SYN | TcpFlags::FIN)
            && payload_len == 0
            && seg.seq == self.rcv_nxt
            && seg.ack == self.snd_una
            && !may_update_window
            && self.ts_recent.wrapping_sub(tsval) <= rto_ms
    }

    fn ts_rtt_sample(&mut self, now: Instant, tsecr: u32) {
        if let Some(floor) = self.rto_tsval {
            if ts_before(tsecr, floor) {
                return;
            }
        }
        let d = self.ts_val(now).wrapping_sub(tsecr);
        // A TSecr from the future or older than any plausible RTT is ignored.
        if d < (1 << 31) && u64::from(d) <= 2 * 3600 * 1000 {
            self.rtt.sample(Duration::from_millis(u64::from(d)));
        }
    }

    /// RFC 9293 §3.10.7.4 seventh and eighth steps: the text and the FIN. `seq` is the
    /// sequence number of the first payload byte.
    fn process_text(
        &mut self,
        seq: SeqNumber,
        payload: &[u8],
        fin: bool,
        now: Instant,
        direct: &mut dyn FnMut(&[u8]) -> usize,
        eff: &mut Effects,
    ) {
        let fin_seq = seq_add(seq, payload.len());
        let mut start = seq;
        let mut data = payload;
        // Bytes before RCV.NXT were already received.
        if start < self.rcv_nxt {
            let skip = span_usize(start, self.rcv_nxt).min(data.len());
            data = data.get(skip..).unwrap_or_default();
            start = self.rcv_nxt;
        }
        // RFC 9293 §3.10.7.4: "segments with higher beginning sequence numbers ... should
        // be held for later processing"; what lies beyond the window is trimmed, and with it
        // the FIN. Nothing beyond a FIN already seen is data.
        let mut fin = fin;
        let mut limit = span_usize(start, self.rcv_adv);
        if let Some(f) = self.rcv_fin {
            limit = limit.min(span_usize(start, f));
        }
        if data.len() > limit {
            data = data.get(..limit).unwrap_or_default();
            fin = false;
            self.schedule_ack_now(now);
        }
        // A FIN counts only if it is not below data already held (a conforming guest never
        // sends one there; ignoring it keeps the stream consistent).
        if fin
            && self.rcv_fin.is_none()
            && fin_seq >= seq_add(self.rcv_nxt, self.recv.ooo.extent(self.rcv_nxt))
        {
            self.rcv_fin = Some(fin_seq);
        }

        let mut written = 0;
        if !data.is_empty() {
            self.rcv_mss = self
                .rcv_mss
                .max(payload.len().min(usize::from(self.cfg_mss())));
            if start == self.rcv_nxt && self.recv.ring.is_empty() && self.recv.ooo.is_empty() {
                written = direct(data).min(data.len());
                self.rcv_nxt = seq_add(self.rcv_nxt, written);
                self.stats.bytes_in += u64::try_from(written).unwrap_or(0);
                data = data.get(written..).unwrap_or_default();
                start = self.rcv_nxt;
                if written > 0 && data.is_empty() {
                    self.data_ack_policy(now);
                }
            }
        }
        if !data.is_empty() {
            match self.recv.place(&mut self.rcv_nxt, start, data) {
                Placed::InOrder(n) => {
                    self.stats.bytes_in += u64::try_from(n).unwrap_or(0);
                    eff.host_write = true;
                    if n > data.len() || !self.recv.ooo.is_empty() {
                        // Filled (part of) a gap: ACK at once (RFC 5681 §4.2).
                        self.schedule_ack_now(now);
                    } else {
                        self.data_ack_policy(now);
                    }
                }
                Placed::OutOfOrder => {
                    // RFC 5681 §4.2: an out-of-order segment gets an immediate (duplicate)
                    // ACK, with SACK blocks.
                    self.stats.ooo_segments += 1;
                    self.schedule_ack_now(now);
                }
                Placed::Duplicate => self.schedule_ack_now(now),
                Placed::Dropped => {
                    self.stats.ooo_dropped += 1;
                    self.schedule_ack_now(now);
                }
            }
        } else if !payload.is_empty() && written == 0 {
            // Everything was old or beyond the window.
            self.schedule_ack_now(now);
        }

        if self.rcv_fin == Some(self.rcv_nxt) && !self.fin_received {
            self.fin_received = true;
            self.rcv_nxt = self.rcv_nxt + 1;
            self.rcv_adv = self.rcv_adv.max(self.rcv_nxt);
            self.schedule_ack_now(now);
            match self.state {
                State::SynReceived | State::Established => self.state = State::CloseWait,
                State::FinWait1 if self.fin_acked => self.enter_time_wait(now),
                State::FinWait1 => self.state = State::Closing,
                State::FinWait2 => self.enter_time_wait(now),
                _ => {}
            }
        }
    }

    /// When to acknowledge in-order data: RFC 9293 §3.8.6.3 / RFC 5681 §4.2, at least every
    /// second full-sized segment, otherwise within `delayed_ack`.
    fn data_ack_policy(&mut self, now: Instant) {
        let unacked = span_usize(self.last_ack_sent, self.rcv_nxt);
        if self.quick_acks > 0 {
            self.quick_acks -= 1;
            self.schedule_ack_now(now);
        } else if unacked >= 2 * self.rcv_mss || self.cfg.delayed_ack.is_zero() {
            self.schedule_ack_now(now);
        } else if self.timers.ack.is_none() {
            self.timers.ack = Some(at(now, self.cfg.delayed_ack));
        }
    }

    /// An ACK is owed now: `poll_output` sends it (or `on_timer`, as a fallback).
    fn schedule_ack_now(&mut self, now: Instant) {
        self.ack_now = true;
        self.timers.ack = Some(self.timers.ack.map_or(now, |t| t.min(now)));
    }

    fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        self.timers.rtx = None;
        self.timers.time_wait = Some(at(now, self.cfg.time_wait));
        self.send.release();
        self.rack.release();
    }

    /// The connection is reset (either way, or retries exhausted).
    fn abort(&mut self) {
        self.state = State::Closed;
        self.aborted = true;
        self.timers.clear();
        self.send.release();
        self.rack.release();
        self.recv.ring.release();
        self.recv.ooo.clear();
    }

    /// The shard ended it (`host_reset`, `host_refused`): it needs no `host_close`.
    fn close_by_host(&mut self) {
        self.abort();
        self.close_reported = true;
    }

    /// Flags that depend on the state after an input.
    fn finish(&mut self, mut eff: Effects) -> Effects {
        if self.fin_received
            && !self.aborted
            && !self.shutdown_reported
            && self.recv.ring.is_empty()
        {
            self.shutdown_reported = true;
            eff.host_shutdown = true;
        }
        if !self.close_reported
            && (self.aborted
                || (matches!(self.state, State::TimeWait | State::Closed)
                    && self.shutdown_reported))
        {
            self.close_reported = true;
            eff.host_close = true;
            self.recv.ring.release();
            self.recv.ooo.clear();
        }
        if self.read_paused && self.send_room() > 0 {
            self.read_paused = false;
            eff.want_host_read = true;
        }
        eff
    }

    // ---------------------------------------------------------------------------------
    // Output.

    /// The window field for an outgoing segment; moves the advertised right edge.
    fn window_field(&mut self) -> u16 {
        let w = self.window_bytes();
        let edge = seq_add(self.rcv_nxt, w);
        if edge > self.rcv_adv {
            self.rcv_adv = edge;
        }
        u16::try_from(w >> self.rcv_shift).unwrap_or(u16::MAX)
    }

    fn window_bytes(&self) -> usize {
        select_window(WindowInputs {
            free: self.recv.free(),
            hard: self.recv.hard_free(1 << self.rcv_shift_offered),
            current: span_usize(self.rcv_nxt, self.rcv_adv),
            shift: self.rcv_shift,
            sws: self.sws_threshold(),
        })
    }

    /// RFC 1122 §4.2.3.3: min(RCV.BUFF / 2, Eff.snd.MSS).
    fn sws_threshold(&self) -> usize {
        (self.cfg.recv_buf / 2).min(self.rcv_mss).max(1)
    }

    /// The window grew enough to be worth announcing on its own: by at least the SWS
    /// threshold, and either it was (nearly) closed or it doubled.
    fn window_update_due(&self) -> bool {
        if !matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        ) {
            return false;
        }
        let cur = span_usize(self.rcv_nxt, self.rcv_adv);
        let new = self.window_bytes();
        new >= cur.saturating_add(self.sws_threshold())
            && (cur < 2 * self.rcv_mss || new >= 2 * cur)
    }

    /// A segment from us with the current ACK, window, timestamps and SACK blocks.
    fn header(&mut self, now: Instant, seq: SeqNumber, flags: TcpFlags) -> TcpRepr {
        let mut r = TcpRepr {
            src_port: self.ep.remote.port(),
            dst_port: self.ep.guest.port(),
            seq,
            flags: flags | TcpFlags::ACK,
            ack: self.rcv_nxt,
            window: self.window_field(),
            ..TcpRepr::default()
        };
        self.last_ack_sent = self.rcv_nxt;
        self.ack_now = false;
        self.timers.ack = None;
        if self.ts_ok {
            r.timestamps = Some(TcpTimestamps {
                tsval: self.ts_val(now),
                tsecr: self.ts_recent,
            });
        }
        if self.sack_ok && !self.recv.ooo.is_empty() {
            r.sack_blocks = self.recv.ooo.sack_blocks();
        }
        r
    }

    /// A bare ACK: `<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>`.
    fn send_ack(&mut self, now: Instant, out: &mut dyn SegmentSink) {
        if matches!(
            self.state,
            State::AwaitingHost | State::SynSent | State::Closed
        ) {
            return;
        }
        let r = self.header(now, self.snd_nxt, TcpFlags::empty());
        self.emit(out, &r);
    }

    fn send_rst(&mut self, seq: SeqNumber, ack: Option<SeqNumber>, out: &mut dyn SegmentSink) {
        let r = TcpRepr {
            src_port: self.ep.remote.port(),
            dst_port: self.ep.guest.port(),
            seq,
            ack: ack.unwrap_or_default(),
            flags: if ack.is_some() {
                TcpFlags::RST | TcpFlags::ACK
            } else {
                TcpFlags::RST
            },
            ..TcpRepr::default()
        };
        self.stats.resets_out += 1;
        self.emit(out, &r);
    }

    /// Option bytes the next data segment will carry (timestamps, SACK blocks), as
    /// `TcpRepr::header_len` will count them.
    fn option_len(&self) -> usize {
        let mut n = if self.ts_ok { TS_OPTION_LEN } else { 0 };
        if self.sack_ok && !self.recv.ooo.is_empty() {
            let fit = (40 - n - 4) / 8;
            n += 4 + 8 * self.recv.ooo.sack_block_count().min(fit);
        }
        n
    }

    fn data_end(&self) -> SeqNumber {
        seq_add(self.snd_buf_seq, self.send.len())
    }

    /// RFC 6675 §4 pipe: outstanding bytes, less SACKed ones and those presumed lost and
    /// not yet retransmitted (RACK's marks, or the NewReno head).
    fn pipe(&self) -> u32 {
        let outstanding = span(self.snd_una, self.snd_nxt);
        let mut p = outstanding
            .saturating_sub(self.sb.sacked_bytes())
            .saturating_sub(self.rack.lost_bytes());
        if !self.sack_ok && self.cc.recovery != Recovery::Open {
            // Without SACK each duplicate ACK says a segment left the network (RFC 5681
            // §3.2 step 4 inflates cwnd for the same reason).
            p = p.saturating_sub(self.cc.dupacks.saturating_mul(self.mss32()));
        }
        p
    }

    fn srtt_us(&self) -> Option<u64> {
        self.rtt
            .srtt()
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    /// RFC 8985 §6.2 Step 4: the reordering window now.
    fn reo_wnd_us(&self) -> u64 {
        self.rack
            .reo_wnd(self.cc.recovery != Recovery::Open, self.srtt_us())
    }

    /// RFC 8985 §6.2 Step 5, RACK_detect_loss_and_arm_timer(): marks what is lost and arms
    /// the reordering timer for what may still be. Returns the number marked.
    fn rack_detect(&mut self, now: Instant) -> u32 {
        let reo = self.reo_wnd_us();
        let now_us = self.micros(now);
        let (marked, wait) = self.rack.detect_loss(now_us, reo, &self.sb);
        self.timers.reo = wait.map(|us| at(now, Duration::from_micros(us)));
        marked
    }

    /// A loss was detected outside recovery: RFC 6675 §5 (4) / RFC 6937 fast recovery.
    fn enter_fast_recovery(&mut self, now: Instant) {
        let mss = self.mss32();
        self.cc.enter_fast(self.snd_una, self.snd_nxt, mss);
        self.stats.fast_retransmits += 1;
        self.rtt_probe = None;
        // RFC 8985 §7.2: no loss probe during recovery; the RTO is the last resort.
        self.rack.tlp_end = None;
        self.rtx_probe = false;
        self.timers.rtx = Some(at(now, self.rtt.rto()));
    }

    /// The cwnd reduction was spurious (the originals arrived): restore it; what is still
    /// marked lost was only late (the path reorders, which RACK now allows for).
    fn undo_spurious(&mut self) {
        self.cc.undo();
        self.rack.undo();
        self.rto_tsval = None;
        self.stats.spurious_retransmits += 1;
    }

    /// The D-SACK reports the loss probe's retransmission as a duplicate.
    fn tlp_dsack(&self, dsack: Option<SackBlock>) -> bool {
        match (dsack, self.rack.tlp_end) {
            (Some(d), Some(end)) => self.rack.tlp_is_retrans && d.left < end && d.right >= end,
            _ => false,
        }
    }

    /// RFC 8985 §7.4 (as Linux's tcp_process_tlp_ack()): the episode of a loss probe ends
    /// when the ACK covers it: with no loss if it was new data, if a D-SACK shows the
    /// probe was a duplicate or a pure duplicate ACK comes; with one loss repaired (and one
    /// cwnd reduction) if the ACK goes beyond it without such evidence.
    fn tlp_process_ack(
        &mut self,
        ack: SeqNumber,
        prior_una: SeqNumber,
        dsack: Option<SackBlock>,
        sack_new: bool,
        payload_len: usize,
        mss: u32,
    ) {
        let Some(end) = self.rack.tlp_end else {
            return;
        };
        if ack < end {
            return;
        }
        if !self.rack.tlp_is_retrans || self.tlp_dsack(dsack) {
            self.rack.tlp_end = None;
        } else if ack > end {
            self.rack.tlp_end = None;
            if self.cc.recovery == Recovery::Open {
                self.cc.tlp_reduction(mss);
            }
            self.rack.stats.tlp_recoveries += 1;
        } else if ack == prior_una && !sack_new && payload_len == 0 {
            self.rack.tlp_end = None;
        }
    }

    /// RFC 8985 §7.2: a probe may be scheduled with SACK, nothing SACKed, no recovery,
    /// data in flight (and, here, an open window: a closed one has its persist timer).
    fn tlp_allowed(&self) -> bool {
        self.sack_ok
            && self.sb.is_empty()
            && self.cc.recovery == Recovery::Open
            && self.snd_nxt > self.snd_una
            && self.snd_wnd > 0
            && !self.probing
            && matches!(
                self.state,
                State::Established
                    | State::CloseWait
                    | State::FinWait1
                    | State::Closing
                    | State::LastAck
            )
    }

    /// RFC 8985 §7.2 after new data went out or an ACK: the retransmission timer becomes a
    /// probe timeout, PTO = max(2 * SRTT, PTO_MIN) (+ WCDelAckT with one segment in
    /// flight), never later than the RTO of the oldest transmission in flight. If no probe
    /// may be scheduled, a pending probe timeout becomes the RTO.
    fn arm_loss_probe(&mut self, now: Instant) {
        if !self.tlp_allowed() {
            if self.rtx_probe {
                self.rtx_probe = false;
                self.timers.rtx = (self.snd_nxt != self.snd_una).then(|| at(now, self.rtt.rto()));
            }
            return;
        }
        let mut pto = match self.rtt.srtt() {
            Some(srtt) => (2 * srtt).max(PTO_MIN),
            None => Duration::from_secs(1),
        };
        if span(self.snd_una, self.snd_nxt) <= self.mss32() {
            pto += GUEST_DELACK_MAX;
        }
        let mut deadline = at(now, pto);
        if let Some(t) = self.rack.oldest_in_flight() {
            let sent = at(self.epoch, Duration::from_micros(t.saturating_sub(1)));
            deadline = deadline.min(at(sent, self.rtt.rto())).max(now);
        }
        self.timers.rtx = Some(deadline);
        self.rtx_probe = true;
    }

    /// The lowest segment presumed lost and not yet retransmitted.
    fn next_retransmit(&mut self) -> Option<(SeqNumber, SeqNumber)> {
        self.rack.next_lost()
    }

    /// Sends the unSACKed parts of `[s, e)` again (the FIN too if `e` passes the data),
    /// segment by segment. Returns the sequence space sent.
    fn resend_range(
        &mut self,
        now: Instant,
        s: SeqNumber,
        e: SeqNumber,
        out: &mut dyn SegmentSink,
    ) -> u32 {
        let mut from = s.max(self.snd_una);
        let mut total = 0u32;
        while let Some((hs, he)) = self.sb.next_hole(from, e) {
            let data_end = self.data_end();
            let max_payload = usize::from(self.snd_mss)
                .saturating_sub(self.option_len())
                .max(1);
            let len = span_usize(hs, he.min(data_end)).min(max_payload);
            let with_fin = self.fin_sent && he > data_end && seq_add(hs, len) == data_end;
            if len == 0 && !with_fin {
                break;
            }
            let (n, fin) = self.send_data(now, hs, len, with_fin, out);
            let used = n + u32::from(fin);
            if used == 0 {
                break;
            }
            total = total.saturating_add(used);
            self.stats.retransmits += 1;
            self.stats.retransmitted_bytes += u64::from(n);
            from = hs + used;
        }
        total
    }

    /// New data (or the FIN) `[SND.NXT, SND.NXT + len)` went out: bookkeeping.
    fn sent_new(&mut self, now: Instant, seq: SeqNumber, n: u32, fin: bool) {
        let used = n + u32::from(fin);
        if self.rtt_probe.is_none() && !self.ts_ok {
            self.rtt_probe = Some((seq + used, now));
        }
        self.stats.bytes_out += u64::from(n);
        self.fin_sent |= fin;
        self.snd_nxt = seq + used;
        let t = self.micros(now);
        // The FIN gets a record of its own: SACK blocks never cover it, so a record of
        // data and FIN could never be found delivered by a SACK.
        self.rack.sent_new(seq, seq + n, t);
        if fin {
            self.rack.sent_new(seq + n, seq + used, t);
        }
        self.cc.on_sent(used);
    }

    /// Emits `[seq, seq + len)` of the send ring (trimmed so that the segment with its
    /// options fits the MSS), with FIN when `fin_allowed` and the data reaches the end.
    /// Returns the data bytes sent and whether the FIN went with them.
    fn send_data(
        &mut self,
        now: Instant,
        seq: SeqNumber,
        len: usize,
        fin_allowed: bool,
        out: &mut dyn SegmentSink,
    ) -> (u32, bool) {
        let data_end = self.data_end();
        let mut r = self.header(now, seq, TcpFlags::empty());
        let room = usize::from(self.snd_mss)
            .saturating_sub(r.header_len() - HEADER_LEN)
            .max(1);
        let len = len.min(room).min(span_usize(seq, data_end));
        let end = seq_add(seq, len);
        if end == data_end {
            if len > 0 {
                r.flags |= TcpFlags::PSH;
            }
            if fin_allowed {
                r.flags |= TcpFlags::FIN;
            }
        }
        let off = span_usize(self.snd_buf_seq, seq);
        self.stats.segments_out += 1;
        out.emit(&r, self.send.slices(off, len));
        if self.timers.rtx.is_none() {
            // RFC 6298 §5.1: start the timer when sending data if it is not running.
            self.timers.rtx = Some(at(now, self.rtt.rto()));
        }
        (
            u32::try_from(len).unwrap_or(0),
            r.flags.contains(TcpFlags::FIN),
        )
    }

    /// Sends what is due: lost holes (RFC 6675), then new data within the send window and
    /// cwnd, then the FIN. Returns whether anything was sent.
    fn transmit(&mut self, now: Instant, out: &mut dyn SegmentSink) -> bool {
        if !matches!(
            self.state,
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::Closing
                | State::LastAck
        ) {
            return false;
        }
        let max_payload = usize::from(self.snd_mss)
            .saturating_sub(self.option_len())
            .max(1);
        let mut sent = false;
        let mut sent_new = false;
        loop {
            // RFC 6675 NextSeg() (1), with RACK's marks: the lowest segment presumed lost,
            // within cwnd (the first of an episode regardless).
            if let Some((s, e)) = self.next_retransmit() {
                let need = self.sb.unsacked_between(s, e).max(1);
                if !self.cc.rtx_first && self.cc.cwnd.saturating_sub(self.pipe()) < need {
                    break;
                }
                let n = self.resend_range(now, s, e, out);
                let t = self.micros(now);
                self.rack.retransmitted(s, t);
                let tsval = self.ts_ok.then(|| self.ts_val(now));
                if let Some(u) = self.cc.undo.as_mut() {
                    if let Some(tsval) = tsval {
                        u.tsval.get_or_insert(tsval);
                    }
                    u.retransmitted(s, e);
                }
                self.cc.rtx_first = false;
                self.cc.on_sent(n);
                self.rtt_probe = None;
                sent = true;
                continue;
            }
            if self.rack.is_full() {
                break;
            }
            let data_end = self.data_end();
            let unsent = span_usize(self.snd_nxt, data_end);
            if unsent > 0 {
                let wnd_room = span_usize(self.snd_nxt, self.snd_una + self.snd_wnd);
                let cwnd_room =
                    usize::try_from(self.cc.cwnd.saturating_sub(self.pipe())).unwrap_or(0);
                let len = unsent.min(wnd_room).min(cwnd_room).min(max_payload);
                if len == 0 {
                    break;
                }
                if len < max_payload && len < unsent {
                    // RFC 9293 §3.8.6.2.1 sender SWS avoidance: a partial segment only when
                    // it is at least half the largest window the guest offered, or nothing
                    // is in flight (then no ACK would come to open more).
                    let idle = self.snd_nxt == self.snd_una;
                    let max_wnd = usize::try_from(self.max_snd_wnd).unwrap_or(usize::MAX);
                    if !idle && len < max_wnd / 2 {
                        break;
                    }
                }
                let fin = self.fin_queued && seq_add(self.snd_nxt, len) == data_end;
                let seq = self.snd_nxt;
                let (n, fin) = self.send_data(now, seq, len, fin, out);
                if n == 0 {
                    break;
                }
                self.sent_new(now, seq, n, fin);
                sent = true;
                sent_new = true;
                continue;
            }
            if self.fin_queued && !self.fin_sent && self.snd_nxt == data_end {
                // The FIN needs no window (receivers accept a bare FIN at a zero window).
                let seq = self.snd_nxt;
                self.send_data(now, seq, 0, true, out);
                self.sent_new(now, seq, 0, true);
                sent = true;
                sent_new = true;
            }
            break;
        }
        if sent_new {
            // RFC 8985 §7.2: after new data, the loss probe timeout (when allowed).
            self.arm_loss_probe(now);
        }
        // The persist timer (RFC 9293 §3.8.6.1): data waits behind a zero window and nothing
        // is outstanding, so no ACK will come to announce the window opening.
        if self.snd_wnd == 0
            && self.snd_nxt == self.snd_una
            && span_usize(self.snd_nxt, self.data_end()) > 0
            && self.timers.rtx.is_none()
        {
            self.timers.rtx = Some(at(now, self.rtt.rto()));
        }
        sent
    }

    /// Sends what is due: new data segments (MSS-sized, within min(SND.WND, cwnd)), FIN,
    /// retransmissions chosen from the SACK scoreboard (RFC 6675: only holes), pending ACKs.
    /// Called by the shard once per turn for every connection that got input or host data,
    /// after it wrote guest data to the host (so that the ACK carries a fresh window).
    pub fn poll_output(&mut self, now: Instant, out: &mut dyn SegmentSink) -> Effects {
        let sent = self.transmit(now, out);
        if !sent && (self.ack_now || expired(self.timers.ack, now)) {
            self.send_ack(now, out);
        }
        self.finish(Effects::default())
    }

    /// Timers: retransmission (RFC 6298 with exponential backoff), zero-window probe
    /// (persist), delayed ACK, TIME-WAIT expiry.
    pub fn on_timer(&mut self, now: Instant, out: &mut dyn SegmentSink) -> Effects {
        if expired(self.timers.time_wait, now) {
            self.timers.clear();
            self.state = State::Closed;
            self.send.release();
            self.rack.release();
        }
        if expired(self.timers.reo, now) {
            self.timers.reo = None;
            self.on_reorder_timer(now, out);
        }
        if expired(self.timers.rtx, now) {
            self.timers.rtx = None;
            if std::mem::take(&mut self.rtx_probe) {
                self.send_loss_probe(now, out);
            } else {
                self.on_retransmit_timer(now, out);
            }
        }
        if expired(self.timers.ack, now) {
            self.timers.ack = None;
            if self.ack_now || self.rcv_nxt != self.last_ack_sent || self.window_update_due() {
                self.send_ack(now, out);
            }
        }
        self.finish(Effects::default())
    }

    fn on_retransmit_timer(&mut self, now: Instant, out: &mut dyn SegmentSink) {
        match self.state {
            State::SynSent | State::SynReceived => {
                if self.retries >= self.cfg.syn_retries {
                    // Give up silently, as a host whose SYN went unanswered does.
                    self.abort();
                    return;
                }
                self.retries += 1;
                self.stats.retransmits += 1;
                self.syn_retransmitted = true;
                self.rtt.back_off();
                self.send_syn(now, out);
                self.timers.rtx = Some(at(now, self.rtt.rto()));
            }
            State::Established
            | State::CloseWait
            | State::FinWait1
            | State::Closing
            | State::LastAck => {
                let outstanding = self.snd_nxt != self.snd_una;
                let probe = !outstanding
                    && self.snd_wnd == 0
                    && span_usize(self.snd_nxt, self.data_end()) > 0;
                if !outstanding && !probe {
                    // Nothing to retransmit or probe any more.
                    return;
                }
                self.retries += 1;
                if self.retries > self.cfg.max_retries {
                    self.send_rst(self.snd_nxt, Some(self.rcv_nxt), out);
                    self.abort();
                    return;
                }
                self.rtt.back_off();
                if probe {
                    self.zero_window_probe(now, out);
                    return;
                }
                self.stats.rto_expiries += 1;
                self.rack.tlp_end = None;
                self.timers.reo = None;
                if self.snd_wnd == 0 {
                    // A closed window, not congestion: probe with what is outstanding.
                    self.stats.window_probes += 1;
                    self.probing = true;
                    self.rack.mark_all_lost(&self.sb);
                    self.cc.enter_loss(self.snd_nxt);
                } else {
                    let first = self.retries == 1;
                    let mss = self.mss32();
                    self.cc.on_rto(self.snd_una, self.snd_nxt, mss, first);
                    // RFC 8985 §6.3: the first unacknowledged segment is lost, and what
                    // was sent at least RACK.rtt + reo_wnd ago; the rest is still in
                    // flight (RACK finds it lost later if it is).
                    let reo = self.reo_wnd_us();
                    let now_us = self.micros(now);
                    self.rack.mark_lost_on_rto(now_us, reo, &self.sb);
                }
                self.rtt_probe = None;
                self.timers.rtx = Some(at(now, self.rtt.rto()));
                if self.ts_ok && self.rto_tsval.is_none() {
                    self.rto_tsval = Some(self.ts_val(now));
                }
                self.transmit(now, out);
            }
            _ => {}
        }
    }

    /// RFC 8985 §6.2: the reordering window of a segment sent before the last one
    /// delivered has passed: it is lost unless delivered meanwhile.
    fn on_reorder_timer(&mut self, now: Instant, out: &mut dyn SegmentSink) {
        if !self.sack_ok || self.snd_nxt == self.snd_una {
            return;
        }
        self.rack.stats.reo_timeouts += 1;
        if self.rack_detect(now) > 0 && self.cc.recovery == Recovery::Open {
            self.enter_fast_recovery(now);
            // RFC 6937 from the start: nothing was delivered since, so one segment.
            let (pipe, mss) = (self.pipe(), self.mss32());
            self.cc.prr_ack(0, pipe, mss);
        }
        self.transmit(now, out);
    }

    /// RFC 8985 §7.3: the probe timeout expired. Unless a probe is already out or no RTT
    /// was measured since the last one, send one segment beyond cwnd: new data if the
    /// window allows, else the last segment again. Either way the RTO is armed next.
    fn send_loss_probe(&mut self, now: Instant, out: &mut dyn SegmentSink) {
        if self.snd_nxt == self.snd_una {
            return;
        }
        if self.rack.tlp_end.is_none() && self.rack.rtt_sampled && self.tlp_allowed() {
            let sent = self.probe_new_data(now, out) || self.probe_last_segment(now, out);
            if sent {
                self.rack.tlp_end = Some(self.snd_nxt);
                self.rack.rtt_sampled = false;
                self.rack.stats.tlp_probes += 1;
            }
        }
        self.timers.rtx = Some(at(now, self.rtt.rto()));
    }

    /// A loss probe of new data: one segment within the guest's window, beyond cwnd.
    fn probe_new_data(&mut self, now: Instant, out: &mut dyn SegmentSink) -> bool {
        if self.rack.is_full() {
            return false;
        }
        let data_end = self.data_end();
        let unsent = span_usize(self.snd_nxt, data_end);
        let seq = self.snd_nxt;
        if unsent == 0 {
            if self.fin_queued && !self.fin_sent {
                self.send_data(now, seq, 0, true, out);
                self.sent_new(now, seq, 0, true);
                self.rack.tlp_is_retrans = false;
                return true;
            }
            return false;
        }
        let wnd_room = span_usize(seq, self.snd_una + self.snd_wnd);
        let max_payload = usize::from(self.snd_mss)
            .saturating_sub(self.option_len())
            .max(1);
        let len = unsent.min(wnd_room).min(max_payload);
        if len == 0 {
            return false;
        }
        let fin = self.fin_queued && seq_add(seq, len) == data_end;
        let (n, fin) = self.send_data(now, seq, len, fin, out);
        if n == 0 {
            return false;
        }
        self.sent_new(now, seq, n, fin);
        self.rack.tlp_is_retrans = false;
        true
    }

    /// A loss probe retransmitting the segment with the highest sequence numbers.
    fn probe_last_segment(&mut self, now: Instant, out: &mut dyn SegmentSink) -> bool {
        let Some((s, e)) = self.rack.probe_range() else {
            return false;
        };
        if self.resend_range(now, s, e, out) == 0 {
            return false;
        }
        let t = self.micros(now);
        self.rack.probe_retransmitted(s, t);
        self.rack.tlp_is_retrans = true;
        self.rtt_probe = None;
        true
    }

    /// RFC 9293 §3.8.6.1: with a zero window and nothing outstanding, send one byte of new
    /// data beyond the window; the guest's ACK announces its window.
    fn zero_window_probe(&mut self, now: Instant, out: &mut dyn SegmentSink) {
        let seq = self.snd_nxt;
        let (n, _) = self.send_data(now, seq, 1, false, out);
        self.snd_nxt = seq + n;
        self.stats.bytes_out += u64::from(n);
        let t = self.micros(now);
        self.rack.sent_new(seq, seq + n, t);
        self.probing = true;
        self.stats.window_probes += 1;
        self.timers.rtx = Some(at(now, self.rtt.rto()));
    }

    // ---------------------------------------------------------------------------------
    // Guest → host.

    /// In-order guest bytes not yet written to the host socket (a ring's two halves).
    pub fn host_data(&self) -> [&[u8]; 2] {
        self.recv.ring.slices(0, self.recv.ring.len())
    }

    /// `n` bytes of `host_data()` went into the host socket: their room reopens our
    /// window. When the window grew past the SWS threshold and either was below two
    /// segments (the update is sent at once) or at least doubled (sent by the next
    /// `poll_output`, as Linux does after a read), a window update is due; otherwise the
    /// next ACK carries the new window.
    pub fn host_wrote(&mut self, n: usize, now: Instant, out: &mut dyn SegmentSink) -> Effects {
        let n = n.min(self.recv.ring.len());
        self.recv.ring.consume(n);
        if self.recv.ooo.is_empty() {
            self.recv.ring.rewind_if_empty();
        }
        if n > 0 && self.window_update_due() {
            if span_usize(self.rcv_nxt, self.rcv_adv) < 2 * self.rcv_mss {
                // The guest may be stalled on our window: tell it now.
                self.send_ack(now, out);
            } else {
                // Worth announcing, but it can ride on this turn's ACK or data.
                self.schedule_ack_now(now);
            }
        }
        self.finish(Effects::default())
    }

    // ---------------------------------------------------------------------------------
    // Host → guest.

    /// How many bytes the shard may read from the host socket now: room in the send
    /// buffer, limited to twice the guest's window (at least 64 KiB) so that what we hold
    /// unsent is what the guest can take soon. 0 once the host reached EOF or the
    /// connection is over.
    pub fn send_room(&self) -> usize {
        if self.fin_queued || self.aborted {
            return 0;
        }
        if !matches!(
            self.state,
            State::SynSent | State::SynReceived | State::Established | State::CloseWait
        ) {
            return 0;
        }
        let wnd = usize::try_from(self.snd_wnd).unwrap_or(usize::MAX);
        let limit = self.cfg.send_buf.min(wnd.saturating_mul(2).max(READ_FLOOR));
        limit.saturating_sub(self.send.len())
    }

    /// Space to read host bytes into directly (no intermediate copy): up to two slices,
    /// in total at most `send_room()`.
    pub fn send_spare(&mut self) -> [&mut [u8]; 2] {
        let room = self.send_room();
        if room == 0 {
            self.read_paused = true;
            return [&mut [], &mut []];
        }
        let len = self.send.len();
        self.send.reserve(len.saturating_add(room), len);
        self.send.spare_mut(room)
    }

    /// `n` bytes were read into `send_spare()`.
    pub fn host_read(&mut self, n: usize) {
        let n = n.min(self.send_room());
        self.send.commit(n);
        if self.send_room() == 0 {
            self.read_paused = true;
        }
    }

    /// The host closed its sending side (read returned 0): queue a FIN after the data.
    pub fn host_eof(&mut self) {
        if self.fin_queued {
            return;
        }
        self.fin_queued = true;
        self.apply_host_eof();
    }

    /// RFC 9293 §3.10.4 CLOSE: ESTABLISHED → FIN-WAIT-1, CLOSE-WAIT → LAST-ACK; before the
    /// handshake completes the FIN waits for ESTABLISHED.
    fn apply_host_eof(&mut self) {
        if !self.fin_queued {
            return;
        }
        match self.state {
            State::Established => self.state = State::FinWait1,
            State::CloseWait => self.state = State::LastAck,
            _ => {}
        }
    }

    /// The host socket failed or was reset: RST to the guest, state `Closed`.
    pub fn host_reset(&mut self, out: &mut dyn SegmentSink) {
        match self.state {
            State::AwaitingHost | State::SynReceived => {
                self.host_refused(out);
                return;
            }
            State::SynSent => self.send_rst(self.snd_nxt, None, out),
            State::Established
            | State::CloseWait
            | State::FinWait1
            | State::FinWait2
            | State::Closing
            | State::LastAck => self.send_rst(self.snd_nxt, Some(self.rcv_nxt), out),
            State::TimeWait | State::Closed => {}
        }
        self.close_by_host();
    }
}

impl std::fmt::Debug for Tcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tcb")
            .field("ep", &self.ep)
            .field("vars", &self.vars())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::Tcb;

    #[test]
    fn a_connection_is_small_before_it_carries_data() {
        // The rings and range lists allocate on first use; the struct itself stays small.
        let size = std::mem::size_of::<Tcb>();
        assert!(size <= 1024, "{size} bytes");
    }
}
