//! Where the time from an offer to its first filtered frame goes: each new connection records
//! when it reached each stage, once, as seconds since its offer was received
//! (`p2pcamera_pod_connect_stage_seconds{stage=...}`) and as a debug log line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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

/// One connection's stages, timed from the moment its offer was received.
pub struct ConnectTimeline {
    offer_received: Instant,
    reached: [AtomicBool; ConnectStage::ALL.len()],
    metrics: Arc<Metrics>,
}

impl ConnectTimeline {
    pub fn new(offer_received: Instant, metrics: Arc<Metrics>) -> Self {
        ConnectTimeline {
            offer_received,
            reached: Default::default(),
            metrics,
        }
    }

    /// Records `stage` the first time it is reached; later calls do nothing.
    pub fn reach(&self, stage: ConnectStage) {
        if self.reached[stage as usize].swap(true, Ordering::Relaxed) {
            return;
        }
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
        let timeline = ConnectTimeline::new(offer, metrics.clone());
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
}
