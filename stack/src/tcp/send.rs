//! The send side's bookkeeping: the SACK scoreboard (RFC 2018, RFC 6675) and congestion
//! control (RFC 5681; RFC 6675 recovery episodes with RFC 6937 Proportional Rate
//! Reduction; undo of spurious reductions, RFC 3522/4015 and D-SACK). Loss detection is in
//! `rack`. The bytes live in the send ring owned by the Tcb.

use super::SeqNumber;

/// Ranges kept on the scoreboard (grown by doubling up to this). A guest reports at most 4
/// blocks per ACK, but they accumulate: random loss over a multi-MiB window leaves hundreds
/// of holes. When full, a block that would need a new range is ignored (we may then
/// retransmit bytes the guest has: wasteful, never wrong). The ranges lie within
/// [SND.UNA, SND.NXT], so sequence order is total on them and binary search works.
pub(crate) const MAX_SACKED: usize = 256;

/// RFC 6675 §2: DupThresh.
pub(crate) const DUP_THRESH: u32 = 3;

fn span(l: SeqNumber, r: SeqNumber) -> u32 {
    u32::try_from(r.diff(l).max(0)).unwrap_or(0)
}

/// SACKed ranges of the send sequence space, above SND.UNA: ascending, disjoint,
/// non-adjacent.
#[derive(Debug, Default)]
pub(crate) struct Scoreboard {
    ranges: Vec<(SeqNumber, SeqNumber)>,
    sacked: u32,
}

impl Scoreboard {
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub(crate) fn sacked_bytes(&self) -> u32 {
        self.sacked
    }

    /// Records a SACK block `[l, r)` the caller clipped to (SND.UNA, SND.NXT]. Returns true
    /// if it SACKed anything new.
    pub(crate) fn insert(&mut self, l: SeqNumber, r: SeqNumber) -> bool {
        if r <= l {
            return false;
        }
        let i = self.ranges.partition_point(|&(_, b)| b < l);
        let j = self.ranges.partition_point(|&(a, _)| a <= r).max(i);
        if i == j {
            if self.ranges.len() >= MAX_SACKED {
                return false;
            }
            self.ranges.insert(i, (l, r));
            self.sacked += span(l, r);
            return true;
        }
        let (a0, _) = self.ranges[i];
        let (_, bj) = self.ranges[j - 1];
        if i + 1 == j && a0 <= l && bj >= r {
            return false;
        }
        let merged = (a0.min(l), bj.max(r));
        let removed: u32 = self.ranges[i..j].iter().map(|&(a, b)| span(a, b)).sum();
        self.ranges.drain(i + 1..j);
        self.ranges[i] = merged;
        self.sacked = self.sacked - removed + span(merged.0, merged.1);
        true
    }

    /// The lowest SACKed byte.
    pub(crate) fn first_left(&self) -> Option<SeqNumber> {
        self.ranges.first().map(|&(l, _)| l)
    }

    /// SND.UNA moved to `una`: forget what it covers.
    pub(crate) fn prune(&mut self, una: SeqNumber) {
        let mut k = 0;
        for r in self.ranges.iter_mut() {
            if r.1 <= una {
                self.sacked -= span(r.0, r.1);
                k += 1;
            } else {
                if r.0 < una {
                    self.sacked -= span(r.0, una);
                    r.0 = una;
                }
                break;
            }
        }
        if k > 0 {
            self.ranges.drain(..k);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
        self.sacked = 0;
    }

    /// The first hole at or after `from` and before `limit`: `[start, end)` with `end` the
    /// next SACKed range or `limit`.
    pub(crate) fn next_hole(
        &self,
        from: SeqNumber,
        limit: SeqNumber,
    ) -> Option<(SeqNumber, SeqNumber)> {
        let mut start = from;
        let k = self.ranges.partition_point(|&(_, b)| b <= from);
        for &(a, b) in self.ranges.get(k..).unwrap_or_default() {
            if b <= start {
                continue;
            }
            if a <= start {
                start = b;
                continue;
            }
            // a > start: the hole is [start, a).
            return (start < limit).then_some((start, a.min(limit)));
        }
        (start < limit).then_some((start, limit))
    }

    /// Bytes in `[a, b)` not SACKed.
    pub(crate) fn unsacked_between(&self, a: SeqNumber, b: SeqNumber) -> u32 {
        let mut n = span(a, b);
        let k = self.ranges.partition_point(|&(_, r)| r <= a);
        for &(l, r) in self.ranges.get(k..).unwrap_or_default() {
            if r <= a {
                continue;
            }
            if l >= b {
                break;
            }
            n = n.saturating_sub(span(l.max(a), r.min(b)));
        }
        n
    }
}

/// Where loss recovery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// No loss being repaired.
    Open,
    /// Fast recovery (RFC 6675 / RFC 6582 episode, RACK-TLP loss detection, RFC 6937 PRR),
    /// until SND.UNA passes `recover`.
    Fast,
    /// After an RTO (or a zero-window stall): what was presumed lost is resent in slow
    /// start, until SND.UNA passes `recover`.
    Loss,
}

