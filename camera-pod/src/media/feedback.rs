//! Which inbound RTCP reaches the application, and the interceptor chain of a peer connection.
//!
//! The webrtc interceptors act on most inbound RTCP themselves (the NACK responder retransmits
//! from its send buffer, receiver reports feed the sender statistics) and the chain ends the
//! inbound RTCP path unless an interceptor marks a packet for the application. Key frame
//! requests (PLI, FIR) and the receiver's bitrate estimate (REMB) are about the video this
//! process encodes, so only the application can act on them: `RtcpToApplication` marks them.
//!
//! Bitrate adaptation uses REMB: the receiver estimates the bandwidth and tells the sender.
//! Chromium sends REMB for our video when `goog-remb` is negotiated and our packets carry no
//! transport-wide sequence numbers (so its receive-side estimator runs); aiortc sends REMB as
//! well. Send-side estimation from TWCC feedback would need the TWCC sender, a congestion
//! controller and a pacer in this chain and buys little for one stream on a path the receiver
//! already measures, so camera-pod negotiates TWCC only for what it receives (the browser's own
//! send-side estimate for the camera) and adapts its encoder to REMB within
//! `--min-bitrate`..`--max-bitrate`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::interceptor::{NackGeneratorBuilder, NackResponderBuilder};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RtpCodecKind};
use rtc::shared::error::Error;
use webrtc::peer_connection::{MediaEngine, Registry};

/// Packets the NACK responder keeps for retransmission, per sent stream: about 2.5 s of video
/// at the highest default bitrate (4 Mbit/s in ~1200-byte packets), longer at lower rates; a
/// retransmission older than that would arrive after the receiver gave up on the frame anyway.
pub const NACK_SEND_BUFFER: u16 = 1024;

/// How often the NACK generator asks for missing packets of the camera's stream. Short, so a
/// resend arrives well within [`crate::media::reorder::REORDER_WAIT`].
pub const NACK_INTERVAL: Duration = Duration::from_millis(20);
/// NACKs sent for one missing packet: they span about the reorder wait, after which the packet
/// is given up on.
pub const NACKS_PER_PACKET: u16 = 7;

/// Application-most: every interceptor has acted on a packet before it is marked.
const APPLICATION_SLOT: usize = 20_000;

/// Whether camera-pod acts on this inbound RTCP packet: PLI and FIR (send a key frame), REMB
/// (the receiver's bitrate estimate).
pub fn is_sender_feedback(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>()
        || any.is::<FullIntraRequest>()
        || any.is::<ReceiverEstimatedMaximumBitrate>()
}

