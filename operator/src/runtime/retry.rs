//! When a session is reconciled again after a failed reconcile.
//!
//! Transient failures (API errors, exhausted ports, ...) are retried per session with exponential
//! backoff: [`FIRST_RETRY`] after the first failure, doubling with each further consecutive
//! failure up to [`MAX_RETRY`]. A successful reconcile resets the session's count. Sessions fail
//! independently: one broken session never slows the retries of another.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

/// Wait after the first failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between retries.
pub const MAX_RETRY: Duration = Duration::from_secs(300);

/// The wait after `failures` consecutive failures (`failures >= 1`; 0 counts as 1).
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    FIRST_RETRY.saturating_mul(1u32 << doublings).min(MAX_RETRY)
}

/// Consecutive failures per key.
#[derive(Debug)]
pub struct RetryBackoff<K> {
    failures: Mutex<HashMap<K, u32>>,
}

impl<K> Default for RetryBackoff<K> {
    fn default() -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Clone + Eq + Hash> RetryBackoff<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, u32>> {
        // Every update is a single insert or remove, so a poisoned map is still consistent.
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a failure of `key` and returns how long to wait before retrying it.
    pub fn failed(&self, key: &K) -> Duration {
        let mut failures = self.lock();
        let count = failures.entry(key.clone()).or_insert(0);
        *count = count.saturating_add(1);
        retry_delay(*count)
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Forgets keys for which `keep` is false (e.g. deleted sessions).
    pub fn retain(&self, keep: impl Fn(&K) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_one_second_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=11).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(0), FIRST_RETRY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn each_key_backs_off_alone_and_success_resets() {
        let backoff = RetryBackoff::default();
        assert_eq!(backoff.failed(&"a"), Duration::from_secs(1));
        assert_eq!(backoff.failed(&"a"), Duration::from_secs(2));
        assert_eq!(backoff.failed(&"a"), Duration::from_secs(4));
        assert_eq!(
            backoff.failed(&"b"),
            Duration::from_secs(1),
            "another key starts at the start"
        );
        backoff.succeeded(&"a");
        assert_eq!(
            backoff.failed(&"a"),
            Duration::from_secs(1),
            "success resets"
        );
        backoff.retain(|k| *k != "b");
        assert_eq!(
            backoff.failed(&"b"),
            Duration::from_secs(1),
            "forgotten key starts again"
        );
    }
}
