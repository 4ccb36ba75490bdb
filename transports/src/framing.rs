//! Frame encodings on the wire and the incremental stream decoder.
//!
//! Streams carry frames behind a length prefix (qemu: `u32` big-endian; hyperkit, stdio and
//! `/connect`: `u16` little-endian). Message transports (seqpacket, datagram, TAP) carry one frame
//! per message with no header. The prefix counts only the frame bytes.

use std::fmt;

/// Frames shorter than an Ethernet header are dropped and counted.
pub const MIN_FRAME: usize = 14;
/// A stream length prefix above this disconnects the link (upstream: 128 KiB).
pub const MAX_STREAM_FRAME: usize = 128 * 1024;

/// How frames are delimited on a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `u32` big-endian length + frame (QEMU stream/socket netdev).
    Qemu,
    /// `u16` little-endian length + frame (hyperkit after the handshake, stdio, `/connect`).
    LenU16Le,
    /// One message = one frame, no header (seqpacket, datagram, TAP).
    Message,
}

impl Framing {
    /// Bytes of length prefix in front of each frame.
    pub fn header_len(self) -> usize {
        match self {
            Framing::Qemu => 4,
            Framing::LenU16Le => 2,
            Framing::Message => 0,
        }
    }

    /// Largest frame this framing can carry to a peer that enforces [`MAX_STREAM_FRAME`].
    pub fn max_frame(self) -> usize {
        match self {
            Framing::Qemu => MAX_STREAM_FRAME,
            Framing::LenU16Le => usize::from(u16::MAX),
            Framing::Message => usize::MAX,
        }
    }
}

/// A stream framing error. Any of these means the stream is out of sync: drop the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// A length prefix announced a frame larger than [`MAX_STREAM_FRAME`].
    TooLong(usize),
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::TooLong(len) => write!(
                f,
                "frame length {len} exceeds the maximum of {MAX_STREAM_FRAME} bytes"
            ),
        }
    }
}

impl std::error::Error for FramingError {}

/// Appends `frame` encoded for `framing` to `out` (header + bytes).
///
/// Returns false and appends nothing when the frame cannot be encoded: over 65535 bytes for
/// `LenU16Le`, over [`MAX_STREAM_FRAME`] for `Qemu` (the peer would drop the link).
pub fn encode_frame(framing: Framing, frame: &[u8], out: &mut Vec<u8>) -> bool {
    if frame.len() > framing.max_frame() {
        return false;
    }
    match framing {
        Framing::Qemu => {
            let Ok(len) = u32::try_from(frame.len()) else {
                return false;
            };
            out.extend_from_slice(&len.to_be_bytes());
        }
        Framing::LenU16Le => {
            let Ok(len) = u16::try_from(frame.len()) else {
                return false;
            };
            out.extend_from_slice(&len.to_le_bytes());
        }
        Framing::Message => {}
    }
    out.extend_from_slice(frame);
    true
}

/// Incremental decoder for the stream framings.
///
/// Owns one receive buffer; `read()` goes into [`spare`](Self::spare), many frames are then taken
/// out of it with [`next_frame`](Self::next_frame) without copying or allocating. The buffer is
/// compacted (the partial frame at its end moved to the front) only when room runs short.
///
/// With `Framing::Message` (meaningless on a stream) every call hands out all buffered bytes as
/// one frame, which is what a message transport read would have produced.
pub struct StreamDecoder {
    framing: Framing,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    runts: u64,
}

impl StreamDecoder {
    /// `capacity` is raised to at least `MAX_STREAM_FRAME + 4` so a largest frame always fits.
    pub fn new(framing: Framing, capacity: usize) -> Self {
        let capacity = capacity.max(MAX_STREAM_FRAME + 4);
        StreamDecoder {
            framing,
            buf: vec![0; capacity],
            start: 0,
            end: 0,
            runts: 0,
        }
    }

