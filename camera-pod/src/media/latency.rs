//! The pod's own latency per frame: from the arrival of the first RTP packet of a camera frame
//! to the sending of the last RTP packet of its filtered frame (decode, filter, encode and the
//! waits between them). A filtered frame keeps its camera frame's RTP timestamp, which ties the
//! two together. Frames dropped on the way (latest frame wins) are never sent and age out.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Camera frames remembered by the arrival of their first packet: two seconds at 30 fps.
const REMEMBERED_FRAMES: usize = 64;

/// One peer's frame latencies: arrivals waiting for their filtered frame, and the running
/// totals the data channel's stats read.
#[derive(Debug, Default)]
pub struct FrameLatency {
    /// (RTP timestamp, arrival of its first packet), oldest first.
    arrivals: Mutex<VecDeque<(u32, Instant)>>,
    total_micros: AtomicU64,
    frames: AtomicU64,
}

/// Totals at one instant, to average the latency between two of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyTotals {
    pub micros: u64,
    pub frames: u64,
}

impl LatencyTotals {
    /// Mean latency in milliseconds (one decimal) of the frames sent since `earlier`; `None`
    /// when none was.
    pub fn mean_ms_since(self, earlier: LatencyTotals) -> Option<f64> {
        let frames = self.frames.checked_sub(earlier.frames).filter(|n| *n > 0)?;
        let micros = self.micros.saturating_sub(earlier.micros);
        Some((micros as f64 / frames as f64 / 100.0).round() / 10.0)
    }
}

impl FrameLatency {
    fn arrivals(&self) -> std::sync::MutexGuard<'_, VecDeque<(u32, Instant)>> {
        self.arrivals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An RTP packet of the camera frame `rtp_timestamp` arrived at `now`; the first one of each
    /// frame starts its clock.
    pub fn packet_arrived(&self, rtp_timestamp: u32, now: Instant) {
        let mut arrivals = self.arrivals();
        if arrivals.iter().rev().any(|(ts, _)| *ts == rtp_timestamp) {
            return;
        }
        if arrivals.len() == REMEMBERED_FRAMES {
            arrivals.pop_front();
        }
        arrivals.push_back((rtp_timestamp, now));
    }

    /// The last packet of the filtered frame `rtp_timestamp` was sent at `now`: its latency,
    /// counted in the totals (`None` for a frame whose arrival is not remembered).
    pub fn frame_sent(&self, rtp_timestamp: u32, now: Instant) -> Option<Duration> {
        let arrived = {
            let mut arrivals = self.arrivals();
            let index = arrivals.iter().position(|(ts, _)| *ts == rtp_timestamp)?;
            // Earlier frames were dropped on the way; they will not be sent any more.
            arrivals.drain(..=index).next_back()?.1
        };
        let latency = now.saturating_duration_since(arrived);
        self.total_micros.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.frames.fetch_add(1, Ordering::Relaxed);
        Some(latency)
    }

    pub fn totals(&self) -> LatencyTotals {
        LatencyTotals {
            micros: self.total_micros.load(Ordering::Relaxed),
            frames: self.frames.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_frame_is_timed_from_its_first_packet_to_its_last_sent_packet() {
        let latency = FrameLatency::default();
        let start = Instant::now();
        latency.packet_arrived(3000, start);
        latency.packet_arrived(3000, start + 5 * MS);
        latency.packet_arrived(6000, start + 33 * MS);
        assert_eq!(latency.frame_sent(3000, start + 40 * MS), Some(40 * MS));
        assert_eq!(latency.frame_sent(3000, start + 50 * MS), None, "sent once");
        assert_eq!(latency.frame_sent(6000, start + 61 * MS), Some(28 * MS));
        assert_eq!(
            latency.totals(),
            LatencyTotals {
                micros: 68_000,
                frames: 2
            }
        );
        assert_eq!(
            latency.totals().mean_ms_since(LatencyTotals::default()),
            Some(34.0)
        );
        assert_eq!(latency.totals().mean_ms_since(latency.totals()), None);
    }

    #[test]
    fn frames_dropped_on_the_way_are_forgotten_and_memory_is_bounded() {
        let latency = FrameLatency::default();
        let start = Instant::now();
        for frame in 0..REMEMBERED_FRAMES as u32 * 2 {
            latency.packet_arrived(frame * 3000, start + frame * MS);
        }
        assert_eq!(latency.arrivals().len(), REMEMBERED_FRAMES);
        assert_eq!(latency.frame_sent(0, start), None, "aged out");
        // Sending a frame forgets the older ones, which the filter dropped.
        let newest = (REMEMBERED_FRAMES as u32 * 2 - 1) * 3000;
        assert!(latency.frame_sent(newest - 3000, start).is_some());
        assert_eq!(latency.arrivals().len(), 1);
    }
}
