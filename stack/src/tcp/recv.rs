//! The receive side: guest payload into the receive ring (in order or ahead of a gap), and
//! the window we advertise.

use super::reassembly::{Insert, Reassembly};
use super::ring::Ring;
use super::SeqNumber;

/// Where a (trimmed, in-window) segment's data went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    /// RCV.NXT advanced by this many bytes (the segment plus any gap it closed).
    InOrder(usize),
    /// Stored beyond a gap.
    OutOfOrder,
    /// Every byte was already held.
    Duplicate,
    /// Out of order and no room (`ooo_buf` or the range list): dropped.
    Dropped,
}

#[derive(Debug)]
pub(crate) struct RecvBuffer {
    pub(crate) ring: Ring,
    pub(crate) ooo: Reassembly,
    /// Soft bound of in-order bytes held (the configured `recv_buf`).
    limit: usize,
    ooo_limit: usize,
}

impl RecvBuffer {
    /// `slack` extra bytes of ring capacity absorb the rounding of a scaled window (at most
    /// one window unit, see [`select_window`]).
    pub(crate) fn new(limit: usize, ooo_limit: usize, slack: usize) -> RecvBuffer {
        RecvBuffer {
            ring: Ring::new(limit.saturating_add(slack)),
            ooo: Reassembly::default(),
            limit,
            ooo_limit,
        }
    }

    /// Bytes the ring may still take in order (soft: `recv_buf` - held).
    pub(crate) fn free(&self) -> usize {
        self.limit.saturating_sub(self.ring.len())
    }

    /// Physical room beyond the in-order tail, slack included.
    pub(crate) fn hard_free(&self, slack: usize) -> usize {
        self.limit
            .saturating_add(slack)
            .saturating_sub(self.ring.len())
    }

    /// Stores `data`, which starts at `seq` with `rcv_nxt <= seq` (the caller trimmed it to
    /// the window), and advances `rcv_nxt` over everything now contiguous.
    pub(crate) fn place(&mut self, rcv_nxt: &mut SeqNumber, seq: SeqNumber, data: &[u8]) -> Placed {
        let Ok(off) = usize::try_from(seq.diff(*rcv_nxt)) else {
            return Placed::Duplicate;
        };
        let len = self.ring.len();
        let need = len.saturating_add(off).saturating_add(data.len());
        let keep = len + self.ooo.extent(*rcv_nxt);
        if !self.ring.reserve(need, keep) {
            // Cannot happen for data within the advertised window; never panic anyway.
            return Placed::Dropped;
        }
        let end = seq + u32::try_from(data.len()).unwrap_or(0);
        if off == 0 {
            let n = self.ring.write_at(len, data);
            let mut nxt = *rcv_nxt + u32::try_from(n).unwrap_or(0);
            if !self.ooo.is_empty() {
                nxt = self.ooo.advance(nxt);
            }
            let advanced = usize::try_from(nxt.diff(*rcv_nxt)).unwrap_or(0);
            self.ring.commit(advanced);
            *rcv_nxt = nxt;
            return Placed::InOrder(advanced);
        }
        let fresh = self.ooo.new_bytes(seq, end);
        if fresh == 0 {
            return Placed::Duplicate;
        }
        if self.ooo.bytes().saturating_add(fresh) > self.ooo_limit {
            return Placed::Dropped;
        }
        match self.ooo.insert(seq, end) {
            Insert::Full => Placed::Dropped,
            Insert::Duplicate => Placed::Duplicate,
            Insert::Stored => {
                self.ring.write_at(len + off, data);
                Placed::OutOfOrder
            }
        }
    }
}

/// The shift we announce in our window scale option: the smallest that can express
/// `recv_buf` (RFC 7323 §2.3: at most 14).
pub(crate) fn window_shift_for(recv_buf: usize) -> u8 {
    let mut shift = 0u8;
    while shift < 14 && (65_535usize << shift) < recv_buf {
        shift += 1;
    }
    shift
}

/// Inputs of the window choice, all in bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowInputs {
    /// Soft free room (recv_buf - held).
    pub(crate) free: usize,
    /// Physical room (ring bound - held).
    pub(crate) hard: usize,
    /// What is left of the window last advertised (right edge - RCV.NXT).
    pub(crate) current: usize,
    pub(crate) shift: u8,
    /// Receiver SWS threshold, RFC 1122 §4.2.3.3: min(RCV.BUFF / 2, Eff.snd.MSS).
    pub(crate) sws: usize,
}

