//! The router's watch-backed caches: how a broken watch is retried, and how readiness learns of it.
//!
//! The router answers browsers from its caches, so after an API server outage it must catch up
//! within seconds: its watches retry with [`WatchBackoff`] (0.5 s doubling up to 5 s, every 0.5 s
//! while the API server refuses connections). After any
//! watch error the cache is listed afresh ([`reflect`]); the store keeps answering from its old
//! contents until the new list is complete, so routing goes on meanwhile. "Synced" therefore has one meaning: the last
//! list completed and no error came since. [`WatchHealth`] records that, and the router's `/readyz`
//! answers 503 while a routing cache is not synced (the readiness probe's failure threshold decides
//! how long a broken watch is tolerated before the router leaves its Service).
//!
//! Each cache keeps only what the router reads of its objects: [`reflect`] passes every object
//! through a stripping function before it reaches the store (for session Secrets, that drops the
//! pod's private key).

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::store::Writer;
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

use crate::runtime::watch_backoff::{BACKOFF_MAX, WatchBackoff};

#[derive(Debug, Clone, PartialEq, Eq)]
enum WatchState {
    /// The first list has not completed yet.
    Listing,
    Synced,
    /// The watch failed; the cache is listed again after the back-off.
    Broken {
        error: String,
        since: Instant,
    },
}

/// Whether one watch-backed cache is current.
#[derive(Debug)]
pub struct WatchHealth {
    cache: &'static str,
    state: Mutex<WatchState>,
}

impl WatchHealth {
    pub fn new(cache: &'static str) -> Self {
        Self {
            cache,
            state: Mutex::new(WatchState::Listing),
        }
    }

    /// The cache's name, e.g. `camerasessions`.
    pub fn cache(&self) -> &'static str {
        self.cache
    }

    /// A list completed: the cache is current.
    pub fn synced(&self) {
        *self.lock() = WatchState::Synced;
    }

    /// The watch failed. The time of the first failure is kept while it stays broken.
    pub fn broken(&self, error: String) {
        let mut state = self.lock();
        let since = match &*state {
            WatchState::Broken { since, .. } => *since,
            _ => Instant::now(),
        };
        *state = WatchState::Broken { error, since };
    }

    /// Why the cache cannot be trusted, or `None` when it is current.
    pub fn problem(&self) -> Option<String> {
        match &*self.lock() {
            WatchState::Synced => None,
            WatchState::Listing => Some(format!("{} cache not synced", self.cache)),
            WatchState::Broken { error, since } => Some(format!(
                "{} watch broken for {}s: {error}",
                self.cache,
                since.elapsed().as_secs()
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Drops what no cache of the router reads from any object: annotations (`kubectl apply` copies
/// the whole object into one) and managed fields.
pub fn drop_bookkeeping<K: Resource>(object: &mut K) {
    let metadata = object.meta_mut();
    metadata.annotations = None;
    metadata.managed_fields = None;
}

/// Keeps `writer`'s store in step with the objects `api` and `config` select, forever: lists,
/// watches, and after any error waits for the back-off and lists again. Every object is passed
/// through `strip` before it is stored.
pub async fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    mut writer: Writer<K>,
    health: std::sync::Arc<WatchHealth>,
    strip: fn(&mut K),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let mut backoff = WatchBackoff::default();
    loop {
        let mut events = watcher(api.clone(), config.clone()).modify(strip).boxed();
        let error = loop {
            match events.next().await {
                Some(Ok(event)) => {
                    writer.apply_watcher_event(&event);
                    if matches!(event, watcher::Event::InitDone) {
                        if health.problem().is_some() {
                            tracing::info!(cache = health.cache(), "cache synced");
                        }
                        health.synced();
                        backoff.reset();
                    }
                }
                Some(Err(error)) => {
                    backoff.saw(&error);
                    break error.to_string();
                }
                None => break "watch stream ended".to_owned(),
            }
        };
        let delay = backoff.next().unwrap_or(BACKOFF_MAX);
        tracing::warn!(cache = health.cache(), %error, retry_in = ?delay, "watch broken; listing again");
        health.broken(error);
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reports_listing_broken_and_synced() {
        let health = WatchHealth::new("camerasessions");
        assert_eq!(
            health.problem().as_deref(),
            Some("camerasessions cache not synced")
        );
        health.synced();
        assert_eq!(health.problem(), None);
        health.broken("connection refused".into());
        let first = health.problem().unwrap_or_default();
        assert!(
            first.starts_with("camerasessions watch broken for 0s")
                && first.ends_with("connection refused"),
            "{first}"
        );
        health.broken("still refused".into());
        assert!(
            health
                .problem()
                .is_some_and(|p| p.ends_with("still refused"))
        );
        health.synced();
        assert_eq!(health.problem(), None);
    }
}
