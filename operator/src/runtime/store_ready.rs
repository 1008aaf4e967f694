//! Waiting for a watch cache's first full list when several tasks wait at once.
//!
//! kube-runtime 5's `Store::wait_until_ready` keeps the waiters' wake-up in a one-shot channel,
//! which remembers only the last task that polled it: of several tasks waiting on one store, the
//! others are not woken when the list arrives, and a task that nothing else wakes waits forever
//! (the controller's own runner is woken by every watch event, so it recovers; the warm-pool keeper
//! and the sweeper are not). [`store_ready`] asks again every [`READY_POLL`], so a missed wake-up
//! costs at most that.

use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

use kube::Resource;
use kube::runtime::reflector::Store;
use kube::runtime::reflector::store::WriterDropped;

/// How often a waiter looks at the store again.
pub const READY_POLL: Duration = Duration::from_millis(200);

/// Waits until `store` holds its first full list; an error when its writer is gone.
pub async fn store_ready<K>(store: &Store<K>) -> Result<(), WriterDropped>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone + Debug,
{
    loop {
        if let Ok(ready) = tokio::time::timeout(READY_POLL, store.wait_until_ready()).await {
            return ready;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::reflector;
    use kube::runtime::watcher;

    #[tokio::test]
    async fn every_waiter_sees_the_store_ready() {
        let (store, mut writer) = reflector::store::<Pod>();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store_ready(&store).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for waiter in waiters {
            let ready = tokio::time::timeout(Duration::from_secs(2), waiter)
                .await
                .expect("every waiter wakes up")
                .expect("waiter task");
            assert!(ready.is_ok());
        }
    }
}