/// The window to advertise, in bytes (a multiple of 2^shift, at most 65535 << shift).
///
/// RFC 9293 §3.8.6.2.2 / RFC 1122 §4.2.3.3: the right edge moves forward only by at least
/// the SWS threshold, and never moves back: when the free room would put it behind the
/// edge already advertised, the old edge is kept (rounded up to a window unit, which the
/// ring's slack of one unit absorbs; if even that does not fit, it rounds down, the
/// sub-unit retraction RFC 7323 §2.4 anticipates).
pub(crate) fn select_window(w: WindowInputs) -> usize {
    let unit = 1usize << w.shift;
    let max = 65_535usize << w.shift;
    let natural = w.free.min(max) / unit * unit;
    let mut win = if natural >= w.current.saturating_add(w.sws.max(1)) {
        natural
    } else {
        w.current
    };
    win = win.div_ceil(unit) * unit;
    if win > w.hard {
        win = w.hard / unit * unit;
    }
    win.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_expresses_the_buffer() {
        assert_eq!(window_shift_for(0), 0);
        assert_eq!(window_shift_for(65_535), 0);
        assert_eq!(window_shift_for(65_536), 1);
        assert_eq!(window_shift_for(4 << 20), 7);
        assert_eq!(window_shift_for(usize::MAX), 14);
    }

    fn w(free: usize, current: usize, shift: u8) -> usize {
        select_window(WindowInputs {
            free,
            hard: free.max(current) + (1 << shift),
            current,
            shift,
            sws: 1460,
        })
    }

    #[test]
    fn window_rounding_and_sws() {
        // Unscaled: exact.
        assert_eq!(w(10_000, 0, 0), 10_000);
        assert_eq!(w(100_000, 0, 0), 65_535);
        // Scaled: rounded down to units of 128.
        assert_eq!(w(4 << 20, 0, 7), 4 << 20);
        assert_eq!(w(4 << 20, 0, 6), 65_535 << 6, "the field's maximum");
        assert_eq!(w(10_000, 0, 7), 9_984);
        // Receiver SWS: growth below min(buf/2, MSS) keeps the old edge.
        assert_eq!(w(9_000, 8_000, 0), 8_000);
        assert_eq!(w(9_460, 8_000, 0), 9_460);
        // Zero window stays closed until a full MSS fits.
        assert_eq!(w(1_000, 0, 0), 0);
        assert_eq!(w(1_460, 0, 0), 1_460);
        // Never shrink the right edge: the old edge is kept, rounded up to a unit.
        assert_eq!(w(500, 3_000, 0), 3_000);
        assert_eq!(w(2_990, 3_000, 7), 3_072);
    }

    #[test]
    fn hard_bound_wins() {
        let win = select_window(WindowInputs {
            free: 0,
            hard: 3_000,
            current: 3_000,
            shift: 7,
            sws: 1460,
        });
        assert_eq!(
            win, 2_944,
            "rounds down when the rounded-up edge would not fit"
        );
    }

    #[test]
    fn place_in_order_out_of_order_and_fill() {
        let mut rb = RecvBuffer::new(1 << 16, 1 << 14, 0);
        let mut nxt = SeqNumber(1000);
        assert_eq!(
            rb.place(&mut nxt, SeqNumber(1000), b"hello"),
            Placed::InOrder(5)
        );
        assert_eq!(nxt, SeqNumber(1005));
        assert_eq!(
            rb.place(&mut nxt, SeqNumber(1010), b"world"),
            Placed::OutOfOrder
        );
        assert_eq!(
            rb.place(&mut nxt, SeqNumber(1010), b"world"),
            Placed::Duplicate
        );
        assert_eq!(rb.ooo.bytes(), 5);
        assert_eq!(
            rb.place(&mut nxt, SeqNumber(1005), b", ..."),
            Placed::InOrder(10)
        );
        assert_eq!(nxt, SeqNumber(1015));
        let [a, b] = rb.ring.slices(0, rb.ring.len());
        assert_eq!([a, b].concat(), b"hello, ...world");
        assert!(rb.ooo.is_empty());
    }

    #[test]
    fn ooo_bound_drops() {
        let mut rb = RecvBuffer::new(1 << 16, 100, 0);
        let mut nxt = SeqNumber(0);
        assert_eq!(
            rb.place(&mut nxt, SeqNumber(10), &[1; 100]),
            Placed::OutOfOrder
        );
        assert_eq!(rb.place(&mut nxt, SeqNumber(200), &[1; 1]), Placed::Dropped);
        assert_eq!(
            rb.place(&mut nxt, SeqNumber(0), &[1; 10]),
            Placed::InOrder(110)
        );
    }
}
