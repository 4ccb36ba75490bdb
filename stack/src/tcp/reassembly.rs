//! Out-of-order bookkeeping for guest data.
//!
//! The bytes themselves are already in the receive ring at their offset beyond the in-order
//! tail; this tracks which sequence ranges above RCV.NXT are present, as a sorted list of
//! disjoint, non-adjacent ranges in a bounded `Vec` (allocated on the first out-of-order
//! segment, grown by doubling, never beyond [`MAX_RANGES`]). All ranges lie within the
//! window above RCV.NXT, so sequence order is a total order on them and binary search works.
//! An in-order segment only looks at the first range. It also remembers which blocks changed most
//! recently, for the SACK option (RFC 2018 §4).

use super::{SackBlock, SackBlocks, SeqNumber};

/// More holes than this and further out-of-order segments that would open a new one are
/// dropped (the sender retransmits them). Random loss of a few percent over a multi-MiB
/// window leaves hundreds of holes.
pub(crate) const MAX_RANGES: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    /// `[left, right)`, ascending, all above RCV.NXT.
    ranges: Vec<(SeqNumber, SeqNumber)>,
    /// Total bytes in `ranges`.
    bytes: usize,
    /// A sequence number inside each recently changed block, most recent first.
    recent: [SeqNumber; SackBlocks::MAX],
    recent_len: usize,
}

fn span(l: SeqNumber, r: SeqNumber) -> usize {
    usize::try_from(r.diff(l).max(0)).unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// Stored (possibly merged with neighbours).
    Stored,
    /// Nothing new: the range was already present.
    Duplicate,
    /// No room for another range.
    Full,
}

impl Reassembly {
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// How many SACK blocks [`sack_blocks`](Self::sack_blocks) returns.
    pub(crate) fn sack_block_count(&self) -> usize {
        self.ranges.len().min(SackBlocks::MAX)
    }

    /// Out-of-order bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of ring space in use beyond the in-order tail (up to the highest range end).
    pub(crate) fn extent(&self, rcv_nxt: SeqNumber) -> usize {
        self.ranges.last().map_or(0, |&(_, r)| span(rcv_nxt, r))
    }

    /// Bytes of `[l, r)` not yet held.
    pub(crate) fn new_bytes(&self, l: SeqNumber, r: SeqNumber) -> usize {
        let mut n = span(l, r);
        for &(a, b) in &self.ranges {
            if b <= l {
                continue;
            }
            if a >= r {
                break;
            }
            n = n.saturating_sub(span(a.max(l), b.min(r)));
        }
        n
    }

    /// Records `[l, r)` (both above RCV.NXT, l < r) as present.
    pub(crate) fn insert(&mut self, l: SeqNumber, r: SeqNumber) -> Insert {
        if r <= l {
            return Insert::Duplicate;
        }
        // First range that ends at or after l (touching ranges merge) ...
        let i = self.ranges.partition_point(|&(_, b)| b < l);
        // ... and the first one starting beyond r.
        let j = self.ranges.partition_point(|&(a, _)| a <= r).max(i);
        if i == j {
            if self.ranges.len() >= MAX_RANGES {
                return Insert::Full;
            }
            self.ranges.insert(i, (l, r));
            self.bytes += span(l, r);
        } else {
            let (a0, _) = self.ranges[i];
            let (_, bj) = self.ranges[j - 1];
            if i + 1 == j && a0 <= l && bj >= r {
                self.touch(l);
                return Insert::Duplicate;
            }
            let merged = (a0.min(l), bj.max(r));
            let removed: usize = self.ranges[i..j].iter().map(|&(a, b)| span(a, b)).sum();
            self.ranges.drain(i + 1..j);
            self.ranges[i] = merged;
            self.bytes = self.bytes - removed + span(merged.0, merged.1);
        }
        self.touch(l);
        Insert::Stored
    }

