//! RACK-TLP loss detection (RFC 8985) over a log of the segments we sent.
//!
//! Every data segment (and the FIN) that advances SND.NXT gets a record: its sequence
//! range, when it was last transmitted (microseconds since the Tcb's epoch) and flags
//! (SACKed, lost, retransmitted). The records lie in sequence order in a ring (new data is
//! appended, the cumulative ACK pops them from the front) and cover [SND.UNA, SND.NXT)
//! without gaps. The records *in flight* (sent, not delivered, not marked lost) are also
//! threaded on a doubly linked list in transmission order, by ring index (Linux's
//! `tsorted_sent_queue`): a retransmission moves its record to the tail, SACKs and loss
//! marks unlink it. So the list head is always the oldest transmission still in flight.
//!
//! RFC 8985 §6.2: on an ACK, RACK.segment is the most recently *sent* segment among those
//! delivered (cumulatively acknowledged or SACKed); a segment in flight that was sent
//! before it is lost once RACK.rtt + RACK.reo_wnd has passed since its transmission.
//! Because that deadline grows with the transmission time, the walk from the list head
//! stops at the first record that is not yet lost (or was sent after RACK.segment): an
//! ACK costs O(1) plus one step per segment it marks lost. Retransmissions are ordinary
//! transmissions here, so a lost retransmission is detected like any other loss, without
//! the RTO (RFC 6675 cannot see it).
//!
//! Lost records wait for retransmission in sequence order; a cursor (no lost record below
//! it) makes finding the next one amortized O(1). `lost_bytes` (their unSACKed bytes) is
//! what RFC 6675's pipe subtracts for data presumed lost and not yet retransmitted.
//!
//! Memory: 32 bytes per segment in flight (a 4 MiB window of 1448-byte segments: ~2,900
//! records, 128 KiB), allocated while data is outstanding, at most `MAX_SEGS` records.

use std::collections::VecDeque;

use super::send::{Scoreboard, DUP_THRESH};
use super::SeqNumber;

/// Records kept at most: the sender stops sending new data while the log is full (a
/// window of 65,536 segments is far above what `send_buf` allows at sane MSS values).
pub(crate) const MAX_SEGS: usize = 1 << 16;

/// Ring indices are absolute (they survive the ring's growth) and wrap at 2^31, so that
/// `NIL` is never an index.
const IDX_MASK: u32 = 0x7fff_ffff;
const NIL: u32 = u32::MAX;

const SACKED: u8 = 1;
const LOST: u8 = 2;
const RETRANS: u8 = 4;
const LINKED: u8 = 8;

/// RFC 8985 §6.2 Step 1: the window of the min-RTT filter (Linux: 5 minutes; the guest
/// link does not change paths, a shorter window only matters after a host stall).
const MIN_RTT_WINDOW_US: u64 = 60_000_000;
/// RFC 8985 §6.2 Step 4: the reordering window is reset after this many recoveries
/// without a D-SACK.
const REO_WND_PERSIST: u8 = 16;

/// `b - a` in bytes, 0 when `b` is not after `a`.
fn span(a: SeqNumber, b: SeqNumber) -> u32 {
    u32::try_from(b.diff(a).max(0)).unwrap_or(0)
}

/// RFC 7323 §5.2: timestamps compare in modulo-2^32 arithmetic.
fn ts_before(a: u32, b: u32) -> bool {
    SeqNumber(a).diff(SeqNumber(b)) < 0
}

/// RFC 8985 §6.2 RACK_sent_after(t1, seq1, t2, seq2): sent later, ties broken by sequence.
fn sent_after(t1: u64, seq1: SeqNumber, t2: u64, seq2: SeqNumber) -> bool {
    t1 > t2 || (t1 == t2 && seq1 > seq2)
}

#[derive(Debug, Clone, Copy)]
struct Seg {
    start: SeqNumber,
    end: SeqNumber,
    /// Last transmission: µs since the Tcb's epoch, plus one.
    xmit: u64,
    /// Transmission-order list links (absolute indices), `NIL` at the ends.
    prev: u32,
    next: u32,
    /// While `LOST`: the bytes counted in `lost_bytes` for it (its unSACKed bytes).
    lost_len: u32,
    flags: u8,
}

/// What the ACK being processed carries, for RFC 8985 §6.2 Step 2.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AckCtx {
    /// µs since the Tcb's epoch, plus one.
    pub(crate) now: u64,
    /// The guest's TSecr (with timestamps in use).
    pub(crate) tsecr: Option<u32>,
    /// Our TSval for a transmission at `t` is `(t - 1) / 1000 + ts_offset` (mod 2^32).
    pub(crate) ts_offset: u32,
}

/// Counters of the loss detection, for tests and debugging.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossStats {
    /// Segments RACK marked lost (on ACKs, on its reordering timer and on RTOs).
    pub rack_lost: u64,
    /// Of these, retransmissions found lost again (RFC 6675 cannot detect them).
    pub lost_retransmits: u64,
    /// Expiries of the RACK reordering timer.
    pub reo_timeouts: u64,
    /// Tail loss probes sent (RFC 8985 §7.3).
    pub tlp_probes: u64,
    /// Probes that repaired a loss (the episode ended with a cwnd reduction, §7.4).
    pub tlp_recoveries: u64,
    /// D-SACKs received (RFC 2883).
    pub dsacks: u64,
}

