//! How watches retry after an error, for the controller's and the router's caches.
//!
//! kube-runtime's default back-off (0.8 s doubling to 30 s, as client-go) leaves a cache stale for
//! up to half a minute after an API server restart; sessions created meanwhile wait that long.
//! [`WatchBackoff`] starts at 0.5 s and doubles up to 5 s: the load on a recovering API server
//! stays small (a handful of watches per replica) while recovery takes seconds. While the API
//! server's port refuses connections (it is restarting: nothing listens, so an attempt costs it
//! nothing), a watch tries again every 0.5 s instead, so it is back within half a second of the
//! API server, not up to 5 s later; a session created right after an outage waited that long.
//!
//! A restarted API server no longer knows the resource versions watches resume from, and answers
//! the first watch after the outage with 410 Gone. The watcher has then already gone back to
//! listing; [`watch_with_backoff`] lets it list at once, as client-go does, instead of adding a
//! back-off on top of the one the outage built up.

use std::fmt::Debug;
use std::future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Exponential back-off for watches: 0.5 s, 1 s, 2 s, 4 s, 5 s, 5 s, ...; reset once a watch
/// works again. After an error that says the API server refused the connection
/// ([`WatchBackoff::saw`]), the next wait is 0.5 s and the doubling does not advance. Clones share
/// what was seen.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
    refused: Arc<AtomicBool>,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_MIN,
            refused: Arc::default(),
        }
    }
}

impl WatchBackoff {
    /// Records the error the next wait is for.
    pub fn saw(&self, error: &watcher::Error) {
        self.refused
            .store(is_connection_refused(error), Ordering::Relaxed);
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.refused.load(Ordering::Relaxed) {
            return Some(BACKOFF_MIN);
        }
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

/// The events of `watcher(api, config)`; errors are retried after [`WatchBackoff`] (every 0.5 s
/// while the API server refuses connections), except an expired resource version (410 Gone),
/// after which the watcher lists again at once.
pub fn watch_with_backoff<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let backoff = WatchBackoff::default();
    let seen = backoff.clone();
    watcher(api, config)
        .filter(move |item| {
            if let Err(error) = item {
                seen.saw(error);
            }
            let expired = matches!(item, Err(error) if is_expired(error));
            if expired {
                tracing::debug!(kind = %K::kind(&Default::default()), "watch resource version expired; listing again");
            }
            future::ready(!expired)
        })
        .backoff(backoff)
}

/// Whether a watch error comes from a refused connection: nothing listens on the API server's
/// port. An answer with an error, a timeout or a broken stream is not one.
fn is_connection_refused(error: &watcher::Error) -> bool {
    let client_error = match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => error,
        _ => return false,
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(client_error);
    while let Some(error) = source {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = error.source();
    }
    false
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
    fn a_refused_connection_is_retried_after_half_a_second_and_other_errors_back_off() {
        let refused = || {
            let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
            kube::Error::Service(Box::new(io))
        };
        let timed_out = || {
            let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
            kube::Error::Service(Box::new(io))
        };
        let answered = || {
            let mut status = Box::new(kube::core::Status::default());
            status.code = 500;
            kube::Error::Api(status)
        };
        assert!(is_connection_refused(&watcher::Error::InitialListFailed(
            refused()
        )));
        assert!(is_connection_refused(&watcher::Error::WatchStartFailed(
            refused()
        )));
        assert!(!is_connection_refused(&watcher::Error::WatchStartFailed(
            timed_out()
        )));
        assert!(!is_connection_refused(&watcher::Error::WatchFailed(
            answered()
        )));

        let mut backoff = WatchBackoff::default();
        let seen = backoff.clone();
        seen.saw(&watcher::Error::WatchFailed(answered()));
        assert_eq!(backoff.next(), Some(BACKOFF_MIN));
        assert_eq!(backoff.next(), Some(BACKOFF_MIN * 2));
        seen.saw(&watcher::Error::WatchStartFailed(refused()));
        let delays: Vec<Duration> = backoff.by_ref().take(5).collect();
        assert_eq!(delays, [BACKOFF_MIN; 5], "every 0.5 s while refused");
        seen.saw(&watcher::Error::WatchStartFailed(timed_out()));
        assert_eq!(
            backoff.next(),
            Some(BACKOFF_MIN * 4),
            "the doubling goes on"
        );
    }

    /// A real client's list against a loopback port nothing listens on fails as refused.
    #[tokio::test]
    async fn a_closed_api_server_port_is_seen_as_refused() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap();
        let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let api = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, "default");
        let error = api.list(&Default::default()).await.unwrap_err();
        assert!(
            is_connection_refused(&watcher::Error::InitialListFailed(error)),
            "a refused connection"
        );
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
