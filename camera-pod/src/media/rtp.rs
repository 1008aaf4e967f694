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
/// than the last one taken are ignored.
pub struct FrameAssembler {
    codec: CodecKind,
    depacketizer: Depacketizers,
    next_seq: Option<u16>,
    timestamp: Option<u32>,
    data: Vec<u8>,
    broken: bool,
    awaiting_keyframe: bool,
}

impl FrameAssembler {
    pub fn new(codec: CodecKind) -> Self {
        FrameAssembler {
            codec,
            depacketizer: Depacketizers::new(codec),
            next_seq: None,
            timestamp: None,
            data: Vec::new(),
            broken: false,
            awaiting_keyframe: true,
        }
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
            self.depacketizer = Depacketizers::new(self.codec);
            self.broken = !self.depacketizer.get().is_partition_head(payload);
        }
        if payload.is_empty() {
            // Padding-only packet.
        } else {
            match self.depacketizer.get().depacketize(payload) {
                Ok(bytes) => self.data.extend_from_slice(&bytes),
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
}

/// Whether an encoded frame (VP8 bitstream, or H264 Annex B) can be decoded on its own.
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
