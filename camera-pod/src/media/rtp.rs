//! RTP framing, both ways: reassembling encoded frames from incoming packets (with loss
//! detection) and cutting encoded frames into outgoing packets that keep the input's timestamps.

use bytes::Bytes;
use rtc::rtp::codec::h264::{H264Packet, H264Payloader};
use rtc::rtp::codec::vp8::{Vp8Packet, Vp8Payloader};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp::packetizer::{Depacketizer, Payloader};

use crate::codec::CodecKind;

/// RTP payload bytes per packet (leaves room for headers, SRTP and extensions under 1280).
pub const RTP_PAYLOAD_MTU: usize = 1188;

/// Most bytes one frame may hold while it is reassembled: a 4K key frame at the highest default
/// bitrate is well under 1 MiB. A frame growing past this (packets that keep one timestamp and
/// never carry the marker bit) is dropped and the stream restarts at the next key frame.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// One encoded frame reassembled from RTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledFrame {
    pub data: Vec<u8>,
    pub rtp_timestamp: u32,
    pub keyframe: bool,
}

/// What one incoming packet led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembly {
    /// The packet was buffered (or ignored as late).
    Pending,
    /// A complete frame is ready to decode.
    Frame(AssembledFrame),
    /// Packets were lost; frames are dropped until a key frame arrives, so ask for one.
    NeedKeyframe,
    /// The frame grew past its cap ([`MAX_FRAME_BYTES`]): it is dropped (the rest of its packets are
    /// ignored) and frames are dropped until a key frame arrives. Reported once per frame.
    Oversized,
}

enum Depacketizers {
    Vp8(Vp8Packet),
    H264(H264Packet),
}

impl Depacketizers {
    fn new(codec: CodecKind) -> Self {
        match codec {
            CodecKind::Vp8 => Depacketizers::Vp8(Vp8Packet::default()),
            CodecKind::H264 => Depacketizers::H264(H264Packet::default()),
        }
    }

    fn get(&mut self) -> &mut dyn Depacketizer {
        match self {
            Depacketizers::Vp8(d) => d,
            Depacketizers::H264(d) => d,
        }
    }
}

/// Reassembles frames from in-order RTP packets (put in order, resent ones included, by
/// [`super::reorder::ReorderBuffer`]). A sequence gap breaks the frame it falls in and every
/// frame after it until the next key frame (the decoder's references are gone); packets older
/// than the last one taken are ignored. A frame holds at most [`MAX_FRAME_BYTES`].
pub struct FrameAssembler {
    codec: CodecKind,
    max_frame_bytes: usize,
    depacketizer: Depacketizers,
    next_seq: Option<u16>,
    timestamp: Option<u32>,
    data: Vec<u8>,
    /// Payload bytes the depacketizer took without giving anything back yet (the fragments of
    /// an H264 NAL unit it buffers until the last one): at most what it holds.
    pending: usize,
    broken: bool,
    /// The frame in progress went over the cap; its remaining packets are ignored.
    oversized: bool,
    awaiting_keyframe: bool,
}

impl FrameAssembler {
    pub fn new(codec: CodecKind) -> Self {
        FrameAssembler::with_max_frame_bytes(codec, MAX_FRAME_BYTES)
    }

    /// An assembler whose frames hold at most `max_frame_bytes` (property tests use small caps
    /// to reach them often).
    pub fn with_max_frame_bytes(codec: CodecKind, max_frame_bytes: usize) -> Self {
        FrameAssembler {
            codec,
            max_frame_bytes,
            depacketizer: Depacketizers::new(codec),
            next_seq: None,
            timestamp: None,
            data: Vec::new(),
            pending: 0,
            broken: false,
            oversized: false,
            awaiting_keyframe: true,
        }
    }

    /// Bytes held for the frame in progress: what is assembled, plus what the depacketizer
    /// buffers. Never more than the cap ([`MAX_FRAME_BYTES`] unless set otherwise).
    pub fn held_bytes(&self) -> usize {
        self.data.len() + self.pending
    }

