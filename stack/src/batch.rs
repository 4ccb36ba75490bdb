//! Frames back to back in one buffer.
//!
//! A shard or the gateway appends outgoing frames here and the link writes them in one
//! batched call. `clear` keeps both allocations, so a warm batch allocates nothing per frame.

/// Many frames back to back in one buffer, no allocation per frame once warm.
#[derive(Clone, Debug, Default)]
pub struct FrameBatch {
    data: Vec<u8>,
    /// End offset of each frame in `data`; frame `i` starts at `ends[i - 1]` (or 0).
    ends: Vec<usize>,
}

impl FrameBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `bytes` of frame data and `frames` frames before the first reallocation.
    pub fn with_capacity(bytes: usize, frames: usize) -> Self {
        FrameBatch {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(frames),
        }
    }

    /// Appends a copy of `frame`.
    pub fn push(&mut self, frame: &[u8]) {
        self.data.extend_from_slice(frame);
        self.ends.push(self.data.len());
    }

    /// Reserve `len` zeroed bytes for a frame and let `f` fill it in place.
    pub fn push_with(&mut self, len: usize, f: impl FnOnce(&mut [u8])) {
        let start = self.data.len();
        self.data.resize(start + len, 0);
        f(&mut self.data[start..]);
        self.ends.push(self.data.len());
    }

    /// Reserve `max_len` zeroed bytes and let `f` build a frame in them, returning its real
    /// length (clamped to `max_len`); on `Err` nothing is added. Suits a builder that may fail
    /// or a socket read whose size is known only afterwards.
    pub fn try_push_with<E>(
        &mut self,
        max_len: usize,
        f: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let start = self.data.len();
        self.data.resize(start + max_len, 0);
        let r = f(&mut self.data[start..]);
        self.seal(start, r)
    }

    /// Like [`FrameBatch::try_push_with`] for a frame of `head_len` header bytes (zeroed)
    /// followed by `payload`, copied once and never zero-filled first; `f` writes the header
    /// into the whole frame (and may checksum it) and returns its length.
    pub fn try_push_parts<E>(
        &mut self,
        head_len: usize,
        payload: [&[u8]; 2],
        f: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let start = self.data.len();
        self.data.resize(start + head_len, 0);
        self.data.extend_from_slice(payload[0]);
        self.data.extend_from_slice(payload[1]);
        let r = f(&mut self.data[start..]);
        self.seal(start, r)
    }

    /// Ends the frame begun at `start` at the length `r` gives, or removes it.
    fn seal<E>(&mut self, start: usize, r: Result<usize, E>) -> Result<usize, E> {
        match r {
            Ok(n) => {
                let max_len = self.data.len() - start;
                let n = n.min(max_len);
                self.data.truncate(start + n);
                self.ends.push(self.data.len());
                Ok(n)
            }
            Err(e) => {
                self.data.truncate(start);
                Err(e)
            }
        }
    }

    /// Shrink the frame just pushed to `len` bytes (no-op if it is not longer).
    pub fn truncate_last(&mut self, len: usize) {
        let start = self.last_start();
        if let Some(end) = self.ends.last_mut() {
            if start + len < *end {
                *end = start + len;
                self.data.truncate(start + len);
            }
        }
    }

    fn last_start(&self) -> usize {
        match self.ends.len() {
            0 | 1 => 0,
            n => self.ends[n - 2],
        }
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Forget all frames, keep the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = match i {
            0 => 0,
            _ => *self.ends.get(i - 1)?,
        };
        self.data.get(start..end)
    }

    pub fn last(&self) -> Option<&[u8]> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let frame = self.data.get(start..end).unwrap_or_default();
            start = end;
            frame
        })
    }

    /// Total bytes of all frames.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_iter_truncate() {
        let mut b = FrameBatch::with_capacity(64, 4);
        assert!(b.is_empty());
        assert_eq!(b.last(), None);
        b.truncate_last(0); // no frame: no-op
        b.push(b"one");
        b.push_with(5, |f| {
            assert_eq!(f, &[0; 5]);
            f.copy_from_slice(b"twooo");
        });
        b.truncate_last(3);
        b.truncate_last(10); // not longer: no-op
        b.push(b"");
        b.push(b"four");
        assert_eq!(b.len(), 4);
        assert_eq!(b.bytes(), 10);
        let v: Vec<&[u8]> = b.iter().collect();
        assert_eq!(v, vec![&b"one"[..], b"two", b"", b"four"]);
        assert_eq!(b.get(1), Some(&b"two"[..]));
        assert_eq!(b.get(2), Some(&b""[..]));
        assert_eq!(b.get(4), None);
        assert_eq!(b.last(), Some(&b"four"[..]));
        b.truncate_last(1);
        assert_eq!(b.last(), Some(&b"f"[..]));
    }

    #[test]
    fn try_push_with() {
        let mut b = FrameBatch::new();
        b.push(b"x");
        let r: Result<usize, ()> = b.try_push_with(100, |f| {
            f[..2].copy_from_slice(b"ok");
            Ok(2)
        });
        assert_eq!(r, Ok(2));
        let r: Result<usize, &str> = b.try_push_with(100, |f| {
            f[0] = 9;
            Err("no")
        });
        assert_eq!(r, Err("no"));
        let r: Result<usize, ()> = b.try_push_with(3, |_| Ok(1000));
        assert_eq!(r, Ok(3));
        let v: Vec<&[u8]> = b.iter().collect();
        assert_eq!(v, vec![&b"x"[..], b"ok", &[0, 0, 0]]);
    }

    #[test]
    fn try_push_parts() {
        let mut b = FrameBatch::new();
        b.push(b"x");
        let n = b
            .try_push_parts(3, [b"ab", b"cd"], |buf| {
                assert_eq!(buf, &[0, 0, 0, b'a', b'b', b'c', b'd']);
                buf[..3].copy_from_slice(b"HDR");
                Ok::<_, ()>(6)
            })
            .unwrap();
        assert_eq!(n, 6);
        assert_eq!(b.get(1), Some(&b"HDRabc"[..]));
        assert!(b.try_push_parts(2, [b"zz", b""], |_| Err(())).is_err());
        assert_eq!(b.len(), 2);
        assert_eq!(b.bytes(), 7);
    }

    #[test]
    fn warm_batch_keeps_capacity() {
        let mut b = FrameBatch::new();
        for _ in 0..10 {
            b.push(&[1; 1500]);
        }
        let (dc, ec) = (b.data.capacity(), b.ends.capacity());
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.bytes(), 0);
        for _ in 0..10 {
            b.push_with(1500, |_| {});
        }
        assert_eq!((b.data.capacity(), b.ends.capacity()), (dc, ec));
    }
}