/// Marks inbound RTCP packets that `wanted` selects for delivery to the application (as
/// `TrackLocalEvent::OnRtcpPacket` for feedback about a sent track, `TrackRemoteEvent` for a
/// received one); everything else goes on unchanged and ends at the chain's end as before.
pub struct RtcpToApplication {
    wanted: fn(&dyn rtc::rtcp::Packet) -> bool,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl RtcpToApplication {
    pub fn new(wanted: fn(&dyn rtc::rtcp::Packet) -> bool) -> Self {
        RtcpToApplication {
            wanted,
            reads: VecDeque::new(),
            writes: VecDeque::new(),
        }
    }
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for RtcpToApplication {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let wanted: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| (self.wanted)(p.as_ref()))
                .cloned()
                .collect();
            if !wanted.is_empty() {
                msg.message.packet = Packet::Rtcp(wanted);
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl Interceptor for RtcpToApplication {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// The chain of every peer connection, wire to application: NACK responder (a send buffer of
/// [`NACK_SEND_BUFFER`] packets) and generator, TWCC receiver, receiver and sender reports (the
/// same as webrtc's default chain), then `RtcpToApplication` for `wanted`. Registers the matching
/// RTCP feedback (`nack`, `nack pli`, `transport-cc`) and header extensions on `engine`.
pub fn interceptors(
    engine: &mut MediaEngine,
    wanted: fn(&dyn rtc::rtcp::Packet) -> bool,
) -> Result<Registry, webrtc::error::Error> {
    for parameter in ["", "pli"] {
        engine.register_feedback(
            RTCPFeedback {
                typ: "nack".into(),
                parameter: parameter.into(),
            },
            RtpCodecKind::Video,
        );
    }
    configure_simulcast_extension_headers(engine)?;
    let registry = Registry::new()
        .with(
            Slot::NackResponder,
            NackResponderBuilder::new()
                .with_size(NACK_SEND_BUFFER)
                .build(),
        )
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_interval(NACK_INTERVAL)
                .with_max_nacks_per_packet(NACKS_PER_PACKET)
                .build(),
        );
    let registry = configure_twcc_receiver_only(registry, engine)?;
    Ok(configure_rtcp_reports(registry)
        .with(Slot::from(APPLICATION_SLOT), RtcpToApplication::new(wanted)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::sansio::Protocol;

    fn inbound(packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: rtc::interceptor::AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    #[test]
    fn the_chain_answers_and_sends_nacks_and_ends_with_the_application_marker() {
        let mut engine = MediaEngine::default();
        let names: Vec<String> = interceptors(&mut engine, is_sender_feedback)
            .unwrap()
            .slots()
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        assert_eq!(
            names,
            [
                "NackResponderInterceptor",
                "NackGeneratorInterceptor",
                "TwccReceiverInterceptor",
                "ReceiverReportInterceptor",
                "SenderReportInterceptor",
                "RtcpToApplication",
            ],
        );
    }

    fn rtp(ssrc: u32, sequence_number: u16) -> TaggedPacket {
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                ssrc,
                sequence_number,
                payload_type: 96,
                ..Default::default()
            },
            payload: vec![1, 2, 3].into(),
        };
        TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: rtc::interceptor::AttributedPacket::new(Packet::Rtp(packet)),
        }
    }

    fn sent_sequence_numbers(chain: &mut impl Interceptor) -> Vec<u16> {
        std::iter::from_fn(|| chain.poll_write())
            .filter_map(|p| match p.message.packet {
                Packet::Rtp(rtp) => Some(rtp.header.sequence_number),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_nack_for_sent_video_is_answered_from_the_send_buffer() {
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
        let mut engine = MediaEngine::default();
        let mut chain = interceptors(&mut engine, is_sender_feedback)
            .unwrap()
            .build();
        chain.bind_local_stream(&StreamInfo {
            ssrc: 7,
            payload_type: 96,
            clock_rate: 90_000,
            mime_type: "video/VP8".into(),
            rtcp_feedback: vec![rtc::interceptor::RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            }],
            ..Default::default()
        });
        let first = 60_000u16;
        for offset in 0..NACK_SEND_BUFFER + 10 {
            chain
                .handle_write(rtp(7, first.wrapping_add(offset)))
                .unwrap();
        }
        assert_eq!(
            sent_sequence_numbers(&mut chain).len(),
            usize::from(NACK_SEND_BUFFER) + 10
        );
        // One packet still in the buffer, one that fell out of it.
        let (kept, dropped) = (first.wrapping_add(20), first.wrapping_add(5));
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 7,
            nacks: vec![
                NackPair {
                    packet_id: kept,
                    lost_packets: 0,
                },
                NackPair {
                    packet_id: dropped,
                    lost_packets: 0,
                },
            ],
        };
        chain.handle_read(inbound(vec![Box::new(nack)])).unwrap();
        while chain.poll_read().is_some() {}
        assert_eq!(sent_sequence_numbers(&mut chain), [kept]);
    }

    #[test]
    fn key_frame_requests_and_remb_are_marked_and_the_rest_is_not() {
        let mut forwarder = RtcpToApplication::new(is_sender_feedback);
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 2,
        };
        let remb = ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: 300_000.0,
            ssrcs: vec![2],
        };
        forwarder
            .handle_read(inbound(vec![
                Box::new(ReceiverReport::default()),
                Box::new(pli),
                Box::new(remb),
            ]))
            .unwrap();
        forwarder
            .handle_read(inbound(vec![Box::new(ReceiverReport::default())]))
            .unwrap();
        let marked = forwarder.poll_read().unwrap();
        assert!(marked.message.has(&Attribute::DeliverToApplication));
        let Packet::Rtcp(packets) = &marked.message.packet else {
            panic!("RTCP expected");
        };
        assert_eq!(packets.len(), 2, "only PLI and REMB: {packets:?}");
        assert!(packets.iter().all(|p| is_sender_feedback(p.as_ref())));
        let report = forwarder.poll_read().unwrap();
        assert!(!report.message.has(&Attribute::DeliverToApplication));
        assert!(forwarder.poll_read().is_none());
    }
}