/// `LossStats` as kept per connection (half the size; a connection never counts 2^32
/// probes).
#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct Counters {
    /// Segments RACK marked lost (on ACKs, on its reordering timer and on RTOs).
    pub(crate) rack_lost: u32,
    /// Of these, retransmissions found lost again (RFC 6675 cannot detect them).
    pub(crate) lost_retransmits: u32,
    /// Expiries of the RACK reordering timer.
    pub(crate) reo_timeouts: u32,
    /// Tail loss probes sent (RFC 8985 §7.3).
    pub(crate) tlp_probes: u32,
    /// Probes that repaired a loss (the episode ended with a cwnd reduction, §7.4).
    pub(crate) tlp_recoveries: u32,
    /// D-SACKs received (RFC 2883).
    pub(crate) dsacks: u32,
}

impl From<Counters> for LossStats {
    fn from(c: Counters) -> LossStats {
        LossStats {
            rack_lost: u64::from(c.rack_lost),
            lost_retransmits: u64::from(c.lost_retransmits),
            reo_timeouts: u64::from(c.reo_timeouts),
            tlp_probes: u64::from(c.tlp_probes),
            tlp_recoveries: u64::from(c.tlp_recoveries),
            dsacks: u64::from(c.dsacks),
        }
    }
}

/// RACK-TLP state and the log of segments sent (RFC 8985 §6.1, §7.1).
#[derive(Debug)]
pub(crate) struct Rack {
    segs: VecDeque<Seg>,
    /// Absolute index of `segs[0]`.
    head_abs: u32,
    /// Transmission-order list of the records in flight.
    t_head: u32,
    t_tail: u32,
    lost_count: u32,
    lost_bytes: u32,
    sacked_count: u32,
    /// No lost record starts below this.
    rtx_cursor: SeqNumber,

    /// RACK.xmit_ts / RACK.end_seq: the most recently sent segment delivered (xmit 0:
    /// none yet).
    xmit: u64,
    end_seq: SeqNumber,
    /// RACK.rtt, µs.
    rtt: u32,
    /// RACK.segment changed since the last detection (Linux's `rack.advanced`).
    advanced: bool,
    /// Newest transmission among the segments this ACK delivered (0: none), and its RTT.
    ack_newest: u64,
    ack_newest_rtt: u32,
    /// RACK.min_RTT (windowed), µs (`u32::MAX`: no sample yet), and when it was taken.
    min_rtt: u32,
    min_rtt_at: u64,
    /// RACK.fack: the highest sequence delivered (valid once `fack_set`).
    fack: SeqNumber,
    fack_set: bool,
    /// RACK.reordering_seen.
    pub(crate) reordering_seen: bool,
    /// RACK.reo_wnd_mult, RACK.reo_wnd_persist, RACK.dsack_round.
    reo_wnd_mult: u8,
    reo_wnd_persist: u8,
    dsack_round: SeqNumber,
    dsack_round_set: bool,

    /// TLP.end_seq: the probe's end while unresolved; TLP.is_retrans.
    pub(crate) tlp_end: Option<SeqNumber>,
    pub(crate) tlp_is_retrans: bool,
    /// An RTT sample was taken since the last probe (RFC 8985 §7.3 condition 2).
    pub(crate) rtt_sampled: bool,

    pub(crate) stats: Counters,
}

impl Rack {
    pub(crate) fn new(una: SeqNumber) -> Rack {
        Rack {
            segs: VecDeque::new(),
            head_abs: 0,
            t_head: NIL,
            t_tail: NIL,
            lost_count: 0,
            lost_bytes: 0,
            sacked_count: 0,
            rtx_cursor: una,
            xmit: 0,
            end_seq: una,
            rtt: 0,
            advanced: false,
            ack_newest: 0,
            ack_newest_rtt: 0,
            min_rtt: u32::MAX,
            min_rtt_at: 0,
            fack: una,
            fack_set: false,
            reordering_seen: false,
            reo_wnd_mult: 1,
            reo_wnd_persist: 0,
            dsack_round: una,
            dsack_round_set: false,
            tlp_end: None,
            tlp_is_retrans: false,
            rtt_sampled: false,
            stats: Counters::default(),
        }
    }

    /// Forget every record and free the memory (the connection no longer sends).
    pub(crate) fn release(&mut self) {
        self.segs = VecDeque::new();
        self.head_abs = 0;
        self.t_head = NIL;
        self.t_tail = NIL;
        self.lost_count = 0;
        self.lost_bytes = 0;
        self.sacked_count = 0;
        self.tlp_end = None;
    }

    /// No room for another segment and a FIN record: new data waits.
    pub(crate) fn is_full(&self) -> bool {
        self.segs.len() + 2 > MAX_SEGS
    }