    /// Forgets the frame in progress and its memory.
    fn discard_frame(&mut self) {
        self.data = Vec::new();
        self.pending = 0;
        self.depacketizer = Depacketizers::new(self.codec);
    }

    /// Drops frames until the next key frame (the decoder lost its references).
    pub fn require_keyframe(&mut self) {
        self.awaiting_keyframe = true;
    }

    pub fn push(&mut self, header: &Header, payload: &Bytes) -> Assembly {
        if let Some(next) = self.next_seq {
            let ahead = header.sequence_number.wrapping_sub(next) as i16;
            if ahead < 0 {
                return Assembly::Pending;
            }
            if ahead > 0 {
                self.broken = true;
                self.awaiting_keyframe = true;
            }
        }
        self.next_seq = Some(header.sequence_number.wrapping_add(1));
        let lost = self.broken;

        if self.timestamp != Some(header.timestamp) {
            // A new frame starts; whatever was collected for the previous one is incomplete.
            self.timestamp = Some(header.timestamp);
            self.data.clear();
            self.pending = 0;
            self.oversized = false;
            self.depacketizer = Depacketizers::new(self.codec);
            self.broken = !self.depacketizer.get().is_partition_head(payload);
        }
        if self.oversized {
            // The rest of a frame already dropped for its size.
            if header.marker {
                self.timestamp = None;
            }
            return Assembly::Pending;
        }
        if payload.is_empty() {
            // Padding-only packet.
        } else if self.held_bytes() + payload.len() > self.max_frame_bytes {
            return self.drop_oversized(header.marker);
        } else if self.codec == CodecKind::H264 && !stap_a_is_well_formed(payload) {
            // rtc-rtp's H264 depacketizer indexes past the end of a STAP-A whose last length
            // field is cut short (a panic on network input): such a packet never reaches it.
            self.broken = true;
        } else {
            match self.depacketizer.get().depacketize(payload) {
                Ok(bytes) if bytes.is_empty() => self.pending += payload.len(),
                Ok(bytes) if self.data.len() + bytes.len() > self.max_frame_bytes => {
                    return self.drop_oversized(header.marker);
                }
                Ok(bytes) => {
                    self.pending = 0;
                    self.data.extend_from_slice(&bytes);
                }
                Err(_) => self.broken = true,
            }
        }
        if !header.marker {
            return if lost {
                Assembly::NeedKeyframe
            } else {
                Assembly::Pending
            };
        }
        let data = std::mem::take(&mut self.data);
        let complete = !self.broken && !data.is_empty();
        self.timestamp = None;
        self.pending = 0;
        self.broken = false;
        if !complete {
            self.awaiting_keyframe = true;
            return Assembly::NeedKeyframe;
        }
        let keyframe = is_keyframe(self.codec, &data);
        if self.awaiting_keyframe && !keyframe {
            return Assembly::NeedKeyframe;
        }
        self.awaiting_keyframe = false;
        Assembly::Frame(AssembledFrame {
            data,
            rtp_timestamp: header.timestamp,
            keyframe,
        })
    }

    /// Drops the frame in progress for its size; frames after it need a key frame first.
    fn drop_oversized(&mut self, last_packet: bool) -> Assembly {
        self.discard_frame();
        self.awaiting_keyframe = true;
        if last_packet {
            self.timestamp = None;
        } else {
            self.oversized = true;
        }
        Assembly::Oversized
    }
}

/// Whether an encoded frame (VP8 bitstream, or H264 Annex B) can be decoded on its own.
/// Whether an H264 payload that is a STAP-A (NAL type 24) holds whole `length, NAL unit` pairs;
/// any other payload passes.
fn stap_a_is_well_formed(payload: &[u8]) -> bool {
    const STAP_A: u8 = 24;
    if payload.first().map(|header| header & 0x1f) != Some(STAP_A) {
        return true;
    }
    let mut rest = &payload[1..];
    while !rest.is_empty() {
        let [high, low, units @ ..] = rest else {
            return false;
        };
        let size = usize::from(u16::from_be_bytes([*high, *low]));
        let Some(after) = units.get(size..) else {
            return false;
        };
        rest = after;
    }
    true
}

