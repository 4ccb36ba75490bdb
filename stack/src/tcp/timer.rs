//! The timers a connection keeps (RFC 9293 §3.8): retransmission (which doubles as the
//! persist timer for zero-window probes, the SYN timer and RFC 8985's loss probe timeout),
//! RACK's reordering timer (RFC 8985 §6.2), delayed ACK, and TIME-WAIT. Nothing else: no
//! keepalive, the host side has its own.

use std::time::Instant;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timers {
    /// RTO, zero-window probe, or SYN/SYN-ACK retransmission, depending on the state.
    pub(crate) rtx: Option<Instant>,
    /// An ACK is owed no later than this.
    pub(crate) ack: Option<Instant>,
    /// RACK's reordering timer (RFC 8985 §6.2): a segment's reordering window ends.
    pub(crate) reo: Option<Instant>,
    /// TIME-WAIT ends.
    pub(crate) time_wait: Option<Instant>,
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

pub(crate) fn expired(t: Option<Instant>, now: Instant) -> bool {
    t.is_some_and(|t| t <= now)
}

impl Timers {
    pub(crate) fn next(&self) -> Option<Instant> {
        earliest(
            earliest(earliest(self.rtx, self.ack), self.reo),
            self.time_wait,
        )
    }

    pub(crate) fn clear(&mut self) {
        *self = Timers::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn next_is_the_earliest() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        assert_eq!(t.next(), None);
        t.rtx = Some(t0 + Duration::from_millis(200));
        t.ack = Some(t0 + Duration::from_millis(40));
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(40)));
        t.ack = None;
        t.time_wait = Some(t0 + Duration::from_millis(100));
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(100)));
        assert!(expired(t.time_wait, t0 + Duration::from_millis(100)));
        assert!(!expired(t.time_wait, t0));
        assert!(!expired(None, t0));
        t.clear();
        assert_eq!(t.next(), None);
    }
}