/// What a reduction of cwnd changed, to restore it if the retransmissions prove spurious:
/// the Eifel algorithm (RFC 3522 detection with timestamps, RFC 4015 response), or every
/// retransmission of the episode reported as a duplicate by a D-SACK (RFC 2883 §4, RFC
/// 3708; Linux's `undo_retrans`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Undo {
    pub(crate) cwnd: u32,
    pub(crate) ssthresh: u32,
    /// TSval of the first retransmission, once sent.
    pub(crate) tsval: Option<u32>,
    /// The timestamps said the first retransmission was needed (RFC 3522 decided).
    pub(crate) eifel_done: bool,
    /// Segments retransmitted since cwnd was reduced, the span of sequence numbers they
    /// cover (a D-SACK outside it reports a duplicate the network made), and how many
    /// D-SACKs reported them duplicates.
    pub(crate) retrans: u32,
    pub(crate) rtx_lo: SeqNumber,
    pub(crate) rtx_hi: SeqNumber,
    pub(crate) dsacked: u32,
    /// After the episode ended, D-SACKs still count until SND.UNA passes this.
    pub(crate) until: Option<SeqNumber>,
}

impl Undo {
    /// All retransmissions were duplicates: the reduction was spurious.
    pub(crate) fn all_dsacked(&self) -> bool {
        self.retrans > 0 && self.dsacked >= self.retrans
    }

    /// `[s, e)` was retransmitted.
    pub(crate) fn retransmitted(&mut self, s: SeqNumber, e: SeqNumber) {
        if self.retrans == 0 {
            (self.rtx_lo, self.rtx_hi) = (s, e);
        } else {
            self.rtx_lo = self.rtx_lo.min(s);
            self.rtx_hi = self.rtx_hi.max(e);
        }
        self.retrans = self.retrans.saturating_add(1);
    }

    /// A D-SACK for `[l, r)`: counts if it lies within what was retransmitted.
    pub(crate) fn dsack(&mut self, l: SeqNumber, r: SeqNumber, mss: u32) {
        if self.retrans > 0 && l >= self.rtx_lo && r <= self.rtx_hi {
            let segs = span(l, r).div_ceil(mss.max(1)).max(1);
            self.dsacked = self.dsacked.saturating_add(segs);
        }
    }
}

/// A cap that keeps arithmetic far from overflow.
const MAX_CWND: u32 = 1 << 30;

#[derive(Debug, Clone)]
pub(crate) struct Congestion {
    pub(crate) cwnd: u32,
    pub(crate) ssthresh: u32,
    /// Bytes acknowledged towards the next congestion-avoidance increment (RFC 3465).
    acked_acc: u32,
    pub(crate) recovery: Recovery,
    /// RFC 6675 RecoveryPoint: SND.NXT when recovery began.
    pub(crate) recover: SeqNumber,
    pub(crate) dupacks: u32,
    /// RFC 6675 §5 (4.3), RFC 6582 §3.2 (5): the next retransmission goes out regardless
    /// of cwnd (entering recovery, a NewReno partial ACK, an RTO).
    pub(crate) rtx_first: bool,
    /// Set when cwnd was reduced and timestamps are in use.
    pub(crate) undo: Option<Undo>,
    /// RFC 6937 PRR: bytes delivered to the guest and sent by us since recovery began,
    /// and RecoverFS (the flight when it began).
    prr_delivered: u32,
    prr_out: u32,
    recover_fs: u32,
}

