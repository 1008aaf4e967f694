//! Port allocation: one port per session, used for both signaling (TCP) and media (UDP).
//!
//! Ports come from a configured range and are unique across all live sessions, which implies
//! unique per node. The allocator is in memory behind a mutex, so concurrent reconciles never
//! hand out the same port. It is seeded when the operator becomes leader from each session's
//! `status.udpPort` (and its pod's annotation), and every choice is recorded in both places (the
//! pod's `p2pcamera.io/port` annotation when it is applied, the status right after), so a
//! restarted operator rebuilds the same table.
//!
//! No finalizer is needed: a deleted session's port is reclaimed lazily by [`UdpPortAllocator::allocate`]
//! (and by [`UdpPortAllocator::retain`]) once the session is gone from the operator's cache.
//! The cursor rotates, so a just-released port is the last to be handed out again, which keeps it
//! away from a pod that is still terminating.

use std::collections::{BTreeMap, HashMap, btree_map};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use p2pcamera_api::SessionKey;

/// An inclusive range of ports, written `first-last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (inclusive).
    pub last: u16,
}

impl PortRange {
    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// Number of ports in the range (at least one).
    pub fn port_count(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Errors of port ranges and allocation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    /// The range text is not `first-last` with `1 <= first <= last <= 65535`.
    #[error("invalid port range {0:?}: expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535")]
    InvalidRange(String),
    /// Every port of the range belongs to a live session.
    #[error("all {0} ports of the range are in use")]
    Exhausted(usize),
    /// The port is outside the configured range.
    #[error("port {0} is outside the configured range")]
    OutOfRange(u16),
    /// The port already belongs to another session.
    #[error("port {port} already belongs to {owner}")]
    Taken {
        /// The port asked for.
        port: u16,
        /// The session holding it.
        owner: SessionKey,
    },
}

impl FromStr for PortRange {
    type Err = PortError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || PortError::InvalidRange(text.to_string());
        let (first, last) = text.split_once('-').ok_or_else(invalid)?;
        let first: u16 = first.trim().parse().map_err(|_| invalid())?;
        let last: u16 = last.trim().parse().map_err(|_| invalid())?;
        if first == 0 || first > last {
            return Err(invalid());
        }
        Ok(Self { first, last })
    }
}

#[derive(Debug)]
struct Table {
    by_session: HashMap<SessionKey, u16>,
    by_port: BTreeMap<u16, SessionKey>,
    cursor: u16,
}

/// Race-free port allocator for one leadership term.
#[derive(Debug)]
pub struct UdpPortAllocator {
    range: PortRange,
    table: Mutex<Table>,
}

