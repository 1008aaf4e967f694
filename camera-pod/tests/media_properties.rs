//! Property tests of camera-pod's parsers of media input from the network: SDP offers, RTP
//! packets and their reassembly into frames, RTCP feedback, data channel messages, and the
//! picture size an encoded frame announces. No input panics; reassembly never holds more than its
//! cap; what is accepted is what the checks promise.

mod properties {
    use std::collections::HashSet;
    use std::time::Instant;

    use bytes::Bytes;
    use camera_pod::codec::{CodecKind, announced_size};
    use camera_pod::media::datachannel::{self, ClientMessage, Reading, Stats};
    use camera_pod::media::feedback::{RtcpToApplication, is_sender_feedback};
    use camera_pod::media::latency::LatencyTotals;
    use camera_pod::media::rtp::{Assembly, FrameAssembler};
    use camera_pod::media::sdp::{MAX_REMOTE_CANDIDATES, SdpError, check_offer};
    use proptest::prelude::*;
    use rtc::interceptor::{
        Attribute, AttributedPacket, Packet as InterceptorPacket, TaggedPacket,
    };
    use rtc::rtp::header::Header;
    use rtc::rtp::packet::Packet as RtpPacket;
    use rtc::sansio::Protocol;
    use rtc::shared::marshal::Unmarshal;

    const BOTH: &[CodecKind] = &[CodecKind::Vp8, CodecKind::H264];

    fn codec() -> impl Strategy<Value = CodecKind> {
        prop_oneof![Just(CodecKind::Vp8), Just(CodecKind::H264)]
    }

    fn accepted() -> impl Strategy<Value = Vec<CodecKind>> {
        prop_oneof![
            Just(vec![CodecKind::Vp8]),
            Just(vec![CodecKind::H264]),
            Just(BOTH.to_vec()),
            Just(vec![CodecKind::H264, CodecKind::Vp8]),
        ]
    }

    /// One SDP line of the kinds an offer has, with values from plausible to hostile.
    fn sdp_line() -> impl Strategy<Value = String> {
        let payload_type = prop_oneof![Just("96".to_owned()), Just("102".to_owned()), "[0-9]{1,4}"];
        let codec_name = prop_oneof![
            Just("VP8"),
            Just("H264"),
            Just("VP9"),
            Just("rtx"),
            Just("vp8"),
            Just(""),
        ];
        let address = prop_oneof![
            "192\\.0\\.2\\.[0-9]{1,3}",
            Just("224.0.0.1".to_owned()),
            Just("0.0.0.0".to_owned()),
            Just("::".to_owned()),
            Just("ff02::1".to_owned()),
            "[a-z0-9-]{1,12}\\.local",
            "[ -~]{0,12}",
        ];
        prop_oneof![
            (
                prop_oneof![Just("video"), Just("audio"), Just("application")],
                0u32..70_000,
                prop::collection::vec(payload_type.clone(), 0..4)
            )
                .prop_map(|(kind, port, pts)| format!(
                    "m={kind} {port} UDP/TLS/RTP/SAVPF {}",
                    pts.join(" ")
                )),
            (payload_type.clone(), codec_name)
                .prop_map(|(pt, name)| format!("a=rtpmap:{pt} {name}/90000")),
            (payload_type, "[ -~]{0,60}").prop_map(|(pt, params)| format!("a=fmtp:{pt} {params}")),
            (
                address,
                0u32..70_000,
                prop_oneof![Just("udp"), Just("TCP"), Just("x")]
            )
                .prop_map(|(address, port, transport)| format!(
                    "a=candidate:1 1 {transport} 2122260223 {address} {port} typ host"
                )),
            "a=candidate:[ -~]{0,40}",
            Just("c=IN IP4 0.0.0.0".to_owned()),
            Just("a=mid:0".to_owned()),
            "[ -~]{0,80}",
        ]
    }

    /// An offer of `media` lines after a valid session header.
    fn offer_of(lines: &[String]) -> String {
        let mut sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_owned();
        for line in lines {
            sdp.push_str(line);
            sdp.push_str("\r\n");
        }
        sdp
    }

