//! Public addresses of nodes, remembered for a while.
//!
//! With `--public-ip-source node` a reconcile of a bound pod needs its node's ExternalIP (else
//! InternalIP) until the pod is Ready with that address in its session's status; from then on the
//! status's address is the one the pod serves, and the node is not read again for it. Node addresses practically never change, so each node is read with one GET
//! and the answer is reused for [`NODE_ADDRESS_TTL`]; a changed address reaches the sessions on
//! that node within that time. A GET per node (rather than a watch of all nodes) keeps the
//! operator's rights to `get nodes`: it needs no `list` or `watch` on nodes, and holds no copy of
//! nodes it has no pods on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;

/// How long a node's address is reused before it is read again.
pub const NODE_ADDRESS_TTL: Duration = Duration::from_secs(60);

/// The address a node's pods advertise: its ExternalIP, else its InternalIP.
pub fn public_address(node: &Node) -> Option<String> {
    let addresses = node.status.as_ref()?.addresses.as_deref()?;
    let pick = |kind: &str| {
        addresses
            .iter()
            .find(|a| a.type_ == kind)
            .map(|a| a.address.clone())
    };
    pick("ExternalIP").or_else(|| pick("InternalIP"))
}

/// Node name -> public address (or none known), each with the time it was read.
#[derive(Debug)]
pub struct NodeAddressCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl NodeAddressCache {
    /// An empty cache whose entries last `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<String>, Instant)>> {
        // Every update is a single insert or remove, so a poisoned map is still consistent.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The remembered address of `node` (`Some(None)`: the node has none) if read less than the
    /// TTL before `now`; `None` when it must be read.
    pub fn get(&self, node: &str, now: Instant) -> Option<Option<String>> {
        let entries = self.lock();
        let (address, read_at) = entries.get(node)?;
        (now.saturating_duration_since(*read_at) < self.ttl).then(|| address.clone())
    }

    /// Remembers what a read of `node` at `now` found.
    pub fn insert(&self, node: &str, address: Option<String>, now: Instant) {
        self.lock().insert(node.to_string(), (address, now));
    }

    /// Drops entries older than the TTL at `now`, so nodes that went away are not kept forever.
    pub fn expire(&self, now: Instant) {
        let ttl = self.ttl;
        self.lock()
            .retain(|_, (_, read_at)| now.saturating_duration_since(*read_at) < ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};

    fn node(addresses: &[(&str, &str)]) -> Node {
        Node {
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(kind, address)| NodeAddress {
                            type_: kind.to_string(),
                            address: address.to_string(),
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn external_ip_wins_over_internal_ip() {
        let both = node(&[
            ("InternalIP", "10.0.0.1"),
            ("Hostname", "n1"),
            ("ExternalIP", "203.0.113.9"),
        ]);
        assert_eq!(public_address(&both).as_deref(), Some("203.0.113.9"));
        let internal = node(&[("Hostname", "n1"), ("InternalIP", "10.0.0.1")]);
        assert_eq!(public_address(&internal).as_deref(), Some("10.0.0.1"));
        assert_eq!(public_address(&node(&[("Hostname", "n1")])), None);
        assert_eq!(public_address(&Node::default()), None);
    }

    #[test]
    fn entries_last_the_ttl_then_must_be_read_again() {
        let cache = NodeAddressCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(cache.get("n1", t0), None);
        cache.insert("n1", Some("203.0.113.9".into()), t0);
        cache.insert("n2", None, t0);
        let later = t0 + Duration::from_secs(59);
        assert_eq!(cache.get("n1", later), Some(Some("203.0.113.9".into())));
        assert_eq!(
            cache.get("n2", later),
            Some(None),
            "a node without addresses is remembered too"
        );
        let expired = t0 + Duration::from_secs(60);
        assert_eq!(cache.get("n1", expired), None);
        cache.insert("n1", Some("203.0.113.10".into()), expired);
        assert_eq!(cache.get("n1", expired), Some(Some("203.0.113.10".into())));
        cache.expire(expired);
        assert_eq!(cache.get("n2", t0), None, "expired entries are dropped");
        assert!(cache.get("n1", expired).is_some(), "fresh entries stay");
    }
}