impl Congestion {
    /// RFC 6928 initial window: min(10 * MSS, max(2 * MSS, 14600)).
    pub(crate) fn new(mss: u32, una: SeqNumber) -> Congestion {
        Congestion {
            cwnd: (10 * mss).min((2 * mss).max(14_600)),
            ssthresh: MAX_CWND,
            acked_acc: 0,
            recovery: Recovery::Open,
            recover: una,
            dupacks: 0,
            rtx_first: false,
            undo: None,
            prr_delivered: 0,
            prr_out: 0,
            recover_fs: 0,
        }
    }

    pub(crate) fn reset_initial(&mut self, mss: u32, una: SeqNumber) {
        *self = Congestion::new(mss, una);
    }

    /// `acked` new bytes were acknowledged outside fast recovery: RFC 5681 §3.1 slow start
    /// (growing by the bytes acknowledged, as Linux does with stretch ACKs) below ssthresh,
    /// congestion avoidance (one MSS per window, byte counting) above it.
    pub(crate) fn on_ack(&mut self, acked: u32, mss: u32) {
        if self.cwnd < self.ssthresh {
            let room = self.ssthresh - self.cwnd;
            let inc = acked.min(room);
            self.cwnd = self.cwnd.saturating_add(inc);
            let rest = acked - inc;
            if rest == 0 {
                return;
            }
            self.acked_acc = self.acked_acc.saturating_add(rest);
        } else {
            self.acked_acc = self.acked_acc.saturating_add(acked);
        }
        if self.acked_acc >= self.cwnd {
            self.acked_acc -= self.cwnd;
            self.cwnd = self.cwnd.saturating_add(mss);
        }
        self.cwnd = self.cwnd.min(MAX_CWND);
    }

    /// RFC 5681 §3.1 equation (4): ssthresh = max(FlightSize / 2, 2 * SMSS).
    fn halve(flight: u32, mss: u32) -> u32 {
        (flight / 2).max(2 * mss)
    }

    /// Enter fast recovery (RFC 6675 §5 (4), RFC 6937 §3 initialization): ssthresh is
    /// half the flight, which PRR then reaches gradually as ACKs arrive; the first
    /// retransmission goes out at once.
    pub(crate) fn enter_fast(&mut self, una: SeqNumber, nxt: SeqNumber, mss: u32) {
        self.save_undo(una);
        let flight = span(una, nxt);
        self.ssthresh = Self::halve(flight, mss);
        self.acked_acc = 0;
        self.recovery = Recovery::Fast;
        self.recover = nxt;
        self.rtx_first = true;
        self.prr_delivered = 0;
        self.prr_out = 0;
        self.recover_fs = flight.max(1);
    }

    /// RFC 6937 on every ACK in fast recovery: `delivered` bytes reached the guest
    /// (cumulatively acknowledged or newly SACKed) and `pipe` bytes are in flight. Sets cwnd
    /// to pipe + sndcnt: proportional rate reduction while pipe is above ssthresh, the
    /// slow-start reduction bound (PRR-SSRB) below it.
    pub(crate) fn prr_ack(&mut self, delivered: u32, pipe: u32, mss: u32) {
        self.prr_delivered = self.prr_delivered.saturating_add(delivered);
        let ssthresh = u64::from(self.ssthresh);
        let pipe64 = u64::from(pipe);
        let prr_delivered = u64::from(self.prr_delivered);
        let prr_out = u64::from(self.prr_out);
        let recover_fs = u64::from(self.recover_fs.max(1));
        let sndcnt = if pipe64 > ssthresh {
            // CEIL(prr_delivered * ssthresh / RecoverFS) - prr_out
            let target = (prr_delivered * ssthresh).div_ceil(recover_fs);
            target.saturating_sub(prr_out)
        } else {
            let limit = prr_delivered
                .saturating_sub(prr_out)
                .max(u64::from(delivered))
                + u64::from(mss);
            (ssthresh - pipe64).min(limit)
        };
        let cwnd = pipe64.saturating_add(sndcnt).min(u64::from(MAX_CWND));
        self.cwnd = u32::try_from(cwnd).unwrap_or(MAX_CWND).max(mss);
    }