    /// An RTP packet in a stream: how far its sequence number moves, a timestamp from a few,
    /// the marker bit and a payload (the first byte decides partition starts).
    fn stream_packet() -> impl Strategy<Value = (i16, u32, bool, Vec<u8>)> {
        (
            prop_oneof![8 => Just(1i16), 1 => -3i16..5, 1 => any::<i16>()],
            0u32..4,
            prop::bool::weighted(0.2),
            prop::collection::vec(any::<u8>(), 0..1300),
        )
    }

    proptest! {
        #![proptest_config(p2pcamera_tests::properties::config())]

        #[test]
        fn any_text_as_an_offer_is_checked_without_panicking(text in "\\PC{0,400}") {
            let _ = check_offer(&text, BOTH);
        }

        #[test]
        fn offers_made_of_sdp_lines_answer_only_codecs_they_offer_and_the_pod_accepts(
            lines in prop::collection::vec(sdp_line(), 0..30),
            accepted in accepted(),
        ) {
            let sdp = offer_of(&lines);
            if let Ok(codecs) = check_offer(&sdp, &accepted) {
                prop_assert!(!codecs.is_empty());
                prop_assert!(codecs.iter().all(|c| accepted.contains(c)));
                prop_assert_eq!(codecs.iter().collect::<HashSet<_>>().len(), codecs.len());
                let text = sdp.to_ascii_uppercase();
                let named = |codec: &CodecKind| match codec {
                    CodecKind::Vp8 => text.contains("VP8/"),
                    CodecKind::H264 => text.contains("H264/"),
                };
                prop_assert!(codecs.iter().all(named), "{codecs:?} not all offered in {sdp}");
            }
        }

        #[test]
        fn offers_with_more_than_sixteen_distinct_candidates_are_refused(
            distinct in 0usize..40,
            repeats in prop::collection::vec(1usize..4, 40),
            bundled in any::<bool>(),
        ) {
            let mut video = vec![
                "m=video 9 UDP/TLS/RTP/SAVPF 96".to_owned(),
                "a=rtpmap:96 VP8/90000".to_owned(),
            ];
            let mut data = vec!["m=application 9 UDP/DTLS/SCTP webrtc-datachannel".to_owned()];
            for (i, repeat) in repeats.iter().take(distinct).enumerate() {
                let line = format!(
                    "a=candidate:{i} 1 udp 2122260223 198.51.100.{} {}",
                    i % 200 + 1,
                    50_000 + i
                );
                for copy in 0..*repeat {
                    let section = if bundled && copy % 2 == 1 { &mut data } else { &mut video };
                    section.push(line.clone());
                }
            }
            video.extend(data);
            let result = check_offer(&offer_of(&video), BOTH);
            if distinct <= MAX_REMOTE_CANDIDATES {
                prop_assert_eq!(result, Ok(vec![CodecKind::Vp8]));
            } else {
                prop_assert_eq!(
                    result,
                    Err(SdpError::TooManyCandidates { count: MAX_REMOTE_CANDIDATES + 1 })
                );
            }
        }

        #[test]
        fn any_bytes_as_an_rtp_packet_parse_and_assemble_without_panicking(
            bytes in prop::collection::vec(any::<u8>(), 0..1500),
            codec in codec(),
        ) {
            if let Ok(packet) = RtpPacket::unmarshal(&mut Bytes::from(bytes)) {
                let mut assembler = FrameAssembler::new(codec);
                let _ = assembler.push(&packet.header, &packet.payload);
            }
        }

        #[test]
        fn reassembly_never_holds_more_than_its_cap(
            codec in codec(),
            cap in 1usize..16_384,
            packets in prop::collection::vec(stream_packet(), 1..120),
        ) {
            let mut assembler = FrameAssembler::with_max_frame_bytes(codec, cap);
            let mut sequence_number = 0u16;
            for (step, timestamp, marker, payload) in packets {
                sequence_number = sequence_number.wrapping_add_signed(step);
                let header = Header {
                    sequence_number,
                    timestamp: timestamp * 3000,
                    marker,
                    ..Default::default()
                };
                let assembly = assembler.push(&header, &Bytes::from(payload));
                prop_assert!(assembler.held_bytes() <= cap, "{} > {cap}", assembler.held_bytes());
                if let Assembly::Frame(frame) = assembly {
                    prop_assert!(frame.data.len() <= cap);
                    prop_assert_eq!(frame.rtp_timestamp, header.timestamp);
                }
            }
        }

        #[test]
        fn any_bytes_as_rtcp_are_parsed_and_only_sender_feedback_is_marked(
            bytes in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut Bytes::from(bytes)) else {
                return Ok(());
            };
            let wanted = packets.iter().filter(|p| is_sender_feedback(p.as_ref())).count();
            let mut forwarder = RtcpToApplication::new(is_sender_feedback);
            forwarder
                .handle_read(TaggedPacket {
                    now: Instant::now(),
                    transport: Default::default(),
                    message: AttributedPacket::new(InterceptorPacket::Rtcp(packets)),
                })
                .unwrap();
            let read = forwarder.poll_read().unwrap();
            let InterceptorPacket::Rtcp(passed) = &read.message.packet else {
                panic!("RTCP in, RTCP out");
            };
            prop_assert_eq!(read.message.has(&Attribute::DeliverToApplication), wanted > 0);
            if wanted > 0 {
                prop_assert_eq!(passed.len(), wanted);
            }
        }

