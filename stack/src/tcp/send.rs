//! The send side's bookkeeping: the SACK scoreboard (RFC 2018, RFC 6675) and congestion
//! control (RFC 5681 with RFC 6675 loss recovery). The bytes live in the send ring owned by
//! the Tcb.

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

    /// RFC 6675 §4 IsLost: a byte is lost when DupThresh discontiguous SACKed ranges, or
    /// more than (DupThresh - 1) * SMSS SACKed bytes, lie above it. Returns the lowest
    /// SACKed left edge with that much above and at it: every unSACKed byte below it is
    /// lost. `None` when nothing is lost yet.
    pub(crate) fn lost_boundary(&self, mss: u32) -> Option<SeqNumber> {
        let mut bytes = 0u32;
        let mut count = 0u32;
        for &(l, r) in self.ranges.iter().rev() {
            bytes = bytes.saturating_add(span(l, r));
            count += 1;
            if count >= DUP_THRESH || bytes > (DUP_THRESH - 1).saturating_mul(mss) {
                // Everything below this range (and the ranges under it) qualifies; the
                // highest such point is this range's left edge.
                return Some(l);
            }
        }
        None
    }
}

/// Where loss recovery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// No loss being repaired.
    Open,
    /// RFC 6675 / RFC 6582 fast recovery, until SND.UNA passes `recover`.
    Fast,
    /// After an RTO (or a zero-window stall): everything outstanding was presumed lost
    /// and is resent in slow start, until SND.UNA passes `recover`.
    Loss,
}

/// What a reduction of cwnd changed, to restore it if the retransmission proves spurious
/// (the Eifel algorithm, RFC 3522 detection with timestamps, RFC 4015 response).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Undo {
    pub(crate) cwnd: u32,
    pub(crate) ssthresh: u32,
    /// TSval of the first retransmission, once sent.
    pub(crate) tsval: Option<u32>,
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
    /// RFC 6675 HighRxt: retransmissions went up to here.
    pub(crate) high_rxt: SeqNumber,
    /// UnSACKed bytes below this are presumed lost.
    pub(crate) lost_end: SeqNumber,
    pub(crate) dupacks: u32,
    /// RFC 6675 §5 (4.3): the first retransmission goes out regardless of cwnd.
    pub(crate) rtx_first: bool,
    /// Set when cwnd was reduced and timestamps are in use.
    pub(crate) undo: Option<Undo>,
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
            high_rxt: una,
            lost_end: una,
            dupacks: 0,
            rtx_first: false,
            undo: None,
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

    /// RFC 6675 §5 (4): enter fast recovery. The first lost segment is `[una, una + mss)`
    /// at least.
    pub(crate) fn enter_fast(&mut self, una: SeqNumber, nxt: SeqNumber, lost: SeqNumber, mss: u32) {
        self.save_undo();
        let flight = span(una, nxt);
        self.ssthresh = Self::halve(flight, mss);
        self.cwnd = self.ssthresh;
        self.acked_acc = 0;
        self.recovery = Recovery::Fast;
        self.recover = nxt;
        self.high_rxt = una;
        self.lost_end = lost.max(una + mss).min(nxt);
        self.rtx_first = true;
    }

    /// RFC 6298 §5.5-5.6 and RFC 5681 §3.1: after an RTO, cwnd = 1 SMSS (loss window),
    /// ssthresh halved on the first expiry for this data, and everything outstanding is
    /// presumed lost (RFC 6675 §5.1).
    pub(crate) fn on_rto(&mut self, una: SeqNumber, nxt: SeqNumber, mss: u32, first: bool) {
        if first {
            self.save_undo();
            self.ssthresh = Self::halve(span(una, nxt), mss);
        }
        self.cwnd = mss;
        self.acked_acc = 0;
        self.mark_all_lost(una, nxt);
    }

    fn save_undo(&mut self) {
        self.undo = Some(Undo {
            cwnd: self.cwnd,
            ssthresh: self.ssthresh,
            tsval: None,
        });
    }

    /// RFC 4015 §3.2 response to a spurious retransmission: restore cwnd and ssthresh and
    /// end recovery; what is outstanding is in flight after all.
    pub(crate) fn undo(&mut self, una: SeqNumber) {
        if let Some(u) = self.undo.take() {
            self.cwnd = self.cwnd.max(u.cwnd);
            self.ssthresh = self.ssthresh.max(u.ssthresh);
            self.recovery = Recovery::Open;
            self.high_rxt = una;
            self.lost_end = una;
            self.dupacks = 0;
            self.rtx_first = false;
        }
    }

    /// Presume everything outstanding lost without touching cwnd (a zero-window stall).
    pub(crate) fn mark_all_lost(&mut self, una: SeqNumber, nxt: SeqNumber) {
        self.recovery = Recovery::Loss;
        self.recover = nxt;
        self.high_rxt = una;
        self.lost_end = nxt;
        self.dupacks = 0;
        self.rtx_first = true;
    }

    /// SND.UNA reached RecoveryPoint. RFC 6582 §3.2 (3): cwnd = min(ssthresh, FlightSize +
    /// SMSS) after fast recovery, so that no burst follows.
    pub(crate) fn exit(&mut self, una: SeqNumber, nxt: SeqNumber, mss: u32) {
        if self.recovery == Recovery::Fast {
            self.cwnd = self
                .ssthresh
                .min(span(una, nxt).saturating_add(mss))
                .max(mss);
        }
        self.recovery = Recovery::Open;
        self.high_rxt = una;
        self.lost_end = una;
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
    fn is_lost_rule() {
        let mss = 100;
        let mut sb = Scoreboard::default();
        sb.insert(s(200), s(300));
        assert_eq!(sb.lost_boundary(mss), None, "one segment SACKed: not yet");
        sb.insert(s(300), s(400));
        assert_eq!(
            sb.lost_boundary(mss),
            None,
            "2 * SMSS is not more than 2 * SMSS"
        );
        sb.insert(s(400), s(401));
        assert_eq!(sb.lost_boundary(mss), Some(s(200)));
        let mut sb = Scoreboard::default();
        for i in 0..3 {
            sb.insert(s(1000 + i * 100), s(1010 + i * 100));
        }
        assert_eq!(
            sb.lost_boundary(mss),
            Some(s(1000)),
            "three discontiguous blocks"
        );
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
        cc.enter_fast(s(0), s(20_000), s(0), mss);
        assert_eq!((cc.ssthresh, cc.cwnd), (10_000, 10_000));
        assert_eq!(cc.lost_end, s(1000));
        assert_eq!(cc.recover, s(20_000));
        cc.exit(s(20_000), s(25_000), mss);
        assert_eq!(cc.cwnd, 6_000, "min(ssthresh, flight + mss)");
        cc.on_rto(s(20_000), s(25_000), mss, true);
        assert_eq!((cc.ssthresh, cc.cwnd), (2_500, 1_000));
        assert_eq!(cc.recovery, Recovery::Loss);
        assert_eq!(cc.lost_end, s(25_000));
    }
}
