//! Puts the camera's RTP packets back in sequence order, and waits a little for missing ones.
//!
//! When a packet is missing, the NACK generator asks the camera to send it again. A packet that
//! comes back within [`REORDER_WAIT`] completes its frame, which then decodes as if nothing had
//! been lost; without the wait, every lost packet would cost a key frame and the frames until
//! it. Packets are held only while one before them is missing, so a clean stream gets no delay.
//! After the wait the buffer gives up on the gap and releases what came after it; the frame
//! assembler then sees the sequence jump as loss.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest time a packet is held for a missing one before it. It covers a NACK (the generator
/// runs every [`crate::media::feedback::NACK_INTERVAL`]) and the round trip of the resend.
pub const REORDER_WAIT: Duration = Duration::from_millis(150);
/// Most packets held at once; beyond that the oldest gap is given up at once.
pub const REORDER_CAPACITY: usize = 512;

/// In-order release of sequence-numbered items, tolerant of loss and reordering.
#[derive(Debug)]
pub struct ReorderBuffer<T> {
    wait: Duration,
    capacity: usize,
    /// Extended sequence number expected next.
    next: Option<u64>,
    /// Packets after a gap, by extended sequence number, with their arrival time.
    held: BTreeMap<u64, (Instant, T)>,
    counts: GapCounts,
}

/// What became of missing packets since the last [`ReorderBuffer::take_counts`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GapCounts {
    /// Packets that arrived after a later one, in time to be used (resent or reordered).
    pub recovered: u64,
    /// Missing packets given up on.
    pub lost: u64,
}

impl<T> ReorderBuffer<T> {
    pub fn new(wait: Duration, capacity: usize) -> Self {
        Self {
            wait,
            capacity: capacity.max(1),
            next: None,
            held: BTreeMap::new(),
            counts: GapCounts::default(),
        }
    }

    /// The gap counts since the last call.
    pub fn take_counts(&mut self) -> GapCounts {
        std::mem::take(&mut self.counts)
    }

    /// Takes a packet that arrived at `now`; returns the packets that are now in order (none
    /// while an earlier one is missing; none for a duplicate or a packet already given up on).
    pub fn push(&mut self, sequence: u16, item: T, now: Instant) -> Vec<T> {
        let Some(next) = self.next else {
            // Extended numbers start one cycle up, so a reordered first packet cannot underflow.
            self.next = Some((1 << 16) + u64::from(sequence) + 1);
            return vec![item];
        };
        let extended = extend(next, sequence);
        if extended < next {
            if next - extended > self.capacity as u64 {
                // Far behind: the sender started over with new numbers.
                let mut out = self.drain();
                self.next = Some((1 << 16) + u64::from(sequence) + 1);
                out.push(item);
                return out;
            }
            return Vec::new(); // late or duplicate: its place was already released or given up
        }
        let fills_gap = self
            .held
            .keys()
            .next_back()
            .is_some_and(|&last| extended < last);
        if !self.held.contains_key(&extended) {
            self.counts.recovered += u64::from(fills_gap);
            self.held.insert(extended, (now, item));
        }
        let mut out = self.release_in_order();
        while self.held.len() > self.capacity {
            out.extend(self.skip_gap());
        }
        out
    }

    /// When the oldest held packet stops waiting for those missing before it.
    pub fn deadline(&self) -> Option<Instant> {
        self.held
            .values()
            .next()
            .map(|(arrived, _)| *arrived + self.wait)
    }

    /// Gives up on missing packets whose wait ended by `now`; returns what follows them.
    pub fn expire(&mut self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        while self.deadline().is_some_and(|deadline| deadline <= now) {
            out.extend(self.skip_gap());
        }
        out
    }

    /// Moves past the first gap and releases the packets that follow it in order.
    fn skip_gap(&mut self) -> Vec<T> {
        if let Some((&first, _)) = self.held.iter().next() {
            self.counts.lost += first - self.next.unwrap_or(first);
            self.next = Some(first);
        }
        self.release_in_order()
    }

    fn release_in_order(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(next) = self.next
            && let Some((_, item)) = self.held.remove(&next)
        {
            out.push(item);
            self.next = Some(next + 1);
        }
        out
    }