    /// Unsacked bytes of the records marked lost and not yet retransmitted.
    pub(crate) fn lost_bytes(&self) -> u32 {
        self.lost_bytes
    }

    pub(crate) fn min_rtt_us(&self) -> Option<u64> {
        (self.min_rtt != u32::MAX).then_some(u64::from(self.min_rtt))
    }

    // ---------------------------------------------------------------------------------
    // The ring and the transmission-order list.

    fn abs(&self, i: usize) -> u32 {
        self.head_abs
            .wrapping_add(u32::try_from(i).unwrap_or(IDX_MASK))
            & IDX_MASK
    }

    fn idx(&self, abs: u32) -> usize {
        usize::try_from(abs.wrapping_sub(self.head_abs) & IDX_MASK).unwrap_or(usize::MAX)
    }

    fn at(&self, abs: u32) -> Option<&Seg> {
        if abs == NIL {
            return None;
        }
        self.segs.get(self.idx(abs))
    }

    fn at_mut(&mut self, abs: u32) -> Option<&mut Seg> {
        if abs == NIL {
            return None;
        }
        let i = self.idx(abs);
        self.segs.get_mut(i)
    }

    fn set_next(&mut self, abs: u32, next: u32) {
        if abs == NIL {
            self.t_head = next;
        } else if let Some(s) = self.at_mut(abs) {
            s.next = next;
        }
    }

    fn set_prev(&mut self, abs: u32, prev: u32) {
        if abs == NIL {
            self.t_tail = prev;
        } else if let Some(s) = self.at_mut(abs) {
            s.prev = prev;
        }
    }

    fn unlink(&mut self, abs: u32) {
        let Some(s) = self.at_mut(abs) else { return };
        if s.flags & LINKED == 0 {
            return;
        }
        s.flags &= !LINKED;
        let (p, n) = (s.prev, s.next);
        s.prev = NIL;
        s.next = NIL;
        self.set_next(p, n);
        self.set_prev(n, p);
    }

    fn link_tail(&mut self, abs: u32) {
        let tail = self.t_tail;
        let Some(s) = self.at_mut(abs) else { return };
        if s.flags & LINKED != 0 {
            return;
        }
        s.flags |= LINKED;
        s.prev = tail;
        s.next = NIL;
        self.set_next(tail, abs);
        self.t_tail = abs;
    }

    /// Threads the records in flight in order of transmission again (after flags changed
    /// wholesale). O(n log n), and rare.
    fn rebuild_list(&mut self) {
        let mut v = Vec::with_capacity(self.segs.len());
        for (i, s) in self.segs.iter_mut().enumerate() {
            s.flags &= !LINKED;
            s.prev = NIL;
            s.next = NIL;
            if s.flags & (SACKED | LOST) == 0 {
                v.push((s.xmit, u32::try_from(i).unwrap_or(IDX_MASK)));
            }
        }
        v.sort_unstable();
        self.t_head = NIL;
        self.t_tail = NIL;
        for &(_, i) in &v {
            let abs = self.abs(usize::try_from(i).unwrap_or(usize::MAX));
            self.link_tail(abs);
        }
    }

    /// Index of the first record ending after `seq`.
    fn find(&self, seq: SeqNumber) -> usize {
        self.segs.partition_point(|s| s.end <= seq)
    }

    // ---------------------------------------------------------------------------------
    // Transmissions.

    /// New data `[start, end)` (the FIN counts) went out at `t`. The caller checks
    /// `is_full` first.
    pub(crate) fn sent_new(&mut self, start: SeqNumber, end: SeqNumber, t: u64) {
        if end <= start || self.segs.len() >= MAX_SEGS {
            return;
        }
        let abs = self.abs(self.segs.len());
        self.segs.push_back(Seg {
            start,
            end,
            xmit: t,
            prev: NIL,
            next: NIL,
            lost_len: 0,
            flags: 0,
        });
        self.link_tail(abs);
    }

    /// The lowest record marked lost and not yet retransmitted: `[start, end)`.
    pub(crate) fn next_lost(&mut self) -> Option<(SeqNumber, SeqNumber)> {
        if self.lost_count == 0 {
            return None;
        }
        let mut i = self.find(self.rtx_cursor);
        while let Some(s) = self.segs.get(i) {
            if s.flags & LOST != 0 {
                self.rtx_cursor = s.start;
                return Some((s.start, s.end));
            }
            i += 1;
        }
        // Unreachable while the counters are consistent; resynchronize.
        self.lost_count = 0;
        self.lost_bytes = 0;
        None
    }

