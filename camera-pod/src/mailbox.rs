//! A one-slot "latest wins" mailbox between pipeline stages.
//!
//! Putting a value replaces the one that has not been taken yet (and counts it as dropped), so a
//! slow consumer lowers the frame rate but never lets a queue, and with it latency, grow.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

#[derive(Debug)]
struct Slot<T> {
    value: Option<T>,
    closed: bool,
    replaced: u64,
}

#[derive(Debug)]
pub struct LatestFrame<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

/// What `put` did with the value that was waiting, if any.
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    Stored,
    /// An unprocessed value was waiting and has been dropped in favour of the new one.
    Replaced,
    /// The mailbox is closed; the value was dropped.
    Closed,
}

impl<T> Default for LatestFrame<T> {
    fn default() -> Self {
        LatestFrame {
            slot: Mutex::new(Slot {
                value: None,
                closed: false,
                replaced: 0,
            }),
            ready: Condvar::new(),
        }
    }
}

impl<T> LatestFrame<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value`, replacing any value not taken yet. Never blocks on the consumer.
    pub fn put(&self, value: T) -> Put {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.closed {
            return Put::Closed;
        }
        let replaced = slot.value.replace(value).is_some();
        if replaced {
            slot.replaced += 1;
        }
        drop(slot);
        self.ready.notify_one();
        if replaced { Put::Replaced } else { Put::Stored }
    }

    /// Waits up to `timeout` for a value. `None` on timeout or once closed and empty.
    pub fn take_timeout(&self, timeout: Duration) -> Option<T> {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let (mut slot, _) = self
            .ready
            .wait_timeout_while(slot, timeout, |s| s.value.is_none() && !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        slot.value.take()
    }

    /// Takes the waiting value without blocking.
    pub fn try_take(&self) -> Option<T> {
        self.slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .value
            .take()
    }

    /// Closes the mailbox: wakes the consumer; later puts are refused.
    pub fn close(&self) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.closed = true;
        drop(slot);
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).closed
    }

    /// How many values were replaced before being taken (dropped frames).
    pub fn replaced_count(&self) -> u64 {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn newer_value_replaces_unprocessed_one() {
        let m = LatestFrame::new();
        assert_eq!(m.put(1), Put::Stored);
        assert_eq!(m.put(2), Put::Replaced);
        assert_eq!(m.put(3), Put::Replaced);
        assert_eq!(m.try_take(), Some(3));
        assert_eq!(m.try_take(), None);
        assert_eq!(m.replaced_count(), 2);
    }

    #[test]
    fn take_waits_for_a_value_from_another_thread() {
        let m = Arc::new(LatestFrame::new());
        let producer = {
            let m = m.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                m.put("frame");
            })
        };
        assert_eq!(m.take_timeout(Duration::from_secs(5)), Some("frame"));
        producer.join().unwrap();
    }

    #[test]
    fn close_wakes_consumer_and_refuses_puts() {
        let m = Arc::new(LatestFrame::<u32>::new());
        let consumer = {
            let m = m.clone();
            std::thread::spawn(move || m.take_timeout(Duration::from_secs(5)))
        };
        std::thread::sleep(Duration::from_millis(20));
        m.close();
        assert_eq!(consumer.join().unwrap(), None);
        assert_eq!(m.put(1), Put::Closed);
    }

    #[test]
    fn take_times_out_when_empty() {
        let m = LatestFrame::<u8>::new();
        assert_eq!(m.take_timeout(Duration::from_millis(10)), None);
    }
}
