//! How watches retry after an error, for the controller's and the router's caches.
//!
//! kube-runtime's default back-off (0.8 s doubling to 30 s, as client-go) leaves a cache stale for
//! up to half a minute after an API server restart; sessions created meanwhile wait that long.
//! [`WatchBackoff`] starts at 0.5 s and doubles up to 5 s: the load on a recovering API server
//! stays small (a handful of watches per replica) while recovery takes seconds.
//!
//! A restarted API server no longer knows the resource versions watches resume from, and answers
//! the first watch after the outage with 410 Gone. The watcher has then already gone back to
//! listing; [`watch_with_backoff`] lets it list at once, as client-go does, instead of adding a
//! back-off on top of the one the outage built up.

use std::fmt::Debug;
use std::future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

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

/// The events of `watcher(api, config)`; errors are retried after [`WatchBackoff`], except an
/// expired resource version (410 Gone), after which the watcher lists again at once.
pub fn watch_with_backoff<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    watcher(api, config)
        .filter(|item| {
            let expired = matches!(item, Err(error) if is_expired(error));
            if expired {
                tracing::debug!(kind = %K::kind(&Default::default()), "watch resource version expired; listing again");
            }
            future::ready(!expired)
        })
        .backoff(WatchBackoff::default())
}

/// Whether the API server said the watch's resource version is too old to resume from.
fn is_expired(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchError(status) if status.code == 410)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_expired_resource_version_skips_the_back_off() {
        let status = |code| {
            let mut status = Box::new(kube::core::Status::default());
            status.code = code;
            status
        };
        assert!(is_expired(&watcher::Error::WatchError(status(410))));
        assert!(!is_expired(&watcher::Error::WatchError(status(500))));
        assert!(!is_expired(&watcher::Error::WatchError(status(403))));
        assert!(!is_expired(&watcher::Error::NoResourceVersion));
    }

    #[test]
    fn backoff_doubles_from_half_a_second_to_five_and_resets() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<u128> = backoff.by_ref().take(7).map(|d| d.as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(BACKOFF_MIN));
    }
}