    /// The lost record starting at `start` was retransmitted (all its unSACKed bytes) at
    /// `t`: it is in flight again, at the tail of the transmission order.
    pub(crate) fn retransmitted(&mut self, start: SeqNumber, t: u64) {
        let i = self.find(start);
        let abs = self.abs(i);
        let Some(s) = self.segs.get_mut(i) else {
            return;
        };
        if s.start != start || s.flags & (LOST | SACKED) != LOST {
            return;
        }
        s.flags = (s.flags & !LOST) | RETRANS;
        s.xmit = t;
        let (lost_len, end) = (s.lost_len, s.end);
        s.lost_len = 0;
        self.lost_count = self.lost_count.saturating_sub(1);
        self.lost_bytes = self.lost_bytes.saturating_sub(lost_len);
        self.rtx_cursor = self.rtx_cursor.max(end);
        self.link_tail(abs);
    }

    /// What a loss probe retransmits: the record with the highest sequence numbers, with
    /// the one before it when it is only the FIN (the probe must carry data, which the
    /// guest can SACK). `None` if it is SACKed.
    pub(crate) fn probe_range(&self) -> Option<(SeqNumber, SeqNumber)> {
        let n = self.segs.len();
        let last = self.segs.get(n.checked_sub(1)?)?;
        if last.flags & SACKED != 0 {
            return None;
        }
        let mut start = last.start;
        if span(last.start, last.end) == 1 {
            if let Some(prev) = n.checked_sub(2).and_then(|i| self.segs.get(i)) {
                if prev.flags & SACKED == 0 && prev.end == last.start {
                    start = prev.start;
                }
            }
        }
        Some((start, last.end))
    }

    /// The records from `start` to the end were sent again as a loss probe at `t` (RFC
    /// 8985 §7.3): in flight again, at the tail of the transmission order.
    pub(crate) fn probe_retransmitted(&mut self, start: SeqNumber, t: u64) {
        let mut i = self.find(start);
        while i < self.segs.len() {
            let abs = self.abs(i);
            let Some(s) = self.segs.get_mut(i) else {
                return;
            };
            i += 1;
            if s.flags & SACKED != 0 {
                continue;
            }
            s.xmit = t;
            s.flags |= RETRANS;
            if s.flags & LOST != 0 {
                s.flags &= !LOST;
                let lost_len = s.lost_len;
                s.lost_len = 0;
                self.lost_count = self.lost_count.saturating_sub(1);
                self.lost_bytes = self.lost_bytes.saturating_sub(lost_len);
            }
            self.unlink(abs);
            self.link_tail(abs);
        }
    }

    /// Transmission time of the oldest transmission in flight.
    pub(crate) fn oldest_in_flight(&self) -> Option<u64> {
        self.at(self.t_head).map(|s| s.xmit)
    }

    // ---------------------------------------------------------------------------------
    // Acknowledgments.

    /// Starts processing an ACK.
    pub(crate) fn begin_ack(&mut self) {
        self.ack_newest = 0;
    }

    /// Ends processing an ACK: RACK.rtt is the RTT of the most recently sent segment this
    /// ACK delivered (RFC 8985 §6.2 Step 2 visits them in transmission order).
    pub(crate) fn end_ack(&mut self) {
        if self.ack_newest != 0 {
            self.rtt = self.ack_newest_rtt;
            self.ack_newest = 0;
        }
    }

    /// The cumulative ACK reached `una`: pops the records it covers; those not SACKed
    /// before are delivered now.
    pub(crate) fn on_cum_ack(&mut self, una: SeqNumber, ctx: &AckCtx) {
        loop {
            let head = self.head_abs;
            let Some(front) = self.segs.front_mut() else {
                break;
            };
            if front.end <= una {
                self.unlink(head);
                let Some(s) = self.segs.pop_front() else {
                    break;
                };
                self.head_abs = self.head_abs.wrapping_add(1) & IDX_MASK;
                if s.flags & LOST != 0 {
                    self.lost_count = self.lost_count.saturating_sub(1);
                    self.lost_bytes = self.lost_bytes.saturating_sub(s.lost_len);
                }
                if s.flags & SACKED != 0 {
                    self.sacked_count = self.sacked_count.saturating_sub(1);
                } else {
                    self.deliver(&s, ctx, true);
                }
                continue;
            }
            if front.start < una {
                // Part of the segment (a receiver that trimmed it): the rest stays.
                let cut = span(front.start, una);
                front.start = una;
                if front.flags & LOST != 0 {
                    let d = cut.min(front.lost_len);
                    front.lost_len -= d;
                    self.lost_bytes = self.lost_bytes.saturating_sub(d);
                }
            }
            break;
        }
        if self.segs.is_empty() {
            self.lost_count = 0;
            self.lost_bytes = 0;
            self.sacked_count = 0;
        }
        self.rtx_cursor = self.rtx_cursor.max(una);
    }

