//! Where the time from an offer to its first filtered frame goes: each new connection records
//! when it reached each stage, once, as seconds since its offer was received
//! (`p2pcamera_pod_connect_stage_seconds{stage=...}`) and as a debug log line. The pod's first
//! answer and first filtered frame of all are kept as wall-clock times ([`FirstTimes`]) for
//! `GET /status`, where the operator reads them into the session's start times.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::Metrics;

/// The stages of a new connection after its offer was received, in the order they are normally
/// reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectStage {
    /// The answer (with all of the pod's candidates) is ready to go back to the client.
    AnswerSent,
    /// ICE found a working candidate pair.
    IceConnected,
    /// DTLS completed over it: the peer connection is connected and media may flow.
    DtlsConnected,
    /// The first RTP packet of the camera arrived.
    FirstRtpIn,
    /// The last RTP packet of the first filtered frame was sent.
    FirstFrameOut,
}

impl ConnectStage {
    pub const ALL: [ConnectStage; 5] = [
        ConnectStage::AnswerSent,
        ConnectStage::IceConnected,
        ConnectStage::DtlsConnected,
        ConnectStage::FirstRtpIn,
        ConnectStage::FirstFrameOut,
    ];

    /// The `stage` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectStage::AnswerSent => "answer_sent",
            ConnectStage::IceConnected => "ice_connected",
            ConnectStage::DtlsConnected => "dtls_connected",
            ConnectStage::FirstRtpIn => "first_rtp_in",
            ConnectStage::FirstFrameOut => "first_frame_out",
        }
    }
}

/// When the pod sent its first answer and its first filtered frame, over all its connections:
/// Unix milliseconds, 0 until then.
#[derive(Debug, Default)]
pub struct FirstTimes {
    answer_sent: AtomicU64,
    frame_sent: AtomicU64,
}

impl FirstTimes {
    /// Unix milliseconds of the pod's first answer.
    pub fn answer_sent(&self) -> Option<u64> {
        Some(self.answer_sent.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// Unix milliseconds of the pod's first filtered frame sent.
    pub fn frame_sent(&self) -> Option<u64> {
        Some(self.frame_sent.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    fn reached(&self, stage: ConnectStage, unix_ms: u64) {
        let slot = match stage {
            ConnectStage::AnswerSent => &self.answer_sent,
            ConnectStage::FirstFrameOut => &self.frame_sent,
            _ => return,
        };
        let _ = slot.compare_exchange(0, unix_ms.max(1), Ordering::Relaxed, Ordering::Relaxed);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// One connection's stages, timed from the moment its offer was received.
pub struct ConnectTimeline {
    offer_received: Instant,
    reached: [AtomicBool; ConnectStage::ALL.len()],
    metrics: Arc<Metrics>,
    firsts: Arc<FirstTimes>,
}

impl ConnectTimeline {
    /// A connection whose offer came at `offer_received`, on a pod whose first times are `firsts`.
    pub fn new(offer_received: Instant, metrics: Arc<Metrics>, firsts: Arc<FirstTimes>) -> Self {
        ConnectTimeline {
            offer_received,
            reached: Default::default(),
            metrics,
            firsts,
        }
    }

    /// Records `stage` the first time it is reached; later calls do nothing.
    pub fn reach(&self, stage: ConnectStage) {
        if self.reached[stage as usize].swap(true, Ordering::Relaxed) {
            return;
        }
        self.firsts.reached(stage, unix_ms());
        let elapsed = self.offer_received.elapsed();
        self.metrics.observe_connect_stage(stage, elapsed);
        tracing::debug!(
            stage = stage.as_str(),
            ms_since_offer = elapsed.as_secs_f64() * 1000.0,
            "connection stage reached"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_is_counted_once_with_its_time_since_the_offer() {
        let metrics = Arc::new(Metrics::default());
        let offer = Instant::now() - std::time::Duration::from_millis(30);
        let timeline = ConnectTimeline::new(offer, metrics.clone(), Arc::default());
        timeline.reach(ConnectStage::AnswerSent);
        timeline.reach(ConnectStage::AnswerSent);
        timeline.reach(ConnectStage::FirstFrameOut);
        let text = metrics.encode();
        let line = |stage: &str, suffix: &str| {
            text.lines()
                .find_map(|line| {
                    line.strip_prefix(&format!(
                        "p2pcamera_pod_connect_stage_seconds_{suffix}{{stage=\"{stage}\"}} "
                    ))
                })
                .map(|value| value.parse::<f64>().unwrap())
        };
        assert_eq!(line("answer_sent", "count"), Some(1.0), "{text}");
        assert!(line("answer_sent", "sum").unwrap() >= 0.03, "{text}");
        assert_eq!(line("first_frame_out", "count"), Some(1.0), "{text}");
        assert_eq!(
            line("ice_connected", "count"),
            Some(0.0),
            "every stage is exported from the start: {text}"
        );
    }

    #[test]
    fn the_pods_first_answer_and_frame_are_kept_across_connections() {
        let metrics = Arc::new(Metrics::default());
        let firsts = Arc::new(FirstTimes::default());
        assert_eq!((firsts.answer_sent(), firsts.frame_sent()), (None, None));
        let before = unix_ms();
        let first = ConnectTimeline::new(Instant::now(), metrics.clone(), firsts.clone());
        first.reach(ConnectStage::AnswerSent);
        let answered = firsts.answer_sent().expect("first answer");
        assert!(answered >= before, "{answered} < {before}");
        assert_eq!(firsts.frame_sent(), None, "no frame yet");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = ConnectTimeline::new(Instant::now(), metrics, firsts.clone());
        second.reach(ConnectStage::AnswerSent);
        second.reach(ConnectStage::FirstFrameOut);
        assert_eq!(firsts.answer_sent(), Some(answered), "the first one stays");
        assert!(firsts.frame_sent().unwrap() > answered);
    }
}