        #[test]
        fn any_data_channel_message_is_parsed_and_answered_with_json_or_a_pong(
            bytes in prop::collection::vec(any::<u8>(), 0..400),
            text in "\\PC{0,200}",
        ) {
            for message in [String::from_utf8_lossy(&bytes).into_owned(), text] {
                match datachannel::parse(&message) {
                    ClientMessage::Ping(rest) => {
                        prop_assert_eq!(datachannel::pong(rest), format!("pong{rest}"));
                        prop_assert!(message.starts_with("ping"));
                    }
                    ClientMessage::SwitchFilter(spec) => {
                        let parsed = serde_json::from_str::<serde_json::Value>(spec);
                        prop_assert!(parsed.is_ok_and(|v| v.is_object() && v["type"] != "path"));
                    }
                    // A path report is unanswered, and only a JSON object of type `path`.
                    ClientMessage::CameraTransport(_) => {
                        let parsed = serde_json::from_str::<serde_json::Value>(message.trim());
                        prop_assert!(parsed.is_ok_and(|v| v["type"] == "path"));
                    }
                    ClientMessage::Unknown => {
                        let reply = datachannel::unknown_reply();
                        prop_assert!(serde_json::from_str::<serde_json::Value>(&reply).is_ok());
                    }
                }
            }
        }

        #[test]
        fn stats_from_any_counter_readings_are_json(
            readings in prop::array::uniform2((any::<f64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>())),
            model_micros in any::<u64>(),
            dropped in any::<u64>(),
            filter in "\\PC{0,30}",
            forwarded in any::<bool>(),
        ) {
            let [(s0, in0, out0, us0, n0), (s1, in1, out1, us1, n1)] = readings;
            let reading = |seconds, frames_in, frames_out, micros, frames| Reading {
                seconds,
                frames_in,
                frames_out,
                latency: LatencyTotals { micros, frames },
            };
            let stats = Stats::between(reading(s0, in0, out0, us0, n0), reading(s1, in1, out1, us1, n1), model_micros, dropped, filter, forwarded);
            let json: serde_json::Value = serde_json::from_str(&stats.to_json()).unwrap();
            prop_assert!(json["type"] == "stats", "{json}");
        }

        #[test]
        fn any_bytes_announce_a_size_without_panicking(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            codec in codec(),
        ) {
            // With and without an H264 SPS header in front, to reach the SPS parser.
            let mut sps = vec![0, 0, 0, 1, 0x67];
            sps.extend(&bytes);
            for data in [&bytes, &sps] {
                if let Some((width, height)) = announced_size(codec, data) {
                    prop_assert!(width > 0 && height > 0);
                }
            }
        }
    }
}
