//! Round-trip time estimation and the retransmission timeout (RFC 6298).

use std::time::Duration;

/// Clock granularity G of RFC 6298 §2: timestamps tick in milliseconds.
const GRANULARITY_US: u64 = 1_000;

#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    /// SRTT and RTTVAR in microseconds; `None` before the first sample.
    srtt_us: Option<u64>,
    rttvar_us: u64,
    /// RTO before backoff, microseconds.
    base_us: u64,
    /// Exponential backoff count (RFC 6298 §5.5).
    backoff: u32,
    min_us: u64,
    max_us: u64,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl RttEstimator {
    pub(crate) fn new(initial: Duration, min: Duration, max: Duration) -> RttEstimator {
        let max_us = us(max).max(1);
        let min_us = us(min).min(max_us);
        RttEstimator {
            srtt_us: None,
            rttvar_us: 0,
            base_us: us(initial).clamp(min_us, max_us),
            backoff: 0,
            min_us,
            max_us,
        }
    }

    /// A new measurement R.
    pub(crate) fn sample(&mut self, r: Duration) {
        let r = us(r).min(self.max_us.saturating_mul(2));
        match self.srtt_us {
            // RFC 6298 §2.2: SRTT <- R, RTTVAR <- R/2.
            None => {
                self.srtt_us = Some(r);
                self.rttvar_us = r / 2;
            }
            // RFC 6298 §2.3: RTTVAR <- (1 - 1/4) * RTTVAR + 1/4 * |SRTT - R'|,
            // SRTT <- (1 - 1/8) * SRTT + 1/8 * R'.
            Some(srtt) => {
                self.rttvar_us = (3 * self.rttvar_us + srtt.abs_diff(r)) / 4;
                self.srtt_us = Some((7 * srtt + r) / 8);
            }
        }
        // RFC 6298 §2.2/2.3: RTO <- SRTT + max (G, K*RTTVAR), K = 4; §2.4/2.5: clamped.
        let srtt = self.srtt_us.unwrap_or(r);
        self.base_us = srtt
            .saturating_add(GRANULARITY_US.max(4 * self.rttvar_us))
            .clamp(self.min_us, self.max_us);
        // A fresh sample ends any backoff (RFC 6298 §5.7 and Karn's algorithm: the sample
        // came from a segment that was not retransmitted).
        self.backoff = 0;
    }

    /// RFC 6298 §5.5: RTO <- RTO * 2, up to the maximum.
    pub(crate) fn back_off(&mut self) {
        self.backoff = self.backoff.saturating_add(1).min(31);
    }

    pub(crate) fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// RFC 6298 §5.7: after a retransmitted SYN, use at least 3 s once data flows, unless
    /// a sample says otherwise.
    pub(crate) fn syn_was_retransmitted(&mut self) {
        if self.srtt_us.is_none() {
            self.base_us = 3_000_000u64.clamp(self.min_us, self.max_us);
        }
    }

    pub(crate) fn rto(&self) -> Duration {
        let v = self
            .base_us
            .checked_shl(self.backoff)
            .filter(|v| v >> self.backoff == self.base_us)
            .unwrap_or(u64::MAX)
            .min(self.max_us);
        Duration::from_micros(v)
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt_us.map(Duration::from_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn est() -> RttEstimator {
        RttEstimator::new(ms(1000), ms(200), ms(60_000))
    }

    #[test]
    fn initial_rto_and_first_sample() {
        let mut e = est();
        assert_eq!(e.rto(), ms(1000));
        assert_eq!(e.srtt(), None);
        e.sample(ms(100));
        // SRTT 100, RTTVAR 50, RTO = 100 + 200 = 300.
        assert_eq!(e.srtt(), Some(ms(100)));
        assert_eq!(e.rto(), ms(300));
    }

    #[test]
    fn smoothing() {
        let mut e = est();
        e.sample(ms(100));
        e.sample(ms(200));
        // RTTVAR = 3/4*50 + 1/4*100 = 62.5; SRTT = 7/8*100 + 1/8*200 = 112.5.
        assert_eq!(e.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(e.rto(), Duration::from_micros(112_500 + 250_000));
    }

    #[test]
    fn floor_ceiling_backoff() {
        let mut e = est();
        e.sample(Duration::from_micros(50));
        assert_eq!(e.rto(), ms(200), "floor");
        e.back_off();
        assert_eq!(e.rto(), ms(400));
        e.back_off();
        assert_eq!(e.rto(), ms(800));
        for _ in 0..40 {
            e.back_off();
        }
        assert_eq!(e.rto(), ms(60_000), "ceiling, no overflow");
        e.sample(Duration::from_micros(50));
        assert_eq!(e.rto(), ms(200), "a new sample resets the backoff");
    }

    #[test]
    fn syn_retransmitted_three_seconds() {
        let mut e = est();
        e.syn_was_retransmitted();
        assert_eq!(e.rto(), ms(3000));
        let mut e = est();
        e.sample(ms(10));
        e.syn_was_retransmitted();
        assert_eq!(e.rto(), ms(200));
    }
}