    /// RCV.NXT reached `nxt`: drops ranges at or below it and returns how far the in-order
    /// data now extends (the end of a range that started at or before `nxt`).
    pub(crate) fn advance(&mut self, nxt: SeqNumber) -> SeqNumber {
        let mut end = nxt;
        let mut k = 0;
        for &(a, b) in &self.ranges {
            if a > end {
                break;
            }
            end = end.max(b);
            self.bytes -= span(a, b);
            k += 1;
        }
        if k > 0 {
            self.ranges.drain(..k);
        }
        end
    }

    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
        self.bytes = 0;
        self.recent_len = 0;
    }

    fn touch(&mut self, seq: SeqNumber) {
        let n = self.recent_len.min(SackBlocks::MAX - 1);
        self.recent.copy_within(0..n, 1);
        self.recent[0] = seq;
        self.recent_len = n + 1;
    }

    fn range_of(&self, seq: SeqNumber) -> Option<(SeqNumber, SeqNumber)> {
        let i = self.ranges.partition_point(|&(_, b)| b <= seq);
        self.ranges
            .get(i)
            .copied()
            .filter(|&(a, b)| a <= seq && seq < b)
    }

    /// SACK blocks for the ranges held, the most recently changed first (RFC 2018 §4), then
    /// the highest ones.
    pub(crate) fn sack_blocks(&self) -> SackBlocks {
        let mut out = SackBlocks::new();
        let push = |out: &mut SackBlocks, (l, r): (SeqNumber, SeqNumber)| {
            if !out.as_slice().iter().any(|b| b.left == l) {
                out.push(SackBlock { left: l, right: r });
            }
        };
        for &seq in &self.recent[..self.recent_len] {
            if let Some(range) = self.range_of(seq) {
                push(&mut out, range);
            }
        }
        for &range in self.ranges.iter().rev() {
            if out.len() >= SackBlocks::MAX {
                break;
            }
            push(&mut out, range);
        }
        out
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

    fn ranges(r: &Reassembly) -> Vec<(u32, u32)> {
        r.ranges.iter().map(|&(a, b)| (a.0, b.0)).collect()
    }

    #[test]
    fn insert_merge_advance() {
        let mut r = Reassembly::default();
        assert_eq!(r.insert(s(200), s(300)), Insert::Stored);
        assert_eq!(r.insert(s(400), s(500)), Insert::Stored);
        assert_eq!(r.insert(s(250), s(280)), Insert::Duplicate);
        assert_eq!(ranges(&r), [(200, 300), (400, 500)]);
        assert_eq!(r.bytes(), 200);
        assert_eq!(r.new_bytes(s(150), s(450)), 150);
        // Touching ranges merge.
        assert_eq!(r.insert(s(300), s(400)), Insert::Stored);
        assert_eq!(ranges(&r), [(200, 500)]);
        assert_eq!(r.bytes(), 300);
        assert_eq!(r.insert(s(600), s(700)), Insert::Stored);
        assert_eq!(r.insert(s(150), s(800)), Insert::Stored);
        assert_eq!(ranges(&r), [(150, 800)]);
        assert_eq!(r.bytes(), 650);
        assert_eq!(r.extent(s(100)), 700);
        assert_eq!(r.advance(s(120)), s(120), "gap remains");
        assert_eq!(r.advance(s(150)), s(800));
        assert!(r.is_empty());
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn bounded_ranges() {
        let mut r = Reassembly::default();
        for i in 0..MAX_RANGES as u32 {
            assert_eq!(r.insert(s(i * 10 + 1), s(i * 10 + 5)), Insert::Stored);
        }
        assert_eq!(r.insert(s(10_000), s(10_005)), Insert::Full);
        // Merging into an existing range still works when full.
        assert_eq!(r.insert(s(5), s(11)), Insert::Stored);
        assert_eq!(r.ranges.len(), MAX_RANGES - 1);
    }

    #[test]
    fn wraps_around_zero() {
        let mut r = Reassembly::default();
        assert_eq!(r.insert(s(u32::MAX - 10), s(5)), Insert::Stored);
        assert_eq!(r.insert(s(5), s(20)), Insert::Stored);
        assert_eq!(ranges(&r), [(u32::MAX - 10, 20)]);
        assert_eq!(r.bytes(), 31);
        assert_eq!(r.advance(s(u32::MAX - 20)), s(u32::MAX - 20));
        assert_eq!(r.advance(s(u32::MAX - 10)), s(20));
    }

    #[test]
    fn sack_blocks_most_recent_first() {
        let mut r = Reassembly::default();
        r.insert(s(100), s(200));
        r.insert(s(300), s(400));
        r.insert(s(500), s(600));
        let b = r.sack_blocks();
        let firsts: Vec<u32> = b.as_slice().iter().map(|b| b.left.0).collect();
        assert_eq!(firsts, [500, 300, 100]);
        r.insert(s(200), s(250));
        let b = r.sack_blocks();
        assert_eq!(
            b.as_slice()[0],
            SackBlock {
                left: s(100),
                right: s(250)
            }
        );
        assert_eq!(b.len(), 3);
        // Five ranges: four blocks, recent ones first, then the highest.
        r.insert(s(700), s(800));
        r.insert(s(900), s(1000));
        let firsts: Vec<u32> = r
            .sack_blocks()
            .as_slice()
            .iter()
            .map(|b| b.left.0)
            .collect();
        assert_eq!(firsts, [900, 700, 100, 500]);
    }
}