    /// `[l, r)` was newly SACKed (already on the scoreboard `sb`): records now entirely
    /// SACKed are delivered.
    pub(crate) fn on_sacked(&mut self, l: SeqNumber, r: SeqNumber, sb: &Scoreboard, ctx: &AckCtx) {
        let mut i = self.find(l);
        while let Some(s) = self.segs.get(i) {
            if s.start >= r {
                break;
            }
            if s.flags & SACKED == 0 {
                let (start, end) = (s.start, s.end);
                let abs = self.abs(i);
                if sb.unsacked_between(start, end) == 0 {
                    self.unlink(abs);
                    let Some(s) = self.segs.get_mut(i) else {
                        break;
                    };
                    s.flags |= SACKED;
                    self.sacked_count += 1;
                    if s.flags & LOST != 0 {
                        s.flags &= !LOST;
                        let lost_len = s.lost_len;
                        s.lost_len = 0;
                        self.lost_count = self.lost_count.saturating_sub(1);
                        self.lost_bytes = self.lost_bytes.saturating_sub(lost_len);
                    }
                    let copy = *s;
                    self.deliver(&copy, ctx, false);
                } else if let Some(s) = self.segs.get_mut(i) {
                    if s.flags & LOST != 0 {
                        let d = span(start.max(l), end.min(r)).min(s.lost_len);
                        s.lost_len -= d;
                        self.lost_bytes = self.lost_bytes.saturating_sub(d);
                    }
                }
            }
            i += 1;
        }
    }

    /// RFC 8985 §6.2 Steps 1-3 for one newly delivered segment, by the cumulative ACK or
    /// by a SACK block.
    fn deliver(&mut self, s: &Seg, ctx: &AckCtx, cumulative: bool) {
        let retrans = s.flags & RETRANS != 0;
        // Step 3: a segment delivered below the highest delivered one, never
        // retransmitted, arrived out of order.
        if self.fack_set && s.end < self.fack {
            if !retrans {
                self.reordering_seen = true;
            }
        } else {
            self.fack = s.end;
            self.fack_set = true;
        }
        // Step 2. An ACK for a retransmitted segment may be for the original: use it only
        // if it is not below the minimum RTT and, for a cumulative ACK, echoes the
        // retransmission's timestamp. (A SACK echoes TS.Recent, the timestamp of the
        // segment at the left edge of the guest's window, RFC 7323 §4.3: no information.)
        let rtt = u32::try_from(ctx.now.saturating_sub(s.xmit)).unwrap_or(u32::MAX);
        if retrans {
            if let (Some(e), true) = (ctx.tsecr, cumulative) {
                let ms =
                    u32::try_from((s.xmit.saturating_sub(1) / 1000) & 0xffff_ffff).unwrap_or(0);
                if ts_before(e, ms.wrapping_add(ctx.ts_offset)) {
                    return;
                }
            }
            if self.min_rtt == u32::MAX || rtt < self.min_rtt {
                return;
            }
        } else {
            // Step 1: a Karn-safe sample for the windowed minimum.
            self.sample_min_rtt(rtt, ctx.now);
        }
        self.rtt_sampled = true;
        if s.xmit >= self.ack_newest {
            self.ack_newest = s.xmit;
            self.ack_newest_rtt = rtt;
        }
        if sent_after(s.xmit, s.end, self.xmit, self.end_seq) {
            self.xmit = s.xmit;
            self.end_seq = s.end;
            self.rtt = rtt;
            self.advanced = true;
        }
    }

    /// An RTT sample (µs) for RACK.min_RTT, e.g. the handshake's.
    pub(crate) fn sample_min_rtt(&mut self, rtt: u32, now: u64) {
        let expired = now.saturating_sub(self.min_rtt_at) > MIN_RTT_WINDOW_US;
        if rtt <= self.min_rtt || expired {
            self.min_rtt = rtt;
            self.min_rtt_at = now;
        }
    }

    /// The guest discarded data it had SACKed (RFC 2018 §8) and the scoreboard was
    /// cleared: those segments are lost.
    pub(crate) fn reneged(&mut self) {
        let mut lost = 0u32;
        let mut bytes = 0u32;
        for s in self.segs.iter_mut() {
            if s.flags & SACKED != 0 {
                s.flags = (s.flags & !SACKED) | LOST;
                s.lost_len = span(s.start, s.end);
                lost += 1;
                bytes = bytes.saturating_add(s.lost_len);
            }
        }
        self.sacked_count = 0;
        self.lost_count += lost;
        self.lost_bytes = self.lost_bytes.saturating_add(bytes);
        if let Some(s) = self.segs.front() {
            self.rtx_cursor = s.start;
        }
    }

    // ---------------------------------------------------------------------------------
    // Loss marking.

    fn mark_lost(&mut self, abs: u32, sb: &Scoreboard) {
        self.unlink(abs);
        let Some(s) = self.at_mut(abs) else { return };
        if s.flags & (LOST | SACKED) != 0 {
            return;
        }
        s.flags |= LOST;
        let (start, end, retrans) = (s.start, s.end, s.flags & RETRANS != 0);
        let n = sb.unsacked_between(start, end).max(1);
        if let Some(s) = self.at_mut(abs) {
            s.lost_len = n;
        }
        self.lost_count += 1;
        self.lost_bytes = self.lost_bytes.saturating_add(n);
        if start < self.rtx_cursor {
            self.rtx_cursor = start;
        }
        self.stats.rack_lost += 1;
        if retrans {
            self.stats.lost_retransmits += 1;
        }
    }

