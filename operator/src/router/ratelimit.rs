//! Token-bucket rate limiting, keyed (per session, per client). The bucket is plain data driven
//! by an explicit clock so it is tested without sleeping.
//!
//! Memory follows the number of recently active keys, whatever the clients do: every check looks
//! at the [`SWEEP_PER_CHECK`] buckets that were looked at least recently and drops those that
//! have refilled completely (they carry no state worth keeping), so the work per request is
//! constant; and a limiter never holds more than its `max_keys` buckets (the least recently swept
//! one makes room for a new key).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client_address::canonical;

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

/// The per-client limit's key: an IPv4 client by its address, an IPv6 client by its /64 network.
/// One subscriber usually holds a whole /64 and may pick any address in it, so counting IPv6
/// addresses one by one would give one client billions of budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl From<IpAddr> for ClientKey {
    fn from(address: IpAddr) -> Self {
        match canonical(address) {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !(u128::from(u64::MAX));
                ClientKey(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => ClientKey(v4),
        }
    }
}

/// Buckets examined (and dropped if refilled) per check.
pub const SWEEP_PER_CHECK: usize = 2;
/// Default bound on the keys one limiter holds.
pub const DEFAULT_MAX_KEYS: usize = 65_536;

struct Buckets<K> {
    by_key: HashMap<K, TokenBucket>,
    /// Every key of `by_key` once, least recently swept first.
    sweep: VecDeque<K>,
}

/// One bucket per key, created full on first use.
pub struct KeyedLimiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<Buckets<K>>,
}

impl<K: Eq + Hash + Clone> KeyedLimiter<K> {
    pub fn new(rate: Rate) -> Self {
        Self::with_max_keys(rate, DEFAULT_MAX_KEYS)
    }