pub fn is_keyframe(codec: CodecKind, data: &[u8]) -> bool {
    match codec {
        // VP8 frame tag: bit 0 of the first byte is 0 for a key frame.
        CodecKind::Vp8 => data.first().is_some_and(|b| b & 1 == 0),
        CodecKind::H264 => annexb_nal_types(data).any(|t| t == 5),
    }
}

fn annexb_nal_types(data: &[u8]) -> impl Iterator<Item = u8> + '_ {
    data.windows(4)
        .filter_map(|w| (w[0] == 0 && w[1] == 0 && w[2] == 1).then_some(w[3] & 0x1f))
}

/// Cuts encoded frames into RTP packets for one outgoing stream.
pub struct RtpPacketizer {
    payloader: Box<dyn Payloader>,
    ssrc: u32,
    payload_type: u8,
    sequence_number: u16,
}

impl RtpPacketizer {
    pub fn new(codec: CodecKind, ssrc: u32, payload_type: u8) -> Self {
        let payloader: Box<dyn Payloader> = match codec {
            CodecKind::Vp8 => Box::new(Vp8Payloader::default()),
            CodecKind::H264 => Box::new(H264Payloader::default()),
        };
        RtpPacketizer {
            payloader,
            ssrc,
            payload_type,
            sequence_number: rand::random(),
        }
    }

