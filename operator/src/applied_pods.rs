//! The pod this operator applied last for each session, until the watch cache shows a pod.
//!
//! A reconcile reads the session's pod from the watch cache, which lags behind the operator's own
//! writes. The session's new Secret brings a second reconcile moments after the first applied the
//! pod, usually before the cache holds it: that reconcile sees no pod and would apply the same pod
//! again (one request in vain for most new sessions). [`AppliedPods`] remembers, per session, the
//! `p2pcamera.io/pod-hash` of the pod applied and when; [`decide`](crate::controller::decide)
//! does not apply a pod with that hash again while the cache shows no pod, for at most
//! [`APPLIED_POD_MEMORY`]. The entry is dropped as soon as the cache shows a pod of the session
//! (whatever its hash), when that time is over (a pod deleted before the cache ever showed it is
//! then applied again), and when the session is deleted.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use p2pcamera_api::SessionKey;

/// How long an applied pod that the cache does not show yet is taken as there.
pub const APPLIED_POD_MEMORY: Duration = Duration::from_secs(10);

/// The hash of the pod applied last per session, until the watch cache shows a pod.
#[derive(Debug, Default)]
pub struct AppliedPods {
    applied: Mutex<HashMap<SessionKey, (String, Instant)>>,
}

impl AppliedPods {
    fn lock(&self) -> MutexGuard<'_, HashMap<SessionKey, (String, Instant)>> {
        // Every update is a single insert or remove, so a poisoned map is still consistent.
        self.applied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that the pod with `hash` was applied for the session at `at`.
    pub fn applied(&self, key: &SessionKey, hash: &str, at: Instant) {
        self.lock().insert(key.clone(), (hash.to_owned(), at));
    }

    /// The hash of the pod applied for the session that the cache does not show yet (`cached`:
    /// whether the cache holds a pod of the session), when it was applied within
    /// [`APPLIED_POD_MEMORY`] before `now`.
    pub fn unseen(&self, key: &SessionKey, cached: bool, now: Instant) -> Option<String> {
        let mut applied = self.lock();
        match applied.get(key) {
            Some((hash, at)) if !cached && now.duration_since(*at) < APPLIED_POD_MEMORY => {
                Some(hash.clone())
            }
            Some(_) => {
                applied.remove(key);
                None
            }
            None => None,
        }
    }

    /// Forgets sessions for which `keep` is false (deleted sessions).
    pub fn retain(&self, keep: impl Fn(&SessionKey) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SessionKey {
        SessionKey::new("ns", "cam")
    }

    #[test]
    fn an_applied_pod_counts_until_the_cache_shows_a_pod() {
        let pods = AppliedPods::default();
        let at = Instant::now();
        assert_eq!(pods.unseen(&key(), false, at), None, "nothing applied");
        pods.applied(&key(), "h1", at);
        assert_eq!(pods.unseen(&key(), false, at), Some("h1".into()));
        assert_eq!(
            pods.unseen(&key(), false, at + Duration::from_secs(1)),
            Some("h1".into()),
            "asking again keeps it"
        );
        assert_eq!(pods.unseen(&key(), true, at), None, "the cache shows it");
        assert_eq!(pods.unseen(&key(), false, at), None, "and it is forgotten");
    }

    #[test]
    fn an_applied_pod_the_cache_never_shows_is_forgotten_after_a_while() {
        let pods = AppliedPods::default();
        let at = Instant::now();
        pods.applied(&key(), "h1", at);
        assert_eq!(pods.unseen(&key(), false, at + APPLIED_POD_MEMORY), None);
        assert!(pods.lock().is_empty());
    }

    #[test]
    fn sessions_are_independent_and_deleted_ones_are_forgotten() {
        let pods = AppliedPods::default();
        let other = SessionKey::new("ns", "other");
        let at = Instant::now();
        pods.applied(&key(), "h1", at);
        pods.applied(&other, "h2", at);
        assert_eq!(pods.unseen(&other, false, at), Some("h2".into()));
        pods.retain(|k| k != &key());
        assert_eq!(pods.unseen(&key(), false, at), None);
        assert_eq!(pods.unseen(&other, false, at), Some("h2".into()));
    }
}