    /// RFC 6937: `n` bytes were sent (new data or retransmissions).
    pub(crate) fn on_sent(&mut self, n: u32) {
        if self.recovery == Recovery::Fast {
            self.prr_out = self.prr_out.saturating_add(n);
        }
    }

    /// RFC 6298 §5.5-5.6 and RFC 5681 §3.1: after an RTO, cwnd = 1 SMSS (loss window),
    /// ssthresh halved on the first expiry for this data, and what is presumed lost is
    /// resent in slow start (RFC 6675 §5.1).
    pub(crate) fn on_rto(&mut self, una: SeqNumber, nxt: SeqNumber, mss: u32, first: bool) {
        if first {
            self.save_undo(una);
            self.ssthresh = Self::halve(span(una, nxt), mss);
        }
        self.cwnd = mss;
        self.acked_acc = 0;
        self.enter_loss(nxt);
    }

    /// RFC 8985 §7.4: a loss probe repaired a loss (the ACK went beyond the probe without
    /// a D-SACK for it): one reduction, as for a recovery episode, without the episode.
    pub(crate) fn tlp_reduction(&mut self, mss: u32) {
        self.ssthresh = Self::halve(self.cwnd, mss);
        self.cwnd = self.cwnd.min(self.ssthresh);
        self.acked_acc = 0;
    }

    fn save_undo(&mut self, una: SeqNumber) {
        self.undo = Some(Undo {
            cwnd: self.cwnd,
            ssthresh: self.ssthresh,
            tsval: None,
            eifel_done: false,
            retrans: 0,
            rtx_lo: una,
            rtx_hi: una,
            dsacked: 0,
            until: None,
        });
    }

    /// RFC 4015 §3.2 response to a spurious retransmission: restore cwnd and ssthresh and
    /// end recovery; what is outstanding is in flight after all.
    pub(crate) fn undo(&mut self) {
        if let Some(u) = self.undo.take() {
            self.cwnd = self.cwnd.max(u.cwnd);
            self.ssthresh = self.ssthresh.max(u.ssthresh);
            self.recovery = Recovery::Open;
            self.dupacks = 0;
            self.rtx_first = false;
        }
    }

    /// RTO recovery without touching cwnd (a zero-window stall): what was sent until
    /// `nxt` is resent.
    pub(crate) fn enter_loss(&mut self, nxt: SeqNumber) {
        self.recovery = Recovery::Loss;
        self.recover = nxt;
        self.dupacks = 0;
        self.rtx_first = true;
    }

    /// SND.UNA reached RecoveryPoint. RFC 6937 §3: cwnd = ssthresh after fast recovery
    /// (PRR brought the flight there, so no burst follows). RFC 6582's min(ssthresh,
    /// FlightSize + SMSS) would leave one segment when the episode ends with little in
    /// flight, and a Linux guest holds its ACK for a single segment for 40 ms.
    pub(crate) fn exit(&mut self, nxt: SeqNumber, mss: u32) {
        if let Some(u) = self.undo.as_mut() {
            // D-SACKs for the last retransmissions come with or after the ACK that ends
            // the episode: they may still show it spurious for one more round trip.
            u.until = Some(nxt);
        }
        if self.recovery == Recovery::Fast {
            self.cwnd = self.ssthresh.max(mss);
        }
        self.recovery = Recovery::Open;
        self.dupacks = 0;
        self.rtx_first = false;
    }
}