    /// The packets of one frame, all stamped with `rtp_timestamp`; the last carries the marker.
    pub fn packetize(&mut self, data: &[u8], rtp_timestamp: u32) -> Vec<Packet> {
        let payloads = match self
            .payloader
            .payload(RTP_PAYLOAD_MTU, &Bytes::copy_from_slice(data))
        {
            Ok(payloads) => payloads,
            Err(error) => {
                tracing::warn!(%error, "cannot packetize an encoded frame");
                return Vec::new();
            }
        };
        let count = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let sequence_number = self.sequence_number;
                self.sequence_number = self.sequence_number.wrapping_add(1);
                Packet {
                    header: Header {
                        version: 2,
                        marker: i + 1 == count,
                        payload_type: self.payload_type,
                        sequence_number,
                        timestamp: rtp_timestamp,
                        ssrc: self.ssrc,
                        ..Default::default()
                    },
                    payload,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake VP8 bitstream whose first byte marks it as key or delta frame.
    fn vp8_frame(key: bool, len: usize) -> Vec<u8> {
        let mut data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        data[0] = if key { 0x10 } else { 0x11 };
        data
    }

    fn round_trip(codec: CodecKind, frames: &[(Vec<u8>, u32)]) -> Vec<Packet> {
        let mut packetizer = RtpPacketizer::new(codec, 42, 96);
        frames
            .iter()
            .flat_map(|(data, ts)| packetizer.packetize(data, *ts))
            .collect()
    }

    fn feed(assembler: &mut FrameAssembler, packets: &[Packet]) -> Vec<Assembly> {
        packets
            .iter()
            .map(|p| assembler.push(&p.header, &p.payload))
            .filter(|a| *a != Assembly::Pending)
            .collect()
    }

    #[test]
    fn vp8_frames_survive_packetizing_and_keep_timestamps() {
        let frames = vec![(vp8_frame(true, 5000), 1000), (vp8_frame(false, 700), 4000)];
        let packets = round_trip(CodecKind::Vp8, &frames);
        assert!(packets.len() >= 6);
        assert!(
            packets
                .iter()
                .all(|p| p.payload.len() <= RTP_PAYLOAD_MTU && p.header.ssrc == 42)
        );
        let mut assembler = FrameAssembler::new(CodecKind::Vp8);
        let out = feed(&mut assembler, &packets);
        assert_eq!(
            out,
            vec![
                Assembly::Frame(AssembledFrame {
                    data: frames[0].0.clone(),
                    rtp_timestamp: 1000,
                    keyframe: true
                }),
                Assembly::Frame(AssembledFrame {
                    data: frames[1].0.clone(),
                    rtp_timestamp: 4000,
                    keyframe: false
                }),
            ]
        );
    }

    #[test]
    fn h264_frames_survive_packetizing() {
        let mut idr = vec![
            0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x38, 0x80, 0, 0, 0, 1,
            0x65,
        ];
        idr.extend((0..4000).map(|i| (i % 200 + 1) as u8));
        let mut delta = vec![0, 0, 0, 1, 0x41];
        delta.extend((0..300).map(|i| (i % 200 + 1) as u8));
        let packets = round_trip(CodecKind::H264, &[(idr.clone(), 90), (delta.clone(), 3090)]);
        let mut assembler = FrameAssembler::new(CodecKind::H264);
        let out = feed(&mut assembler, &packets);
        let [Assembly::Frame(first), Assembly::Frame(second)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(first.keyframe && !second.keyframe);
        assert_eq!(first.rtp_timestamp, 90);
        // Annex B start codes may be shortened to three bytes; the NAL units are the same.
        assert_eq!(
            annexb_nal_types(&first.data).collect::<Vec<_>>(),
            vec![7, 8, 5]
        );
        assert!(first.data.ends_with(&idr[idr.len() - 100..]));
        assert!(second.data.ends_with(&delta[1..]));
    }

    #[test]
    fn malformed_stap_a_packets_are_dropped_before_the_depacketizer() {
        // A STAP-A whose second length field is cut to one byte (rtc-rtp 0.21 panics on it).
        assert!(!stap_a_is_well_formed(&[24, 0, 1, 0x65, 0]));
        assert!(!stap_a_is_well_formed(&[24, 0, 5, 0x65]));
        assert!(stap_a_is_well_formed(&[24, 0, 1, 0x67, 0, 1, 0x68]));
        assert!(stap_a_is_well_formed(&[0x65, 1, 2]));
        let mut assembler = FrameAssembler::new(CodecKind::H264);
        let header = Header {
            marker: true,
            sequence_number: 1,
            timestamp: 90,
            ..Header::default()
        };
        let outcome = assembler.push(&header, &Bytes::from_static(&[24, 0, 1, 0x65, 0]));
        assert!(matches!(outcome, Assembly::NeedKeyframe), "{outcome:?}");
    }

    #[test]
    fn loss_drops_frames_until_the_next_keyframe() {
        let frames = vec![
            (vp8_frame(true, 3000), 0),
            (vp8_frame(false, 3000), 3000),
            (vp8_frame(false, 500), 6000),
            (vp8_frame(true, 3000), 9000),
        ];
        let mut packets = round_trip(CodecKind::Vp8, &frames);
        // Lose the second packet of the second frame.
        let second_frame_start = packets
            .iter()
            .position(|p| p.header.timestamp == 3000)
            .unwrap();
        packets.remove(second_frame_start + 1);
        let mut assembler = FrameAssembler::new(CodecKind::Vp8);
        let out = feed(&mut assembler, &packets);
        let frames_out: Vec<u32> = out
            .iter()
            .filter_map(|a| {
                if let Assembly::Frame(f) = a {
                    Some(f.rtp_timestamp)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(frames_out, vec![0, 9000]);
        assert!(out.contains(&Assembly::NeedKeyframe));
    }

    /// Packets of one timestamp that never end a frame: `payload(i)` for packet `i`.
    fn endless_frame(
        assembler: &mut FrameAssembler,
        packets: usize,
        payload: impl Fn(usize) -> Vec<u8>,
    ) -> Vec<Assembly> {
        let mut outcomes = Vec::new();
        for i in 0..packets {
            let header = Header {
                sequence_number: i as u16,
                timestamp: 7,
                marker: false,
                ..Default::default()
            };
            let outcome = assembler.push(&header, &Bytes::from(payload(i)));
            assert!(
                assembler.held_bytes() <= MAX_FRAME_BYTES,
                "{} bytes held after packet {i}",
                assembler.held_bytes()
            );
            if outcome != Assembly::Pending {
                outcomes.push(outcome);
            }
        }
        outcomes
    }

    /// Packet `i` of 1000-byte packets of a VP8 key frame (the first one starts the frame).
    fn vp8_payload(i: usize) -> Vec<u8> {
        let mut payload = vec![0; 1000];
        payload[0] = if i == 0 { 0x10 } else { 0x00 };
        payload[1] = 0x10;
        payload
    }

    /// Enough 1000-byte packets to go over the cap.
    fn packets_over_the_cap() -> usize {
        MAX_FRAME_BYTES / 1000 + 100
    }

    #[test]
    fn a_frame_that_never_ends_is_dropped_at_the_cap_and_the_next_key_frame_is_awaited() {
        let packets = packets_over_the_cap();
        // VP8: the first packet starts a partition, the rest continue it.
        let mut vp8 = FrameAssembler::new(CodecKind::Vp8);
        let outcomes = endless_frame(&mut vp8, packets, vp8_payload);
        assert_eq!(outcomes, [Assembly::Oversized], "reported once");
        assert_eq!(vp8.held_bytes(), 0, "the dropped frame's memory is freed");
        // H264: one FU-A NAL unit whose end never comes (the depacketizer buffers it).
        let mut h264 = FrameAssembler::new(CodecKind::H264);
        let outcomes = endless_frame(&mut h264, packets, |i| {
            let mut payload = vec![0x7c, if i == 0 { 0x85 } else { 0x05 }];
            payload.resize(1000, 0xab);
            payload
        });
        assert_eq!(outcomes, [Assembly::Oversized]);
        assert_eq!(h264.held_bytes(), 0);

        // Between whole frames: the endless one is dropped, then delta frames until a key frame.
        let mut packets = round_trip(CodecKind::Vp8, &[(vp8_frame(true, 100), 0)]);
        packets.extend((0..packets_over_the_cap()).map(|i| Packet {
            header: Header {
                timestamp: 3000,
                ..Default::default()
            },
            payload: vp8_payload(i).into(),
        }));
        packets.extend(round_trip(
            CodecKind::Vp8,
            &[(vp8_frame(false, 100), 6000), (vp8_frame(true, 100), 9000)],
        ));
        for (seq, packet) in packets.iter_mut().enumerate() {
            packet.header.sequence_number = seq as u16;
        }
        let mut vp8 = FrameAssembler::new(CodecKind::Vp8);
        let out = feed(&mut vp8, &packets);
        assert!(
            matches!(&out[..], [Assembly::Frame(a), Assembly::Oversized, Assembly::NeedKeyframe, Assembly::Frame(b)]
                if a.rtp_timestamp == 0 && b.rtp_timestamp == 9000),
            "{:?}",
            out.iter().map(std::mem::discriminant).collect::<Vec<_>>()
        );
    }

    #[test]
    fn late_duplicates_are_ignored_and_stream_must_start_with_a_keyframe() {
        let packets = round_trip(
            CodecKind::Vp8,
            &[(vp8_frame(false, 100), 0), (vp8_frame(true, 100), 3000)],
        );
        let mut assembler = FrameAssembler::new(CodecKind::Vp8);
        assert_eq!(
            assembler.push(&packets[0].header, &packets[0].payload),
            Assembly::NeedKeyframe
        );
        assert!(
            matches!(assembler.push(&packets[1].header, &packets[1].payload), Assembly::Frame(f) if f.keyframe)
        );
        assert_eq!(
            assembler.push(&packets[0].header, &packets[0].payload),
            Assembly::Pending
        );
    }
}
