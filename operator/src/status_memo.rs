//! The status the operator wrote last for each session, used until the watch cache shows it.
//!
//! A reconcile reads the session, status included, from the watch cache, and the cache lags
//! behind the operator's own writes. The pod deletion that follows a crash loop triggers a
//! reconcile at once, often before the cache holds the `Failed` status written a moment earlier;
//! deciding from the cached `Ready` status would skip the crash backoff and recreate the pod
//! straight away (the same holds for `Idle` after an idle deletion, and for the node kept while a
//! pod is replaced).
//!
//! [`StatusMemo`] remembers, per session, the status last written and the resource versions the
//! session had before that write. While the cached session still has one of those versions, the
//! remembered status is the current one; any other version (the write itself, or a change by
//! someone else) means the cache has caught up, and the memo entry is dropped. Resource versions
//! are only compared for equality: Kubernetes defines no order on them.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::crd::CameraSessionStatus;
use p2pcamera_api::SessionKey;

/// One session's last status write.
#[derive(Debug)]
struct Written {
    status: CameraSessionStatus,
    /// The resource version the write produced.
    version: Option<String>,
    /// Versions of the session older than the write.
    older: Vec<String>,
}

/// The last status written per session, until the watch cache shows it.
#[derive(Debug, Default)]
pub struct StatusMemo {
    written: Mutex<HashMap<SessionKey, Written>>,
}

impl StatusMemo {
    fn lock(&self) -> MutexGuard<'_, HashMap<SessionKey, Written>> {
        // Every update is a single insert or remove, so a poisoned map is still consistent.
        self.written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The session's current status, given the cached session's resource version and status:
    /// the status written last while the cache still shows an older version, else the cached one.
    pub fn current(
        &self,
        key: &SessionKey,
        cached_version: Option<&str>,
        cached_status: Option<&CameraSessionStatus>,
    ) -> CameraSessionStatus {
        let mut written = self.lock();
        if let Some(entry) = written.get(key) {
            if cached_version.is_some_and(|v| entry.older.iter().any(|o| o == v)) {
                return entry.status.clone();
            }
            written.remove(key);
        }
        cached_status.cloned().unwrap_or_default()
    }

    /// Records that `status` was written, producing `version`; `read_versions` are the versions
    /// the reconcile saw before the write (the cached one, and those of its own earlier writes).
    pub fn wrote(
        &self,
        key: &SessionKey,
        read_versions: impl IntoIterator<Item = String>,
        version: Option<String>,
        status: CameraSessionStatus,
    ) {
        let mut written = self.lock();
        // A write while the cache still lags keeps the earlier write's versions older too.
        let mut older = match written.remove(key) {
            Some(previous) => previous.older.into_iter().chain(previous.version).collect(),
            None => Vec::new(),
        };
        older.extend(read_versions);
        written.insert(
            key.clone(),
            Written {
                status,
                version,
                older,
            },
        );
    }

    /// Forgets sessions for which `keep` is false (deleted sessions).
    pub fn retain(&self, keep: impl Fn(&SessionKey) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Phase;

    fn status(phase: Phase) -> CameraSessionStatus {
        CameraSessionStatus {
            phase: Some(phase),
            ..CameraSessionStatus::default()
        }
    }

    fn key() -> SessionKey {
        SessionKey::new("ns", "cam")
    }

    #[test]
    fn cached_status_is_used_when_nothing_was_written() {
        let memo = StatusMemo::default();
        assert_eq!(
            memo.current(&key(), Some("5"), Some(&status(Phase::Ready))),
            status(Phase::Ready)
        );
        assert_eq!(
            memo.current(&key(), None, None),
            CameraSessionStatus::default()
        );
    }

    #[test]
    fn written_status_wins_until_the_cache_shows_the_write() {
        let memo = StatusMemo::default();
        memo.wrote(
            &key(),
            ["5".to_owned()],
            Some("6".into()),
            status(Phase::Failed),
        );
        // The cache still holds version 5 with the Ready status the write replaced.
        assert_eq!(
            memo.current(&key(), Some("5"), Some(&status(Phase::Ready))),
            status(Phase::Failed)
        );
        // Version 6 is the write itself: the cache has caught up, the memo is no longer needed.
        assert_eq!(
            memo.current(&key(), Some("6"), Some(&status(Phase::Failed))),
            status(Phase::Failed)
        );
        assert!(memo.lock().is_empty());
        assert_eq!(
            memo.current(&key(), Some("5"), Some(&status(Phase::Ready))),
            status(Phase::Ready)
        );
    }

    #[test]
    fn a_change_by_someone_else_replaces_the_memo() {
        let memo = StatusMemo::default();
        memo.wrote(
            &key(),
            ["5".to_owned()],
            Some("6".into()),
            status(Phase::Failed),
        );
        assert_eq!(
            memo.current(&key(), Some("9"), Some(&status(Phase::Pending))),
            status(Phase::Pending)
        );
        assert!(memo.lock().is_empty());
    }

    #[test]
    fn writes_in_a_row_keep_every_older_version_older() {
        let memo = StatusMemo::default();
        memo.wrote(
            &key(),
            ["5".to_owned()],
            Some("6".into()),
            status(Phase::Failed),
        );
        // Decided from version 5 again (the cache still lags), after a wake patch made version 7.
        assert_eq!(memo.current(&key(), Some("5"), None), status(Phase::Failed));
        memo.wrote(
            &key(),
            ["5".to_owned(), "7".to_owned()],
            Some("8".into()),
            status(Phase::Pending),
        );
        for lagging in ["5", "6", "7"] {
            assert_eq!(
                memo.current(&key(), Some(lagging), None),
                status(Phase::Pending),
                "{lagging}"
            );
        }
        assert_eq!(
            memo.current(&key(), Some("8"), Some(&status(Phase::Pending))),
            status(Phase::Pending)
        );
        assert!(memo.lock().is_empty());
    }

    #[test]
    fn sessions_are_independent_and_deleted_ones_are_forgotten() {
        let memo = StatusMemo::default();
        let other = SessionKey::new("ns", "other");
        memo.wrote(
            &key(),
            ["5".to_owned()],
            Some("6".into()),
            status(Phase::Failed),
        );
        memo.wrote(
            &other,
            ["1".to_owned()],
            Some("2".into()),
            status(Phase::Idle),
        );
        assert_eq!(
            memo.current(&other, Some("5"), Some(&status(Phase::Ready))),
            status(Phase::Ready)
        );
        assert_eq!(memo.lock().len(), 1);
        memo.retain(|k| k != &key());
        assert!(memo.lock().is_empty());
    }
}