    /// A limiter that holds at most `max_keys` buckets (at least one).
    pub fn with_max_keys(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(Buckets {
                by_key: HashMap::new(),
                sweep: VecDeque::new(),
            }),
        }
    }

    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        let mut guard = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Buckets { by_key, sweep } = &mut *guard;
        for _ in 0..SWEEP_PER_CHECK {
            let Some(swept) = sweep.pop_front() else {
                break;
            };
            if by_key
                .get(&swept)
                .is_some_and(|bucket| !bucket.is_full(rate, now))
            {
                sweep.push_back(swept);
            } else {
                by_key.remove(&swept);
            }
        }
        if !by_key.contains_key(key) {
            while by_key.len() >= self.max_keys {
                let Some(evicted) = sweep.pop_front() else {
                    break;
                };
                by_key.remove(&evicted);
            }
            by_key.insert(key.clone(), TokenBucket::full(rate, now));
            sweep.push_back(key.clone());
        }
        by_key
            .get_mut(key)
            .map_or(Ok(()), |bucket| bucket.try_take(rate, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 2.0,
        burst: 3,
    };

    impl<K> KeyedLimiter<K> {
        /// How many buckets the limiter holds.
        fn len(&self) -> usize {
            self.buckets
                .lock()
                .map(|b| b.by_key.len())
                .unwrap_or_default()
        }
    }

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

    fn client(address: &str) -> ClientKey {
        ClientKey::from(address.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_ipv4_clients_by_their_address() {
        assert_eq!(client("2001:db8:1:2::1"), client("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(client("2001:db8:1:2::1"), client("2001:db8:1:3::1"));
        assert_ne!(client("192.0.2.1"), client("192.0.2.2"));
        assert_eq!(client("::ffff:192.0.2.1"), client("192.0.2.1"));

        let t0 = Instant::now();
        let limiter = KeyedLimiter::new(Rate {
            per_second: 1.0,
            burst: 2,
        });
        assert!(limiter.check(&client("2001:db8:1:2::1"), t0).is_ok());
        assert!(limiter.check(&client("2001:db8:1:2::2"), t0).is_ok());
        // A third address in the same /64 finds the shared bucket empty...
        assert!(limiter.check(&client("2001:db8:1:2::3"), t0).is_err());
        // ...the next /64 has its own.
        assert!(limiter.check(&client("2001:db8:1:3::1"), t0).is_ok());
        assert!(limiter.check(&client("192.0.2.1"), t0).is_ok());
        assert!(limiter.check(&client("192.0.2.1"), t0).is_ok());
        assert!(limiter.check(&client("192.0.2.2"), t0).is_ok());
    }

    #[test]
    fn refilled_buckets_are_swept_a_few_per_check_and_drained_ones_kept() {
        let t0 = Instant::now();
        let limiter = KeyedLimiter::new(Rate {
            per_second: 1.0,
            burst: 1,
        });
        for key in 0..100 {
            assert!(limiter.check(&key, t0).is_ok());
        }
        assert_eq!(limiter.len(), 100);
        // All refilled by now: each check drops SWEEP_PER_CHECK of them, no check scans them all.
        let later = t0 + Duration::from_secs(100);
        assert!(limiter.check(&1000, later).is_ok());
        assert_eq!(limiter.len(), 100 - SWEEP_PER_CHECK + 1);
        for _ in 0..60 {
            let _ = limiter.check(&1000, later);
        }
        // Only the drained key is left, and it stays limited.
        assert_eq!(limiter.len(), 1);
        assert!(limiter.check(&1000, later).is_err());
    }

    #[test]
    fn a_full_limiter_makes_room_for_new_keys() {
        let t0 = Instant::now();
        let limiter = KeyedLimiter::with_max_keys(
            Rate {
                per_second: 0.0,
                burst: 1,
            },
            3,
        );
        for key in 0..10 {
            assert!(limiter.check(&key, t0).is_ok(), "new key {key}");
            assert!(limiter.len() <= 3);
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const MAX_KEYS: usize = 16;

        proptest! {
            #![proptest_config(p2pcamera_tests::properties::config())]

            /// Whatever keys arrive and however time passes, a limiter holds at most its bound
            /// of buckets, holds exactly the keys it sweeps, and never lets one key through more
            /// often than its burst plus what the rate refills.
            #[test]
            fn memory_stays_bounded_and_no_key_exceeds_its_budget(
                steps in prop::collection::vec((0u32..64, 0u64..2_000), 1..300),
                rate in 0.0f64..50.0,
                burst in 1u32..5,
            ) {
                let rate = Rate { per_second: rate, burst };
                let limiter = KeyedLimiter::with_max_keys(rate, MAX_KEYS);
                let mut now = Instant::now();
                let start = now;
                let mut allowed: HashMap<u32, u32> = HashMap::new();
                for (key, advance_ms) in steps {
                    now += Duration::from_millis(advance_ms);
                    if limiter.check(&key, now).is_ok() {
                        *allowed.entry(key).or_default() += 1;
                    }
                    let buckets = limiter.buckets.lock().unwrap_or_else(|p| p.into_inner());
                    prop_assert!(buckets.by_key.len() <= MAX_KEYS);
                    prop_assert_eq!(buckets.by_key.len(), buckets.sweep.len());
                    prop_assert!(buckets.sweep.iter().all(|k| buckets.by_key.contains_key(k)));
                }
                // With fewer keys than the bound none is ever evicted, so each stays within budget.
                if allowed.len() <= MAX_KEYS {
                    let elapsed = now.duration_since(start).as_secs_f64();
                    let budget = f64::from(burst) + elapsed * rate.per_second;
                    for (key, count) in allowed {
                        prop_assert!(
                            f64::from(count) <= budget + 1e-9,
                            "key {} allowed {} times, budget {}", key, count, budget
                        );
                    }
                }
            }

            /// A flood of distinct clients, IPv4 or IPv6, never grows the limiter past its bound.
            #[test]
            fn distinct_clients_never_grow_the_limiter_past_its_bound(
                addresses in prop::collection::vec(any::<u128>(), 1..200),
                v4 in any::<bool>(),
            ) {
                let limiter = KeyedLimiter::with_max_keys(
                    Rate { per_second: 0.001, burst: 1 },
                    MAX_KEYS,
                );
                let now = Instant::now();
                for bits in addresses {
                    let address = if v4 {
                        IpAddr::from(std::net::Ipv4Addr::from(bits as u32))
                    } else {
                        IpAddr::from(Ipv6Addr::from(bits))
                    };
                    let _ = limiter.check(&ClientKey::from(address), now);
                    prop_assert!(limiter.len() <= MAX_KEYS);
                }
            }
        }
    }
}