    /// RFC 8985 §6.2 Step 4, the D-SACK part: `dsack`, this ACK carried a D-SACK that may
    /// come from reordering (the window grows by min_RTT / 4 once per round trip);
    /// `exiting_recovery`, this ACK ended a recovery (16 without a D-SACK reset it).
    pub(crate) fn update_reo_wnd(
        &mut self,
        dsack: bool,
        una: SeqNumber,
        nxt: SeqNumber,
        exiting_recovery: bool,
    ) {
        if self.dsack_round_set && una >= self.dsack_round {
            self.dsack_round_set = false;
        }
        if !self.dsack_round_set && dsack {
            self.dsack_round = nxt;
            self.dsack_round_set = true;
            self.reo_wnd_mult = self.reo_wnd_mult.saturating_add(1);
            self.reo_wnd_persist = REO_WND_PERSIST;
        } else if exiting_recovery {
            self.reo_wnd_persist = self.reo_wnd_persist.saturating_sub(1);
            if self.reo_wnd_persist == 0 {
                self.reo_wnd_mult = 1;
            }
        }
    }

    /// RFC 8985 §6.2 Step 4 RACK.reo_wnd, µs: 0 without reordering seen during recovery
    /// or once DupThresh segments are SACKed (the classic rule, as fast), else
    /// min(reo_wnd_mult * min_RTT / 4, SRTT).
    pub(crate) fn reo_wnd(&self, in_recovery: bool, srtt_us: Option<u64>) -> u64 {
        if !self.reordering_seen && (in_recovery || self.sacked_count >= DUP_THRESH) {
            return 0;
        }
        let min_rtt = self.min_rtt_us().unwrap_or(0);
        let w = u64::from(self.reo_wnd_mult).saturating_mul(min_rtt) / 4;
        match srtt_us {
            Some(s) => w.min(s),
            None => w,
        }
    }

    /// RFC 8985 §6.2 Step 5, RACK_detect_loss(): marks lost every segment in flight sent
    /// before RACK.segment whose RACK.rtt + `reo_wnd` has passed. Returns the number marked
    /// and, if a segment sent before RACK.segment is still within its window, how long
    /// until it is due (the reordering timer).
    pub(crate) fn detect_loss(
        &mut self,
        now: u64,
        reo_wnd: u64,
        sb: &Scoreboard,
    ) -> (u32, Option<u64>) {
        self.advanced = false;
        if self.xmit == 0 {
            return (0, None);
        }
        let mut marked = 0;
        let mut abs = self.t_head;
        while let Some(s) = self.at(abs) {
            if !sent_after(self.xmit, self.end_seq, s.xmit, s.end) {
                break;
            }
            let due = s
                .xmit
                .saturating_add(u64::from(self.rtt))
                .saturating_add(reo_wnd);
            if due > now {
                // Sent later than this one means due later: nothing further is lost yet.
                return (marked, Some(due - now));
            }
            let next = s.next;
            self.mark_lost(abs, sb);
            marked += 1;
            abs = next;
        }
        (marked, None)
    }

    /// Whether RACK.segment changed since the last detection.
    pub(crate) fn advanced(&self) -> bool {
        self.advanced
    }

    /// RFC 8985 §6.3: on an RTO, the first unacknowledged segment is lost, and so is every
    /// segment in flight sent at least RACK.rtt + `reo_wnd` ago.
    pub(crate) fn mark_lost_on_rto(&mut self, now: u64, reo_wnd: u64, sb: &Scoreboard) {
        if let Some(s) = self.segs.front() {
            if s.flags & (LOST | SACKED) == 0 {
                let abs = self.head_abs;
                self.mark_lost(abs, sb);
            }
        }
        let lost_after = u64::from(self.rtt).saturating_add(reo_wnd);
        let mut abs = self.t_head;
        while let Some(s) = self.at(abs) {
            if s.xmit.saturating_add(lost_after) > now {
                break;
            }
            let next = s.next;
            self.mark_lost(abs, sb);
            abs = next;
        }
    }

    /// Everything in flight is lost (data sent into a closed window).
    pub(crate) fn mark_all_lost(&mut self, sb: &Scoreboard) {
        while self.t_head != NIL {
            let abs = self.t_head;
            let before = self.t_head;
            self.mark_lost(abs, sb);
            if self.t_head == before {
                // Not linked after all (cannot happen): stop rather than spin.
                self.t_head = NIL;
                self.t_tail = NIL;
            }
        }
    }

    /// NewReno (no SACK): the segment at SND.UNA is lost (three duplicate ACKs, RFC 5681
    /// §3.2, or a partial ACK, RFC 6582 §3.2).
    pub(crate) fn mark_head_lost(&mut self, sb: &Scoreboard) {
        if self.segs.front().is_some_and(|s| s.flags & LOST == 0) {
            let abs = self.head_abs;
            self.mark_lost(abs, sb);
        }
    }

