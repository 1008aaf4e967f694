//! Port allocation: one port per session, used for both signaling (TCP) and media (UDP).
//!
//! Ports are unique per node, not per cluster. The pod declares its port as a hostPort for TCP
//! and UDP, so the scheduler's NodePorts filter never puts two pods with the same port on one
//! node; a cluster therefore serves the range times its nodes. The operator chooses the port
//! before the scheduler chooses the node, so it spreads them: a new session gets the port the
//! fewest live sessions hold (ties: the first after the port handed out last, so a port just
//! given up is the last of its kind to be handed out again).
//!
//! When the scheduler reports that it cannot place the pod because the nodes it looked at have
//! the port taken, the session moves to another port ([`UdpPortAllocator::other_port`]): the
//! least-used port it has not tried during this wait, at most [`MAX_PORT_MOVES`] times per wait.
//! The bound is there because the scheduler checks ports before resources: a node that reports
//! the port taken may have no free GPU either, so a full cluster reads the same as a port
//! conflict, and every move costs a pod. A wait ends when the session's pod is bound
//! ([`UdpPortAllocator::placed`]); every wait starts afresh when a bound camera pod goes away
//! somewhere ([`UdpPortAllocator::freed`], a port came free on a node), and the sessions that
//! were left waiting for a port are reconciled again then.
//!
//! The table is in memory behind one mutex, so concurrent reconciles see each other's choices at
//! once. It is seeded when the operator becomes leader from each camera pod's `p2pcamera.io/port`
//! annotation (the port the pod really holds), then from each session's `status.udpPort`; every
//! choice is recorded in both places (the annotation when the pod is applied, the status right
//! after), so a restarted operator rebuilds the same table. No finalizer is needed: a deleted
//! session's port is given up when its deletion is seen ([`UdpPortAllocator::release`]) and by
//! the periodic sweep ([`UdpPortAllocator::retain`]).

use std::collections::{BTreeSet, HashMap, HashSet};
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
    /// The port is outside the configured range.
    #[error("port {0} is outside the configured range")]
    OutOfRange(u16),
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

/// Most port moves of one session during one wait for the scheduler (see the module documentation).
pub const MAX_PORT_MOVES: usize = 3;

/// What the allocator knows of one session.
#[derive(Debug)]
struct Holding {
    port: u16,
    /// Ports the scheduler found taken during the current wait.
    tried: BTreeSet<u16>,
}

#[derive(Debug)]
struct Table {
    by_session: HashMap<SessionKey, Holding>,
    /// Live sessions per port, indexed by `port - range.first`.
    users: Vec<u32>,
    /// Where the search for the least-used port starts.
    cursor: u16,
    /// Sessions whose pod waits because no port is free on the nodes that fit.
    waiting: HashSet<SessionKey>,
}

/// Race-free port allocator for one leadership term.
#[derive(Debug)]
pub struct UdpPortAllocator {
    range: PortRange,
    table: Mutex<Table>,
}

impl Table {
    fn users_mut(&mut self, range: PortRange, port: u16) -> &mut u32 {
        &mut self.users[usize::from(port - range.first)]
    }

    /// Gives `key` the port `port`, giving up the one it held.
    fn hold(&mut self, range: PortRange, key: &SessionKey, port: u16) {
        let old = match self.by_session.get_mut(key) {
            Some(holding) => Some(std::mem::replace(&mut holding.port, port)),
            None => {
                self.by_session.insert(
                    key.clone(),
                    Holding {
                        port,
                        tried: BTreeSet::new(),
                    },
                );
                None
            }
        };
        if let Some(old) = old {
            *self.users_mut(range, old) -= 1;
        }
        *self.users_mut(range, port) += 1;
    }

    fn forget(&mut self, range: PortRange, key: &SessionKey) {
        if let Some(holding) = self.by_session.remove(key) {
            *self.users_mut(range, holding.port) -= 1;
        }
        self.waiting.remove(key);
    }

    /// The least-used port not in `skip`, searching from the cursor; `None` when all are skipped.
    fn least_used(&mut self, range: PortRange, skip: &BTreeSet<u16>) -> Option<u16> {
        let count = range.port_count();
        let start = usize::from(self.cursor - range.first);
        let best = (0..count)
            .map(|step| (start + step) % count)
            .filter(|&offset| !skip.contains(&port_at(range, offset)))
            .min_by_key(|&offset| self.users[offset])?;
        let port = port_at(range, best);
        self.cursor = port_at(range, (best + 1) % count);
        Some(port)
    }
}