    /// The framing this decoder splits.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Bytes received but not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Where the next `read()` goes. Compacts first when the room left is short, so a pending
    /// frame of up to [`MAX_STREAM_FRAME`] always fits. Empty only if a frame announced as
    /// too long is pending (then `next_frame` reports the error).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            let cap = self.buf.len();
            let pending_end = self.pending_len().map(|len| self.start + len);
            let frame_overflows = pending_end.is_some_and(|e| e > cap);
            if frame_overflows || cap - self.end < cap / 2 {
                self.compact();
            }
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`spare`](Self::spare).
    pub fn commit(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.buf.len());
    }

    /// Queues bytes that arrived before the decoder existed (e.g. after an HTTP request head).
    pub fn prefill(&mut self, bytes: &[u8]) {
        if self.buf.len() - self.end < bytes.len() {
            self.compact();
        }
        let need = self.end + bytes.len();
        if need > self.buf.len() {
            // Not the data path: only a caller-supplied leftover larger than the buffer.
            self.buf.resize(need, 0);
        }
        self.buf[self.end..need].copy_from_slice(bytes);
        self.end = need;
    }

    /// Next whole frame, or `None` if more bytes are needed. Frames shorter than [`MIN_FRAME`]
    /// are skipped and counted; a prefix above [`MAX_STREAM_FRAME`] is an error (and stays one).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        Ok(self.next_range()?.map(|(s, e)| &self.buf[s..e]))
    }

    /// [`StreamDecoder::next_frame`], writable in place (a checksum to complete).
    pub fn next_frame_mut(&mut self) -> Result<Option<&mut [u8]>, FramingError> {
        Ok(self.next_range()?.map(|(s, e)| &mut self.buf[s..e]))
    }

    fn next_range(&mut self) -> Result<Option<(usize, usize)>, FramingError> {
        if self.framing == Framing::Message {
            if self.start == self.end {
                return Ok(None);
            }
            let (s, e) = (self.start, self.end);
            self.start = self.end;
            if e - s < MIN_FRAME {
                self.runts += 1;
                return Ok(None);
            }
            return Ok(Some((s, e)));
        }
        let hlen = self.framing.header_len();
        loop {
            let avail = self.end - self.start;
            if avail < hlen {
                return Ok(None);
            }
            let len = self.peek_len();
            if len > MAX_STREAM_FRAME {
                return Err(FramingError::TooLong(len));
            }
            if avail - hlen < len {
                return Ok(None);
            }
            let s = self.start + hlen;
            let e = s + len;
            self.start = e;
            if len < MIN_FRAME {
                self.runts += 1;
                continue;
            }
            return Ok(Some((s, e)));
        }
    }

    /// Frames shorter than [`MIN_FRAME`] skipped so far.
    pub fn runts(&self) -> u64 {
        self.runts
    }

    /// Length prefix at `start`; caller checked that a whole header is buffered.
    fn peek_len(&self) -> usize {
        let b = &self.buf[self.start..];
        match self.framing {
            Framing::Qemu => {
                let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                usize::try_from(v).unwrap_or(usize::MAX)
            }
            Framing::LenU16Le => usize::from(u16::from_le_bytes([b[0], b[1]])),
            Framing::Message => self.end - self.start,
        }
    }

    /// Header + frame bytes of the pending frame, when its header is complete.
    fn pending_len(&self) -> Option<usize> {
        let hlen = self.framing.header_len();
        if self.framing == Framing::Message || self.end - self.start < hlen {
            return None;
        }
        Some(hlen.saturating_add(self.peek_len()))
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| seed.wrapping_add(u8::try_from(i % 251).unwrap()))
            .collect()
    }

    #[test]
    fn encode_qemu_golden() {
        let mut out = Vec::new();
        assert!(encode_frame(Framing::Qemu, &[0xaa; 20], &mut out));
        assert_eq!(&out[..4], &[0, 0, 0, 20]);
        assert_eq!(&out[4..], &[0xaa; 20]);
        out.clear();
        assert!(encode_frame(Framing::Qemu, &vec![1; 0x1_0203], &mut out));
        assert_eq!(&out[..4], &[0x00, 0x01, 0x02, 0x03]);
        assert_eq!(out.len(), 4 + 0x1_0203);
    }

    #[test]
    fn encode_u16le_golden() {
        let mut out = vec![9];
        assert!(encode_frame(Framing::LenU16Le, &[1, 2, 3], &mut out));
        assert_eq!(out, [9, 3, 0, 1, 2, 3]);
        out.clear();
        assert!(encode_frame(Framing::LenU16Le, &vec![7; 0x05dc], &mut out));
        assert_eq!(&out[..2], &[0xdc, 0x05]);
        out.clear();
        assert!(encode_frame(Framing::LenU16Le, &vec![7; 65535], &mut out));
        assert_eq!(&out[..2], &[0xff, 0xff]);
    }

    #[test]
    fn encode_rejects_oversize() {
        let mut out = vec![1, 2];
        assert!(!encode_frame(Framing::LenU16Le, &vec![0; 65536], &mut out));
        assert!(!encode_frame(
            Framing::Qemu,
            &vec![0; MAX_STREAM_FRAME + 1],
            &mut out
        ));
        assert_eq!(out, [1, 2]);
        assert!(encode_frame(Framing::Message, &[5; 3], &mut out));
        assert_eq!(out, [1, 2, 5, 5, 5]);
    }

    fn feed(dec: &mut StreamDecoder, mut bytes: &[u8], chunk: usize, got: &mut Vec<Vec<u8>>) {
        while !bytes.is_empty() {
            let spare = dec.spare();
            let n = chunk.min(spare.len()).min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            dec.commit(n);
            bytes = &bytes[n..];
            while let Some(f) = dec.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
    }

    #[test]
    fn decoder_roundtrip_any_chunking() {
        for framing in [Framing::Qemu, Framing::LenU16Le] {
            let max = if framing == Framing::Qemu {
                MAX_STREAM_FRAME
            } else {
                65535
            };
            let sizes = [14, 60, 1514, 9000, 65535, 14, max, 100, 4000, 15];
            let frames: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| frame(n, u8::try_from(i).unwrap()))
                .collect();
            let mut wire = Vec::new();
            for f in &frames {
                assert!(encode_frame(framing, f, &mut wire));
            }
            for chunk in [1, 3, 1000, 70_000, usize::MAX] {
                let mut dec = StreamDecoder::new(framing, 0);
                let mut got = Vec::new();
                feed(&mut dec, &wire, chunk, &mut got);
                assert_eq!(got, frames, "framing {framing:?} chunk {chunk}");
                assert_eq!(dec.buffered(), 0);
            }
        }
    }

    #[test]
    fn decoder_skips_runts() {
        let mut wire = Vec::new();
        encode_frame(Framing::LenU16Le, &[1, 2, 3], &mut wire);
        encode_frame(Framing::LenU16Le, &[], &mut wire);
        encode_frame(Framing::LenU16Le, &frame(60, 1), &mut wire);
        let mut dec = StreamDecoder::new(Framing::LenU16Le, 0);
        let mut got = Vec::new();
        feed(&mut dec, &wire, usize::MAX, &mut got);
        assert_eq!(got, vec![frame(60, 1)]);
        assert_eq!(dec.runts(), 2);
    }

    #[test]
    fn decoder_too_long() {
        let mut dec = StreamDecoder::new(Framing::Qemu, 0);
        dec.prefill(&(1u32 << 20).to_be_bytes());
        assert_eq!(dec.next_frame(), Err(FramingError::TooLong(1 << 20)));
        assert_eq!(dec.next_frame(), Err(FramingError::TooLong(1 << 20)));
        let mut dec = StreamDecoder::new(Framing::Qemu, 0);
        dec.prefill(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(dec.next_frame(), Err(FramingError::TooLong(0xffff_ffff)));
        // Exactly the maximum is fine.
        let mut dec = StreamDecoder::new(Framing::Qemu, 0);
        dec.prefill(&u32::try_from(MAX_STREAM_FRAME).unwrap().to_be_bytes());
        assert_eq!(dec.next_frame(), Ok(None));
    }

    #[test]
    fn decoder_prefill_then_reads() {
        let mut wire = Vec::new();
        for i in 0..5u8 {
            encode_frame(
                Framing::LenU16Le,
                &frame(100 + usize::from(i), i),
                &mut wire,
            );
        }
        let mut dec = StreamDecoder::new(Framing::LenU16Le, 0);
        dec.prefill(&wire[..150]);
        let mut got = Vec::new();
        while let Some(f) = dec.next_frame().unwrap() {
            got.push(f.to_vec());
        }
        feed(&mut dec, &wire[150..], 7, &mut got);
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], frame(104, 4));
    }

    #[test]
    fn decoder_compacts_for_large_pending_frame() {
        // Fill the buffer so a large frame starts near the end: spare() must make room.
        let cap = MAX_STREAM_FRAME + 4;
        let mut dec = StreamDecoder::new(Framing::Qemu, cap);
        let small = frame(cap - 4 - 4 - 100, 3);
        let big = frame(MAX_STREAM_FRAME, 4);
        let mut wire = Vec::new();
        encode_frame(Framing::Qemu, &small, &mut wire);
        encode_frame(Framing::Qemu, &big, &mut wire);
        let mut got = Vec::new();
        feed(&mut dec, &wire, usize::MAX, &mut got);
        assert_eq!(got, vec![small, big]);
    }

    #[test]
    fn message_framing_on_stream() {
        let mut dec = StreamDecoder::new(Framing::Message, 0);
        dec.prefill(&frame(20, 0));
        assert_eq!(dec.next_frame().unwrap().map(<[u8]>::len), Some(20));
        assert_eq!(dec.next_frame().unwrap(), None);
        dec.prefill(&[1, 2]);
        assert_eq!(dec.next_frame().unwrap(), None);
        assert_eq!(dec.runts(), 1);
    }
}
