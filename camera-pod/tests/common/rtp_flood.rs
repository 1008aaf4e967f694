//! RTP no camera sends: one frame whose packets never end.

use std::time::Duration;

use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use webrtc::media_stream::track_local::TrackLocal;

use super::{TestPeer, payload_type};

/// Payload bytes per packet of [`TestPeer::send_endless_frame`].
const PACKET_PAYLOAD: usize = 1000;

impl TestPeer {
    /// Sends at least `bytes` of VP8 payload in packets that all carry one RTP timestamp and
    /// none the marker bit: a frame that never ends. Paced a little so loopback keeps up.
    pub async fn send_endless_frame(&self, bytes: usize) {
        let first: u16 = rand::random();
        for index in 0..bytes.div_ceil(PACKET_PAYLOAD) {
            let mut payload = vec![0; PACKET_PAYLOAD];
            // VP8 payload descriptor: the first packet starts the partition of a key frame.
            payload[0] = if index == 0 { 0x10 } else { 0x00 };
            payload[1] = 0x10;
            let packet = Packet {
                header: Header {
                    version: 2,
                    payload_type: payload_type(self.codec),
                    sequence_number: first.wrapping_add(index as u16),
                    timestamp: 0x5eed,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload: payload.into(),
            };
            self.track.write_rtp(packet).await.unwrap();
            if index % 32 == 31 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}