fn port_at(range: PortRange, offset: usize) -> u16 {
    // `offset` < `range.port_count()`, so the sum stays within the range.
    u16::try_from(offset).map_or(range.last, |offset| range.first + offset)
}

impl UdpPortAllocator {
    /// An empty allocator over `range`.
    pub fn new(range: PortRange) -> Self {
        Self {
            range,
            table: Mutex::new(Table {
                by_session: HashMap::new(),
                users: vec![0; range.port_count()],
                cursor: range.first,
                waiting: HashSet::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table half-updated: every mutation
        // below updates the session and the port counts without early returns in between.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `key` holds `port` (from its pod or its status); other sessions may hold it
    /// too (on other nodes). A session that held another port gives it up.
    pub fn claim(&self, key: &SessionKey, port: u16) -> Result<(), PortError> {
        if !self.range.contains(port) {
            return Err(PortError::OutOfRange(port));
        }
        self.lock().hold(self.range, key, port);
        Ok(())
    }

    /// The port of `key`: the one it holds, else `recorded` (its status) when in the range, else
    /// the least-used port.
    pub fn port(&self, key: &SessionKey, recorded: Option<u16>) -> u16 {
        let mut table = self.lock();
        if let Some(holding) = table.by_session.get(key) {
            return holding.port;
        }
        let port = match recorded.filter(|p| self.range.contains(*p)) {
            Some(port) => port,
            None => table
                .least_used(self.range, &BTreeSet::new())
                .unwrap_or(self.range.first),
        };
        table.hold(self.range, key, port);
        port
    }

    /// The scheduler found `taken` (the port of `key`'s pod) taken on the nodes it looked at:
    /// moves `key` to the least-used port it has not tried during this wait and returns it, or
    /// `None` when it tried every port or moved [`MAX_PORT_MOVES`] times already (it keeps its
    /// port then).
    pub fn other_port(&self, key: &SessionKey, taken: u16) -> Option<u16> {
        let mut table = self.lock();
        let mut tried = table
            .by_session
            .get_mut(key)
            .map(|holding| std::mem::take(&mut holding.tried))
            .unwrap_or_default();
        tried.insert(taken);
        let next = if tried.len() > MAX_PORT_MOVES {
            None
        } else {
            table.least_used(self.range, &tried)
        };
        if let Some(port) = next {
            table.hold(self.range, key, port);
        }
        if let Some(holding) = table.by_session.get_mut(key) {
            holding.tried = tried;
        }
        next
    }

    /// The pod of `key` is bound: its wait is over.
    pub fn placed(&self, key: &SessionKey) {
        let mut table = self.lock();
        if let Some(holding) = table.by_session.get_mut(key) {
            holding.tried.clear();
        }
        table.waiting.remove(key);
    }

    /// `key` waits because no port is free on the nodes that fit (it moved as far as it may).
    pub fn waits_for_port(&self, key: &SessionKey) {
        self.lock().waiting.insert(key.clone());
    }

    /// A bound camera pod went away, so a port came free on a node: every wait starts afresh.
    /// Returns the sessions that were waiting for a port, to be reconciled again.
    pub fn freed(&self) -> Vec<SessionKey> {
        let mut table = self.lock();
        for holding in table.by_session.values_mut() {
            holding.tried.clear();
        }
        table.waiting.drain().collect()
    }

    /// Gives up the port of `key`, if any.
    pub fn release(&self, key: &SessionKey) {
        self.lock().forget(self.range, key);
    }

    /// Keeps only the sessions for which `is_live` is true.
    pub fn retain(&self, is_live: impl Fn(&SessionKey) -> bool) {
        let mut table = self.lock();
        let dead: Vec<SessionKey> = table
            .by_session
            .keys()
            .filter(|key| !is_live(key))
            .cloned()
            .collect();
        for key in &dead {
            table.forget(self.range, key);
        }
        table.waiting.retain(|key| is_live(key));
    }

    /// The port held by `key`.
    pub fn port_of(&self, key: &SessionKey) -> Option<u16> {
        self.lock().by_session.get(key).map(|holding| holding.port)
    }

    /// How many live sessions hold `port`.
    pub fn users(&self, port: u16) -> u32 {
        if self.range.contains(port) {
            self.lock().users[usize::from(port - self.range.first)]
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let p = alloc.port(&key(1), None);
        assert_eq!(alloc.port(&key(1), None), p);
        assert_eq!(alloc.port(&key(1), Some(101)), p, "the held port wins");
        assert_eq!(alloc.port_of(&key(1)), Some(p));
    }

    #[test]
    fn more_sessions_than_ports_share_ports_evenly() {
        let alloc = UdpPortAllocator::new(range(100, 102));
        let ports: Vec<u16> = (0..7).map(|n| alloc.port(&key(n), None)).collect();
        assert_eq!(ports, [100, 101, 102, 100, 101, 102, 100]);
        assert_eq!(
            (alloc.users(100), alloc.users(101), alloc.users(102)),
            (3, 2, 2)
        );
    }

    #[test]
    fn recorded_ports_are_kept_even_when_shared() {
        let alloc = UdpPortAllocator::new(range(100, 110));
        assert_eq!(alloc.port(&key(1), Some(105)), 105);
        assert_eq!(
            alloc.port(&key(2), Some(105)),
            105,
            "another node may hold it"
        );
        assert_eq!(alloc.users(105), 2);
        // Out of the range (the range was changed): a new port.
        assert_eq!(alloc.port(&key(3), Some(99)), 100);
        assert_eq!(alloc.claim(&key(4), 99), Err(PortError::OutOfRange(99)));
        // New sessions go to the least-used ports first.
        for n in 10..18 {
            assert_ne!(alloc.port(&key(n), None), 105);
        }
    }

    #[test]
    fn moving_a_claim_gives_up_the_old_port() {
        let alloc = UdpPortAllocator::new(range(100, 101));
        alloc.claim(&key(1), 100).unwrap();
        alloc.claim(&key(1), 101).unwrap();
        assert_eq!((alloc.users(100), alloc.users(101)), (0, 1));
        assert_eq!(alloc.port(&key(2), None), 100);
    }

    #[test]
    fn a_given_up_port_is_the_last_of_its_kind_handed_out() {
        let alloc = UdpPortAllocator::new(range(100, 102));
        let first = alloc.port(&key(1), None);
        alloc.release(&key(1));
        assert_eq!(alloc.users(first), 0);
        let next = alloc.port(&key(2), None);
        assert_ne!(first, next);
    }

    #[test]
    fn a_conflict_moves_to_the_least_used_untried_port_a_few_times_per_wait() {
        let alloc = UdpPortAllocator::new(range(100, 109));
        for n in 0..10 {
            alloc.port(&key(n), None);
        }
        let start = alloc.port(&key(99), None);
        let mut seen = vec![start];
        while let Some(next) = alloc.other_port(&key(99), *seen.last().unwrap()) {
            assert!(!seen.contains(&next), "{next} tried twice: {seen:?}");
            assert_eq!(alloc.port_of(&key(99)), Some(next));
            seen.push(next);
        }
        assert_eq!(seen.len(), MAX_PORT_MOVES + 1, "{seen:?}");
        assert_eq!(
            alloc.port_of(&key(99)),
            seen.last().copied(),
            "keeps its port"
        );
        // A port freed on a node: the wait starts afresh.
        alloc.waits_for_port(&key(99));
        assert_eq!(alloc.freed(), [key(99)]);
        assert_eq!(alloc.freed(), [], "reported once");
        assert!(alloc.other_port(&key(99), *seen.last().unwrap()).is_some());
        // Placed: a later conflict starts a new wait too.
        alloc.placed(&key(99));
        let now = alloc.port_of(&key(99)).unwrap();
        assert!(alloc.other_port(&key(99), now).is_some());
    }

    #[test]
    fn a_range_of_two_ports_allows_one_move() {
        let alloc = UdpPortAllocator::new(range(100, 101));
        let first = alloc.port(&key(1), None);
        let second = alloc.other_port(&key(1), first).expect("the other port");
        assert_ne!(first, second);
        assert_eq!(alloc.other_port(&key(1), second), None);
        assert_eq!(alloc.port_of(&key(1)), Some(second));
        assert_eq!(alloc.users(first) + alloc.users(second), 1);
    }

    #[test]
    fn concurrent_allocations_spread_evenly() {
        let alloc = Arc::new(UdpPortAllocator::new(range(40000, 40099)));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let alloc = alloc.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        alloc.port(&key(t * 1000 + i), None);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!((40000..=40099).all(|p| alloc.users(p) == 8));
    }

    #[test]
    fn retain_drops_dead_sessions() {
        let alloc = UdpPortAllocator::new(range(100, 110));
        let p = alloc.port(&key(1), None);
        alloc.port(&key(2), None);
        alloc.waits_for_port(&key(1));
        alloc.retain(|k| *k == key(2));
        assert_eq!(alloc.port_of(&key(1)), None);
        assert_eq!(alloc.users(p), 0);
        assert!(alloc.port_of(&key(2)).is_some());
        assert_eq!(alloc.freed(), []);
    }
}