impl UdpPortAllocator {
    /// An empty allocator over `range`.
    pub fn new(range: PortRange) -> Self {
        Self {
            range,
            table: Mutex::new(Table {
                by_session: HashMap::new(),
                by_port: BTreeMap::new(),
                cursor: range.first,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table half-updated: every mutation
        // below is a pair of inserts/removes done without early returns, so the data stays valid.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `key` holds `port` (from its status or its pod). Succeeds when the port is
    /// free or already held by `key`; a session that held another port gives it up.
    pub fn claim(&self, key: &SessionKey, port: u16) -> Result<(), PortError> {
        if !self.range.contains(port) {
            return Err(PortError::OutOfRange(port));
        }
        let mut table = self.lock();
        match table.by_port.get(&port) {
            Some(owner) if owner == key => Ok(()),
            Some(owner) => Err(PortError::Taken {
                port,
                owner: owner.clone(),
            }),
            None => {
                if let Some(old) = table.by_session.insert(key.clone(), port) {
                    table.by_port.remove(&old);
                }
                table.by_port.insert(port, key.clone());
                Ok(())
            }
        }
    }

    /// The port of `key`: the one it holds, else a free one. When the range is full, ports of
    /// sessions for which `is_live` is false are reclaimed first.
    pub fn allocate(
        &self,
        key: &SessionKey,
        is_live: impl Fn(&SessionKey) -> bool,
    ) -> Result<u16, PortError> {
        let mut table = self.lock();
        if let Some(&port) = table.by_session.get(key) {
            return Ok(port);
        }
        if table.by_port.len() >= self.range.port_count() {
            Self::retain_locked(&mut table, |k| k == key || is_live(k));
        }
        let start = table.cursor;
        let mut port = start;
        loop {
            if let btree_map::Entry::Vacant(free) = table.by_port.entry(port) {
                free.insert(key.clone());
                table.by_session.insert(key.clone(), port);
                table.cursor = if port == self.range.last {
                    self.range.first
                } else {
                    port + 1
                };
                return Ok(port);
            }
            port = if port == self.range.last {
                self.range.first
            } else {
                port + 1
            };
            if port == start {
                return Err(PortError::Exhausted(self.range.port_count()));
            }
        }
    }

    /// Gives up the port of `key`, if any.
    pub fn release(&self, key: &SessionKey) {
        let mut table = self.lock();
        if let Some(port) = table.by_session.remove(key) {
            table.by_port.remove(&port);
        }
    }

    /// Keeps only the sessions for which `is_live` is true.
    pub fn retain(&self, is_live: impl Fn(&SessionKey) -> bool) {
        Self::retain_locked(&mut self.lock(), is_live);
    }

    fn retain_locked(table: &mut Table, is_live: impl Fn(&SessionKey) -> bool) {
        table.by_session.retain(|key, _| is_live(key));
        table.by_port.retain(|_, key| is_live(key));
    }

    /// The port held by `key`.
    pub fn port_of(&self, key: &SessionKey) -> Option<u16> {
        self.lock().by_session.get(key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    fn key(n: usize) -> SessionKey {
        SessionKey::new("ns", format!("s{n}"))
    }

    fn range(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn parses_ranges_and_rejects_bad_ones() {
        assert_eq!("40000-40999".parse(), Ok(range(40000, 40999)));
        assert_eq!("7-7".parse::<PortRange>().map(|r| r.port_count()), Ok(1));
        for bad in ["", "40000", "2-1", "0-10", "1-70000", "a-b"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn same_session_keeps_its_port() {
        let alloc = UdpPortAllocator::new(range(100, 102));
        let p = alloc.allocate(&key(1), |_| true).unwrap();
        assert_eq!(alloc.allocate(&key(1), |_| true), Ok(p));
        assert_eq!(alloc.port_of(&key(1)), Some(p));
    }

    #[test]
    fn exhausted_when_all_live_and_reclaims_dead_sessions() {
        let alloc = UdpPortAllocator::new(range(100, 101));
        alloc.allocate(&key(1), |_| true).unwrap();
        alloc.allocate(&key(2), |_| true).unwrap();
        assert_eq!(
            alloc.allocate(&key(3), |_| true),
            Err(PortError::Exhausted(2))
        );
        let p = alloc.allocate(&key(3), |k| *k != key(1)).unwrap();
        assert_eq!(p, 100, "the dead session's port is reused");
        assert_eq!(alloc.port_of(&key(1)), None);
    }

    #[test]
    fn claims_respect_owners_and_range() {
        let alloc = UdpPortAllocator::new(range(100, 110));
        alloc.claim(&key(1), 105).unwrap();
        assert_eq!(alloc.claim(&key(1), 105), Ok(()));
        assert_eq!(
            alloc.claim(&key(2), 105),
            Err(PortError::Taken {
                port: 105,
                owner: key(1)
            })
        );
        assert_eq!(alloc.claim(&key(2), 99), Err(PortError::OutOfRange(99)));
        // Allocation skips claimed ports.
        for _ in 0..10 {
            let p = alloc
                .allocate(
                    &SessionKey::new("x", format!("{}", rand::random::<u32>())),
                    |_| true,
                )
                .unwrap();
            assert_ne!(p, 105);
        }
    }

    #[test]
    fn moving_a_claim_frees_the_old_port() {
        let alloc = UdpPortAllocator::new(range(100, 101));
        alloc.claim(&key(1), 100).unwrap();
        alloc.claim(&key(1), 101).unwrap();
        assert_eq!(alloc.allocate(&key(2), |_| true), Ok(100));
    }

    #[test]
    fn released_port_is_handed_out_last() {
        let alloc = UdpPortAllocator::new(range(100, 102));
        let first = alloc.allocate(&key(1), |_| true).unwrap();
        alloc.release(&key(1));
        let next = alloc.allocate(&key(2), |_| true).unwrap();
        assert_ne!(first, next);
    }

    #[test]
    fn concurrent_allocations_are_unique() {
        let alloc = Arc::new(UdpPortAllocator::new(range(40000, 40999)));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let alloc = alloc.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .map(|i| alloc.allocate(&key(t * 1000 + i), |_| true).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let ports: Vec<u16> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let unique: HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), 800);
        assert!(ports.iter().all(|p| (40000..=40999).contains(p)));
    }

    #[test]
    fn retain_drops_dead_sessions() {
        let alloc = UdpPortAllocator::new(range(100, 110));
        alloc.allocate(&key(1), |_| true).unwrap();
        alloc.allocate(&key(2), |_| true).unwrap();
        alloc.retain(|k| *k == key(2));
        assert_eq!(alloc.port_of(&key(1)), None);
        assert!(alloc.port_of(&key(2)).is_some());
    }
}
