//! Token-bucket rate limiting, keyed (per session, per client address). The bucket is plain
//! data driven by an explicit clock so it is tested without sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sustained rate and burst of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.updated = now;
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if rate.per_second <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_secs_f64(
            (1.0 - self.tokens) / rate.per_second,
        ))
    }

    /// A bucket that has refilled completely carries no state worth keeping.
    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut probe = self.clone();
        probe.refill(rate, now);
        probe.tokens >= f64::from(rate.burst)
    }
}

/// One bucket per key, created full on first use. Full buckets are dropped when the map grows,
/// so memory follows the number of recently active keys.
pub struct KeyedLimiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

const PRUNE_ABOVE: usize = 4096;

impl<K: Eq + Hash + Clone> KeyedLimiter<K> {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let rate = self.rate;
            buckets.retain(|_, bucket| !bucket.is_full(rate, now));
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::full(self.rate, now))
            .try_take(self.rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 2.0,
        burst: 3,
    };

    #[test]
    fn burst_then_refill_at_the_sustained_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(RATE, t0);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(RATE, t0), Ok(()));
        }
        let wait = bucket.try_take(RATE, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(
            bucket
                .try_take(RATE, t0 + Duration::from_millis(499))
                .is_err()
        );
        assert_eq!(
            bucket.try_take(RATE, t0 + Duration::from_millis(500)),
            Ok(())
        );
        // Long idle refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(RATE, later), Ok(()));
        }
        assert!(bucket.try_take(RATE, later).is_err());
    }

    #[test]
    fn keys_are_limited_independently() {
        let t0 = Instant::now();
        let limiter = KeyedLimiter::new(Rate {
            per_second: 1.0,
            burst: 1,
        });
        assert!(limiter.check(&"a", t0).is_ok());
        assert!(limiter.check(&"a", t0).is_err());
        assert!(limiter.check(&"b", t0).is_ok());
        assert!(limiter.check(&"a", t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn zero_rate_never_refills() {
        let t0 = Instant::now();
        let rate = Rate {
            per_second: 0.0,
            burst: 1,
        };
        let mut bucket = TokenBucket::full(rate, t0);
        assert!(bucket.try_take(rate, t0).is_ok());
        assert!(
            bucket
                .try_take(rate, t0 + Duration::from_secs(1000))
                .is_err()
        );
    }

    #[test]
    fn refilled_buckets_are_pruned_and_drained_ones_kept() {
        let t0 = Instant::now();
        let limiter = KeyedLimiter::new(Rate {
            per_second: 1.0,
            burst: 1,
        });
        for key in 0..=PRUNE_ABOVE {
            assert!(limiter.check(&key, t0).is_ok());
        }
        let len = || limiter.buckets.lock().map(|b| b.len()).unwrap_or_default();
        assert_eq!(len(), PRUNE_ABOVE + 1);
        // Drain one key again just before pruning: it must survive.
        let later = t0 + Duration::from_secs(100);
        assert!(limiter.check(&0, later).is_ok());
        assert!(limiter.check(&usize::MAX, later).is_ok());
        assert_eq!(len(), 2);
        assert!(limiter.check(&0, later).is_err());
    }
}
