//! A byte ring that is allocated lazily and grows by doubling up to a bound.
//!
//! Logical offsets count from the head (offset 0 is the oldest byte). `len` bytes are
//! committed; bytes beyond `len` (up to the capacity) may be written ahead of time (the
//! receive side stores out-of-order data there) and committed later without a copy.

/// Smallest allocation: one 64 KiB segment, or a few 1500-byte ones, fits without growth.
const MIN_ALLOC: usize = 16 * 1024;

#[derive(Debug)]
pub(crate) struct Ring {
    buf: Vec<u8>,
    head: usize,
    len: usize,
    max: usize,
}

impl Ring {
    pub(crate) const fn new(max: usize) -> Ring {
        Ring {
            buf: Vec::new(),
            head: 0,
            len: 0,
            max,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Frees the memory (the connection is over).
    pub(crate) fn release(&mut self) {
        *self = Ring::new(self.max);
    }

    /// Physical index of logical offset `off` (`off <= capacity`).
    fn phys(&self, off: usize) -> usize {
        let cap = self.buf.len();
        let p = self.head.saturating_add(off);
        if p >= cap {
            p - cap
        } else {
            p
        }
    }

    /// Makes the capacity at least `need` (false if `need` exceeds the bound), keeping the
    /// first `keep` logical bytes. Grows by doubling so that a connection reallocates only
    /// a logarithmic number of times.
    pub(crate) fn reserve(&mut self, need: usize, keep: usize) -> bool {
        let cap = self.buf.len();
        if need <= cap {
            return true;
        }
        if need > self.max {
            return false;
        }
        let new_cap = need.max(cap.saturating_mul(2)).max(MIN_ALLOC).min(self.max);
        let mut nb = vec![0u8; new_cap];
        let keep = keep.min(cap);
        let [a, b] = self.slices(0, keep);
        let (na, rest) = nb.split_at_mut(a.len());
        na.copy_from_slice(a);
        if let Some(nbb) = rest.get_mut(..b.len()) {
            nbb.copy_from_slice(b);
        }
        self.buf = nb;
        self.head = 0;
        true
    }

    /// Logical bytes `[off, off + n)`, clamped to the capacity, as up to two slices.
    pub(crate) fn slices(&self, off: usize, n: usize) -> [&[u8]; 2] {
        let cap = self.buf.len();
        if n == 0 || off >= cap {
            return [&[], &[]];
        }
        let n = n.min(cap - off);
        let start = self.phys(off);
        let first = n.min(cap - start);
        let a = self.buf.get(start..start + first).unwrap_or_default();
        let b = self.buf.get(..n - first).unwrap_or_default();
        [a, b]
    }

    /// Copies `data` to logical offset `off` (within the capacity); returns bytes written.
    pub(crate) fn write_at(&mut self, off: usize, data: &[u8]) -> usize {
        let cap = self.buf.len();
        if off >= cap {
            return 0;
        }
        let n = data.len().min(cap - off);
        let start = self.phys(off);
        let first = n.min(cap - start);
        let (d1, d2) = data.split_at(first);
        if let Some(dst) = self.buf.get_mut(start..start + first) {
            dst.copy_from_slice(d1);
        }
        if let Some(dst) = self.buf.get_mut(..n - first) {
            if let Some(src) = d2.get(..n - first) {
                dst.copy_from_slice(src);
            }
        }
        n
    }

    /// The uncommitted space after `len`, at most `max` bytes, as up to two slices.
    pub(crate) fn spare_mut(&mut self, max: usize) -> [&mut [u8]; 2] {
        let cap = self.buf.len();
        let n = max.min(cap - self.len.min(cap));
        if n == 0 {
            return [&mut [], &mut []];
        }
        let start = self.phys(self.len);
        let first = n.min(cap - start);
        let second = n - first;
        // The wrapped part [0, second) lies before `start` (it ends at or before the head).
        let (lo, hi) = self.buf.split_at_mut(start);
        let a = hi.get_mut(..first).unwrap_or_default();
        let b = lo.get_mut(..second).unwrap_or_default();
        [a, b]
    }

    /// `n` more bytes (already written beyond `len`) are now part of the data.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len = self.len.saturating_add(n).min(self.buf.len());
    }

    /// Drops the oldest `n` bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.head = self.phys(n);
        self.len -= n;
    }

    /// With nothing stored (not even beyond `len`), restart at the buffer's beginning so
    /// that the next data is contiguous.
    pub(crate) fn rewind_if_empty(&mut self) {
        if self.len == 0 {
            self.head = 0;
        }
    }
}

#[cfg(test)]
// Test data: truncating counters to bytes is the intent.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn collect(s: [&[u8]; 2]) -> Vec<u8> {
        [s[0], s[1]].concat()
    }

    #[test]
    fn lazy_and_bounded() {
        let mut r = Ring::new(40_000);
        assert_eq!(r.capacity(), 0);
        assert!(r.spare_mut(100)[0].is_empty());
        assert!(r.reserve(10, 0));
        assert_eq!(r.capacity(), MIN_ALLOC);
        assert!(!r.reserve(40_001, 0));
        assert!(r.reserve(20_000, 0));
        assert_eq!(r.capacity(), 32_768);
        assert!(r.reserve(33_000, 0));
        assert_eq!(r.capacity(), 40_000);
    }

    #[test]
    fn wraps_and_grows_keeping_order() {
        let mut r = Ring::new(1 << 20);
        r.reserve(MIN_ALLOC, 0);
        let cap = r.capacity();
        // Fill, consume most, then fill across the end.
        let data: Vec<u8> = (0..cap).map(|i| (i % 251) as u8).collect();
        let [a, b] = r.spare_mut(cap);
        assert_eq!(a.len() + b.len(), cap);
        a.copy_from_slice(&data);
        r.commit(cap);
        r.consume(cap - 100);
        let more: Vec<u8> = (0..1000).map(|i| (i % 7) as u8).collect();
        let [a, b] = r.spare_mut(1000);
        // The spare space starts at the buffer's beginning (the data ends at its end).
        assert_eq!((a.len(), b.len()), (1000, 0));
        a.copy_from_slice(&more);
        r.commit(1000);
        assert_eq!(r.len(), 1100);
        let expect = [&data[cap - 100..], &more[..]].concat();
        assert_eq!(collect(r.slices(0, 1100)), expect);
        // Growth keeps the logical order.
        assert!(r.reserve(cap + 1, r.len()));
        assert_eq!(collect(r.slices(0, 1100)), expect);
        assert_eq!(r.slices(0, 1100)[1].len(), 0);
    }

    #[test]
    fn write_ahead_then_commit() {
        let mut r = Ring::new(64);
        r.reserve(64, 0);
        assert_eq!(r.capacity(), 64);
        r.write_at(0, &[1; 60]);
        r.commit(60);
        r.consume(60);
        // Out of order at offset 10, then in order at 0: wraps around the end.
        assert_eq!(r.write_at(10, &[3; 10]), 10);
        assert_eq!(r.write_at(0, &[2; 10]), 10);
        r.commit(20);
        assert_eq!(collect(r.slices(0, 20)), [[2u8; 10], [3u8; 10]].concat());
        assert_eq!(r.write_at(70, &[1]), 0);
        assert_eq!(r.write_at(60, &[9; 10]), 4);
        r.consume(100);
        assert!(r.is_empty());
    }
}