    /// The retransmissions were spurious (RFC 3522 detection): what is still marked lost
    /// is in flight after all, and the path reorders.
    pub(crate) fn undo(&mut self) {
        self.reordering_seen = true;
        if self.lost_count == 0 {
            return;
        }
        for s in self.segs.iter_mut() {
            if s.flags & LOST != 0 {
                s.flags &= !LOST;
                s.lost_len = 0;
            }
        }
        self.lost_count = 0;
        self.lost_bytes = 0;
        self.rebuild_list();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    fn ctx(now: u64) -> AckCtx {
        AckCtx {
            now,
            tsecr: None,
            ts_offset: 0,
        }
    }

    /// Ten 100-byte segments from 1000, sent 10 µs apart from t = 100.
    fn sent_ten() -> Rack {
        let mut r = Rack::new(s(1000));
        for k in 0..10u32 {
            r.sent_new(
                s(1000 + k * 100),
                s(1100 + k * 100),
                100 + u64::from(k) * 10,
            );
        }
        r
    }

    /// Starts of the records in flight, in transmission order.
    fn list(r: &Rack) -> Vec<u32> {
        let mut v = Vec::new();
        let mut abs = r.t_head;
        while let Some(x) = r.at(abs) {
            v.push(x.start.0);
            abs = x.next;
        }
        v
    }

    fn sack(r: &mut Rack, sb: &mut Scoreboard, l: u32, rr: u32, now: u64) {
        assert!(sb.insert(s(l), s(rr)));
        r.begin_ack();
        r.on_sacked(s(l), s(rr), sb, &ctx(now));
        r.end_ack();
    }

    #[test]
    fn cumulative_ack_pops_and_measures() {
        let mut r = sent_ten();
        r.begin_ack();
        r.on_cum_ack(s(1300), &ctx(200));
        r.end_ack();
        assert_eq!(r.segs.len(), 7);
        assert_eq!(list(&r)[0], 1300);
        // RACK.segment is the third (sent at 120): RTT 80 µs.
        assert_eq!((r.xmit, r.end_seq, r.rtt), (120, s(1300), 80));
        assert_eq!(r.min_rtt_us(), Some(80));
        assert!(!r.reordering_seen);
    }

    #[test]
    fn sacked_segment_marks_earlier_ones_lost_after_the_window() {
        let mut r = sent_ten();
        let mut sb = Scoreboard::default();
        r.sample_min_rtt(40, 0);
        // Segment 4 (sent at 140) is SACKed at 200: RACK.rtt = 60.
        sack(&mut r, &mut sb, 1400, 1500, 200);
        assert_eq!(
            list(&r),
            [1000, 1100, 1200, 1300, 1500, 1600, 1700, 1800, 1900]
        );
        // reo_wnd 10 µs: segment 0 (sent at 100) is due at 170, segment 3 at 200.
        assert_eq!(r.detect_loss(165, 10, &sb), (0, Some(5)));
        assert_eq!(
            r.detect_loss(185, 10, &sb),
            (2, Some(5)),
            "0 and 1 lost, 2 due at 190"
        );
        assert_eq!(
            r.detect_loss(200, 10, &sb),
            (2, None),
            "2 and 3 lost; 5.. were sent after"
        );
        assert_eq!(r.lost_bytes(), 400);
        assert_eq!(r.next_lost(), Some((s(1000), s(1100))));
    }

    #[test]
    fn lost_retransmission_is_detected_by_a_later_delivery() {
        let mut r = sent_ten();
        let mut sb = Scoreboard::default();
        sack(&mut r, &mut sb, 1100, 1200, 200);
        assert_eq!(r.detect_loss(200, 0, &sb).0, 1);
        assert_eq!(r.next_lost(), Some((s(1000), s(1100))));
        r.retransmitted(s(1000), 210);
        assert_eq!(r.next_lost(), None);
        assert_eq!(
            list(&r),
            [1200, 1300, 1400, 1500, 1600, 1700, 1800, 1900, 1000]
        );
        // New data sent after the retransmission is SACKed: the retransmission (sent
        // before it) is lost again. No RTO needed.
        r.sent_new(s(2000), s(2100), 220);
        sack(&mut r, &mut sb, 2000, 2100, 300);
        let (n, _) = r.detect_loss(300, 0, &sb);
        assert_eq!(n, 9, "segments 2..9 and the retransmission of 0");
        assert_eq!(r.stats.lost_retransmits, 1);
        assert_eq!(r.next_lost(), Some((s(1000), s(1100))));
    }

    #[test]
    fn retransmission_acked_for_the_original_is_not_an_rtt_sample() {
        let mut r = sent_ten();
        let mut sb = Scoreboard::default();
        r.sample_min_rtt(50, 0);
        sack(&mut r, &mut sb, 1100, 1200, 200);
        r.detect_loss(200, 0, &sb);
        r.retransmitted(s(1000), 210);
        // The ACK comes 5 µs after the retransmission: less than min_RTT, so it was for
        // the original; RACK.segment stays.
        r.begin_ack();
        r.on_cum_ack(s(1200), &ctx(215));
        r.end_ack();
        assert_eq!((r.xmit, r.end_seq), (110, s(1200)));
    }

    #[test]
    fn reordering_is_seen_and_widens_the_window() {
        let mut r = sent_ten();
        let mut sb = Scoreboard::default();
        r.sample_min_rtt(40, 0);
        sack(&mut r, &mut sb, 1500, 1600, 200);
        assert!(!r.reordering_seen);
        assert_eq!(r.reo_wnd(false, Some(100)), 10, "min_RTT / 4");
        assert_eq!(
            r.reo_wnd(true, Some(100)),
            0,
            "in recovery, no reordering seen"
        );
        // Segment 2, never retransmitted, delivered below the highest delivered.
        sack(&mut r, &mut sb, 1200, 1300, 210);
        assert!(r.reordering_seen);
        assert_eq!(r.reo_wnd(true, Some(100)), 10);
        // A D-SACK grows the window by min_RTT / 4 per round, bounded by SRTT.
        r.update_reo_wnd(true, s(1000), s(2000), false);
        assert_eq!(r.reo_wnd(false, Some(100)), 20);
        r.update_reo_wnd(true, s(1000), s(2000), false);
        assert_eq!(r.reo_wnd(false, Some(100)), 20, "once per round");
        r.update_reo_wnd(true, s(2000), s(3000), false);
        assert_eq!(r.reo_wnd(false, Some(25)), 25, "bounded by SRTT");
        for _ in 0..REO_WND_PERSIST {
            r.update_reo_wnd(false, s(3000), s(3000), true);
        }
        assert_eq!(r.reo_wnd(false, Some(100)), 10, "reset after 16 recoveries");
    }

    #[test]
    fn rto_marks_the_head_and_the_old_ones() {
        let mut r = sent_ten();
        let sb = Scoreboard::default();
        r.rtt = 50;
        // At 175 with RACK.rtt 50: sent at or before 125 is lost, and the head anyway.
        r.mark_lost_on_rto(175, 0, &sb);
        assert_eq!(r.lost_bytes(), 300);
        assert_eq!(list(&r)[0], 1300);
        r.mark_all_lost(&sb);
        assert_eq!(r.lost_bytes(), 1000);
        assert!(list(&r).is_empty());
    }

    #[test]
    fn undo_puts_lost_segments_back_in_flight_in_order() {
        let mut r = sent_ten();
        let mut sb = Scoreboard::default();
        sack(&mut r, &mut sb, 1900, 2000, 300);
        r.detect_loss(300, 0, &sb);
        r.retransmitted(s(1000), 310);
        r.undo();
        assert_eq!(r.next_lost(), None);
        assert_eq!(
            list(&r),
            [1100, 1200, 1300, 1400, 1500, 1600, 1700, 1800, 1000]
        );
        assert!(r.reordering_seen);
    }

    #[test]
    fn partial_sack_and_ack_keep_the_lost_bytes() {
        let mut r = sent_ten();
        let mut sb = Scoreboard::default();
        sack(&mut r, &mut sb, 1500, 1600, 200);
        r.detect_loss(200, 0, &sb);
        assert_eq!(r.lost_bytes(), 500);
        // Half of segment 1 SACKed: it is still lost, for 50 bytes.
        sack(&mut r, &mut sb, 1150, 1200, 210);
        assert_eq!(r.lost_bytes(), 450);
        // A cumulative ACK into segment 0.
        r.on_cum_ack(s(1050), &ctx(220));
        assert_eq!(r.lost_bytes(), 400);
        r.on_cum_ack(s(1600), &ctx(230));
        assert_eq!(r.lost_bytes(), 0);
        assert_eq!(r.next_lost(), None);
    }

    #[test]
    fn a_full_log_takes_no_new_data() {
        let mut r = Rack::new(s(0));
        let n = u32::try_from(MAX_SEGS).unwrap();
        for k in 0..n - 2 {
            r.sent_new(s(k), s(k + 1), 1);
        }
        assert!(!r.is_full(), "room for a segment and its FIN");
        r.sent_new(s(n - 2), s(n - 1), 1);
        assert!(r.is_full());
        r.sent_new(s(n - 1), s(n), 1);
        r.sent_new(s(n), s(n + 1), 1);
        assert_eq!(r.segs.len(), MAX_SEGS, "never more");
        r.on_cum_ack(s(10), &ctx(2));
        assert!(!r.is_full());
    }

    #[test]
    fn ring_indices_survive_growth_and_wrap() {
        let mut r = Rack::new(s(0));
        r.head_abs = IDX_MASK - 3;
        for k in 0..100u32 {
            r.sent_new(s(k * 10), s(k * 10 + 10), u64::from(k) + 1);
            if k % 3 == 0 {
                r.on_cum_ack(s(k.saturating_sub(1) * 10), &ctx(1000));
            }
        }
        let l = list(&r);
        assert_eq!(l.len(), r.segs.len());
        assert!(l.windows(2).all(|w| w[0] < w[1]));
        r.on_cum_ack(s(1000), &ctx(2000));
        assert!(r.segs.is_empty());
        assert_eq!(r.t_head, NIL);
    }
}