#[cfg(test)]
// Test data: truncating counters to bytes is the intent.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    #[test]
    fn scoreboard_insert_prune() {
        let mut sb = Scoreboard::default();
        assert!(sb.insert(s(300), s(400)));
        assert!(sb.insert(s(100), s(200)));
        assert!(!sb.insert(s(120), s(180)), "nothing new");
        assert_eq!(sb.sacked_bytes(), 200);
        assert!(sb.insert(s(200), s(300)));
        assert_eq!(sb.ranges, [(s(100), s(400))]);
        sb.prune(s(150));
        assert_eq!(sb.ranges, [(s(150), s(400))]);
        assert_eq!(sb.sacked_bytes(), 250);
        sb.prune(s(500));
        assert!(sb.is_empty());
        assert_eq!(sb.sacked_bytes(), 0);
    }

    #[test]
    fn holes() {
        let mut sb = Scoreboard::default();
        sb.insert(s(200), s(300));
        sb.insert(s(400), s(500));
        assert_eq!(sb.next_hole(s(100), s(600)), Some((s(100), s(200))));
        assert_eq!(sb.next_hole(s(200), s(600)), Some((s(300), s(400))));
        assert_eq!(sb.next_hole(s(450), s(600)), Some((s(500), s(600))));
        assert_eq!(sb.next_hole(s(100), s(150)), Some((s(100), s(150))));
        assert_eq!(sb.next_hole(s(200), s(300)), None);
        assert_eq!(sb.unsacked_between(s(100), s(600)), 300);
        assert_eq!(sb.unsacked_between(s(250), s(450)), 100);
    }

    #[test]
    fn bounded() {
        let mut sb = Scoreboard::default();
        for i in 0..MAX_SACKED as u32 + 5 {
            sb.insert(s(i * 10), s(i * 10 + 5));
        }
        assert_eq!(sb.ranges.len(), MAX_SACKED);
    }

    #[test]
    fn congestion_growth() {
        let mss = 1000;
        let mut cc = Congestion::new(mss, s(0));
        assert_eq!(cc.cwnd, 10_000);
        cc.on_ack(5_000, mss);
        assert_eq!(cc.cwnd, 15_000, "slow start grows by bytes acked");
        cc.ssthresh = 16_000;
        cc.on_ack(3_000, mss);
        assert_eq!(cc.cwnd, 16_000, "capped at ssthresh, rest accumulates");
        cc.on_ack(14_000, mss);
        assert_eq!(cc.cwnd, 17_000, "one MSS per window in avoidance");
        // IW for a big MSS: 2 segments.
        assert_eq!(Congestion::new(65_000, s(0)).cwnd, 130_000);
    }

    #[test]
    fn recovery_transitions() {
        let mss = 1000;
        let mut cc = Congestion::new(mss, s(0));
        cc.cwnd = 20_000;
        cc.enter_fast(s(0), s(20_000), mss);
        assert_eq!(cc.ssthresh, 10_000);
        assert_eq!(cc.recover, s(20_000));
        assert!(cc.rtx_first);
        cc.exit(s(25_000), mss);
        assert_eq!(cc.cwnd, 10_000, "ssthresh (RFC 6937)");
        cc.on_rto(s(20_000), s(25_000), mss, true);
        assert_eq!((cc.ssthresh, cc.cwnd), (2_500, 1_000));
        assert_eq!(cc.recovery, Recovery::Loss);
        assert_eq!(cc.recover, s(25_000));
    }

    /// RFC 6937 §6 example: ssthresh half of 20 segments; pipe above ssthresh sends one
    /// segment per two delivered, below it catches up by at most one segment more than
    /// delivered.
    #[test]
    fn prr_reduces_proportionally_then_slow_starts() {
        let mss = 1000;
        let mut cc = Congestion::new(mss, s(0));
        cc.cwnd = 20_000;
        cc.enter_fast(s(0), s(20_000), mss);
        // One segment lost, the next three SACKed: pipe 16 segments.
        cc.prr_ack(3_000, 16_000, mss);
        assert_eq!(cc.cwnd, 16_000 + 1_500, "ceil(3000 * 10/20) - 0");
        cc.on_sent(1_000);
        cc.prr_ack(1_000, 16_000, mss);
        assert_eq!(cc.cwnd, 16_000 + 1_000, "ceil(4000 / 2) - 1000");
        cc.on_sent(1_000);
        // Far more delivered (pipe fell to 4 segments): SSRB, at most delivered + MSS.
        cc.prr_ack(2_000, 4_000, mss);
        assert_eq!(cc.cwnd, 4_000 + 5_000, "max(6000 - 2000, 2000) + 1000");
        cc.prr_ack(0, 9_500, mss);
        assert_eq!(cc.cwnd, 10_000, "ssthresh - pipe bounds it");
    }
}