    fn drain(&mut self) -> Vec<T> {
        std::mem::take(&mut self.held)
            .into_values()
            .map(|(_, item)| item)
            .collect()
    }
}

/// The extended sequence number of `sequence`, taken as the nearest to `next`.
fn extend(next: u64, sequence: u16) -> u64 {
    let delta = i64::from(sequence.wrapping_sub(next as u16) as i16);
    next.saturating_add_signed(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer() -> (ReorderBuffer<u16>, Instant) {
        (
            ReorderBuffer::new(Duration::from_millis(100), 8),
            Instant::now(),
        )
    }

    #[test]
    fn in_order_packets_pass_at_once() {
        let (mut b, t) = buffer();
        for seq in [65534, 65535, 0, 1] {
            assert_eq!(b.push(seq, seq, t), vec![seq]);
        }
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn a_resent_packet_fills_its_gap_and_releases_what_waited() {
        let (mut b, t) = buffer();
        assert_eq!(b.push(10, 10, t), vec![10]);
        assert!(b.push(12, 12, t).is_empty());
        assert!(b.push(13, 13, t).is_empty());
        assert_eq!(b.deadline(), Some(t + Duration::from_millis(100)));
        assert_eq!(
            b.push(11, 11, t + Duration::from_millis(30)),
            vec![11, 12, 13]
        );
        assert_eq!(b.deadline(), None);
        assert_eq!(
            b.take_counts(),
            GapCounts {
                recovered: 1,
                lost: 0
            }
        );
        assert_eq!(b.take_counts(), GapCounts::default());
        assert_eq!(b.push(14, 14, t), vec![14]);
    }

    #[test]
    fn a_gap_is_given_up_after_the_wait_and_its_packet_is_then_ignored() {
        let (mut b, t) = buffer();
        b.push(1, 1, t);
        assert!(b.push(3, 3, t + Duration::from_millis(10)).is_empty());
        assert!(b.expire(t + Duration::from_millis(109)).is_empty());
        assert_eq!(b.expire(t + Duration::from_millis(110)), vec![3]);
        assert!(
            b.push(2, 2, t + Duration::from_millis(120)).is_empty(),
            "too late"
        );
        assert_eq!(
            b.take_counts(),
            GapCounts {
                recovered: 0,
                lost: 1
            }
        );
        assert_eq!(b.push(4, 4, t), vec![4]);
    }

    #[test]
    fn each_gap_waits_from_the_arrival_of_the_packet_after_it() {
        let (mut b, t) = buffer();
        b.push(1, 1, t);
        b.push(3, 3, t);
        b.push(5, 5, t + Duration::from_millis(50));
        assert_eq!(b.expire(t + Duration::from_millis(100)), vec![3]);
        assert_eq!(b.deadline(), Some(t + Duration::from_millis(150)));
        assert_eq!(b.push(4, 4, t + Duration::from_millis(120)), vec![4, 5]);
    }

    #[test]
    fn duplicates_are_released_once() {
        let (mut b, t) = buffer();
        b.push(1, 1, t);
        assert_eq!(b.push(1, 1, t), Vec::<u16>::new());
        b.push(3, 3, t);
        assert!(b.push(3, 3, t).is_empty());
        assert_eq!(b.push(2, 2, t), vec![2, 3]);
    }

    #[test]
    fn a_full_buffer_gives_up_its_oldest_gap() {
        let (mut b, t) = buffer();
        b.push(0, 0, t);
        for seq in 2..=9 {
            assert!(b.push(seq, seq, t).is_empty());
        }
        assert_eq!(b.push(10, 10, t), (2..=10).collect::<Vec<_>>());
        assert_eq!(
            b.take_counts(),
            GapCounts {
                recovered: 0,
                lost: 1
            }
        );
    }

    #[test]
    fn a_sender_that_starts_over_is_followed() {
        let (mut b, t) = buffer();
        b.push(30000, 1, t);
        b.push(30001, 2, t);
        assert_eq!(b.push(100, 3, t), vec![3]);
        assert_eq!(b.push(101, 4, t), vec![4]);
    }
}
