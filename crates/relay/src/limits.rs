//! Per-connection rate limiting of published events.
//!
//! A token bucket: a connection may burst up to `events_per_minute` events, then publish at
//! that rate on average. Bursts matter for CI: a pipeline step often publishes its results,
//! logs and status in one go and then stays quiet.

use std::time::Instant;

/// Token bucket for one connection's `EVENT`s.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_minute: u32,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket; `per_minute == 0` never limits.
    pub(crate) fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            tokens: f64::from(per_minute),
            last: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub(crate) fn allow(&mut self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let capacity = f64::from(self.per_minute);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * capacity / 60.0).min(capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The configured rate (for messages).
    pub(crate) fn per_minute(&self) -> u32 {
        self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills() {
        let start = Instant::now();
        let mut bucket = RateLimiter::new(60);
        bucket.last = start;
        for _ in 0..60 {
            assert!(bucket.allow_at(start));
        }
        assert!(!bucket.allow_at(start), "bucket is empty after the burst");
        // One token per second at 60/minute.
        assert!(bucket.allow_at(start + Duration::from_millis(1_010)));
        assert!(!bucket.allow_at(start + Duration::from_millis(1_020)));
    }

    #[test]
    fn zero_means_unlimited() {
        let mut bucket = RateLimiter::new(0);
        for _ in 0..10_000 {
            assert!(bucket.allow());
        }
    }
}
