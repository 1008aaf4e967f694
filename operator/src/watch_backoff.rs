//! How watches retry after an error, for the controller's and the router's caches.
//!
//! kube-runtime's default back-off (0.8 s doubling to 30 s, as client-go) leaves a cache stale for
//! up to half a minute after an API server restart; sessions created meanwhile wait that long.
//! [`WatchBackoff`] starts at 0.5 s and doubles up to 5 s: the load on a recovering API server
//! stays small (a handful of watches per replica) while recovery takes seconds.

use std::time::Duration;

use kube::runtime::utils::Backoff;

/// First wait after a watch error.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between two attempts while the API server stays away.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Exponential back-off for the router's watches: 0.5 s, 1 s, 2 s, 4 s, 5 s, 5 s, ...; reset once
/// a watch works again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: BACKOFF_MIN }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (current * 2).min(BACKOFF_MAX);
        Some(current)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_to_five_and_resets() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<u128> = backoff.by_ref().take(7).map(|d| d.as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(BACKOFF_MIN));
    }

}
