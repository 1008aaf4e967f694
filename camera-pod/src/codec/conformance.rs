//! Behaviour every codec must show, run against the real encoder and decoder of each codec
//! through the public constructors. Each codec's module calls these from its own tests.

use super::{CodecKind, Decoder, EncodedFrame, Encoder, new_decoder, new_encoder};
use crate::frame::VideoFrame;

/// RTP ticks between pictures at 30 fps.
const FRAME_TICKS: u32 = 3000;

/// A camera-like picture: smooth shading plus a textured square that moves every frame.
pub fn moving_pattern(width: u32, height: u32, index: u32) -> VideoFrame {
    let mut frame = VideoFrame::filled(width, height, 0, 0, 0);
    let (side, step) = (width.min(height) / 3, 6);
    let (sx, sy) = (
        (index * step) % (width - side),
        (index * step / 2) % (height - side),
    );
    for y in 0..height {
        for x in 0..width {
            let shade = 40 + (x * 120 / width + y * 60 / height) as u8;
            let in_square = (sx..sx + side).contains(&x) && (sy..sy + side).contains(&y);
            let texture = if ((x - sx.min(x)) / 8 + (y - sy.min(y)) / 8) % 2 == 0 {
                200
            } else {
                90
            };
            frame.y[(y * width + x) as usize] = if in_square { texture } else { shade };
        }
    }
    let cw = frame.chroma_width();
    for y in 0..frame.chroma_height() {
        for x in 0..cw {
            frame.u[(y * cw + x) as usize] = (100 + (x + index) % 56) as u8;
            frame.v[(y * cw + x) as usize] = (150 - y % 40) as u8;
        }
    }
    frame.rtp_timestamp = 1_000 + index * FRAME_TICKS;
    frame
}

/// The moving pattern with fresh film grain every frame: detail that costs as many bits as the
/// encoder is given, like a noisy camera.
pub fn grainy_pattern(width: u32, height: u32, index: u32) -> VideoFrame {
    let mut frame = moving_pattern(width, height, index);
    let grain = random_bytes(frame.y.len(), 0x9e37_79b9 ^ index.wrapping_mul(0x85eb_ca6b));
    for (px, g) in frame.y.iter_mut().zip(grain) {
        *px = px.saturating_add(g % 24);
    }
    frame
}

/// Peak signal-to-noise ratio of two luma planes, in dB.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "planes of different sizes");
    let sse: f64 = a
        .iter()
        .zip(b)
        .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
        .sum();
    if sse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0_f64 * 255.0 * a.len() as f64 / sse).log10()
}

fn codec_pair(kind: CodecKind, bitrate_bps: u32) -> (Box<dyn Encoder>, Box<dyn Decoder>) {
    (
        new_encoder(kind, bitrate_bps).expect("encoder"),
        new_decoder(kind).expect("decoder"),
    )
}

fn decode_one(decoder: &mut dyn Decoder, encoded: &EncodedFrame) -> VideoFrame {
    decoder
        .decode(&encoded.data, encoded.rtp_timestamp)
        .expect("a frame from our own encoder decodes")
        .expect("a complete frame gives a picture")
}

/// Encodes then decodes a moving picture at 640x480 with a generous bitrate: every picture comes
/// out once, with its size and timestamp, and close to the original.
pub fn round_trip_keeps_quality(kind: CodecKind) {
    let (mut encoder, mut decoder) = codec_pair(kind, 2_500_000);
    let mut worst = f64::INFINITY;
    for i in 0..30 {
        let input = moving_pattern(640, 480, i);
        let encoded = encoder.encode(&input, false).expect("encode");
        assert_eq!(encoded.rtp_timestamp, input.rtp_timestamp);
        assert_eq!(
            encoded.keyframe,
            i == 0,
            "only the first frame is a key frame (frame {i})"
        );
        let output = decode_one(decoder.as_mut(), &encoded);
        assert_eq!((output.width, output.height), (640, 480));
        assert_eq!(output.rtp_timestamp, input.rtp_timestamp);
        assert_eq!((output.u.len(), output.v.len()), (320 * 240, 320 * 240));
        worst = worst.min(psnr(&input.y, &output.y));
        let (u, v) = (psnr(&input.u, &output.u), psnr(&input.v, &output.v));
        assert!(
            u > 30.0 && v > 30.0,
            "{kind:?}: chroma of frame {i} at {u:.1}/{v:.1} dB"
        );
    }
    assert!(worst > 30.0, "{kind:?}: worst luma PSNR {worst:.1} dB");
}

/// A forced key frame is a key frame in the bitstream (`is_keyframe`), and a decoder that joins
/// there (a new receiver) can start from it.
pub fn forced_keyframe_starts_a_new_receiver(kind: CodecKind, is_keyframe: fn(&[u8]) -> bool) {
    let (mut encoder, _) = codec_pair(kind, 1_000_000);
    for i in 0..12 {
        let input = moving_pattern(320, 240, i);
        let force = i == 7;
        let encoded = encoder.encode(&input, force).expect("encode");
        let expect_key = i == 0 || force;
        assert_eq!(encoded.keyframe, expect_key, "keyframe flag of frame {i}");
        assert_eq!(
            is_keyframe(&encoded.data),
            expect_key,
            "bitstream of frame {i}"
        );
        if force {
            let mut late = new_decoder(kind).expect("decoder");
            let output = decode_one(late.as_mut(), &encoded);
            assert!(psnr(&input.y, &output.y) > 30.0);
        }
    }
}

/// The encoder follows the picture size: each new size starts with a key frame and the decoder
/// follows it.
pub fn follows_size_changes(kind: CodecKind) {
    let (mut encoder, mut decoder) = codec_pair(kind, 2_000_000);
    let sizes = [(640, 480), (320, 240), (1280, 720), (640, 480)];
    let mut index = 0;
    for (width, height) in sizes {
        for n in 0..4 {
            let input = moving_pattern(width, height, index);
            index += 1;
            let encoded = encoder.encode(&input, false).expect("encode");
            assert_eq!(encoded.keyframe, n == 0, "{width}x{height} frame {n}");
            let output = decode_one(decoder.as_mut(), &encoded);
            assert_eq!((output.width, output.height), (width, height));
            let quality = psnr(&input.y, &output.y);
            assert!(
                quality > 30.0,
                "{width}x{height} frame {n}: {quality:.1} dB"
            );
        }
    }
}

/// Garbage is an error, never a panic, and a following key frame decodes again.
pub fn recovers_from_garbage(kind: CodecKind, garbage: &[&[u8]]) {
    let (mut encoder, mut decoder) = codec_pair(kind, 1_000_000);
    for i in 0..3 {
        let encoded = encoder
            .encode(&moving_pattern(320, 240, i), false)
            .expect("encode");
        decode_one(decoder.as_mut(), &encoded);
    }
    for (n, bytes) in garbage.iter().enumerate() {
        assert!(
            decoder.decode(bytes, 0).is_err(),
            "garbage #{n} ({} bytes) was accepted",
            bytes.len()
        );
    }
    // A frame cut short is refused too.
    let whole = encoder
        .encode(&moving_pattern(320, 240, 3), true)
        .expect("encode");
    assert!(
        decoder
            .decode(&whole.data[..whole.data.len() / 3], 0)
            .is_err(),
        "a truncated frame was accepted"
    );

    let input = moving_pattern(320, 240, 4);
    let key = encoder.encode(&input, true).expect("encode");
    let output = decode_one(decoder.as_mut(), &key);
    assert!(psnr(&input.y, &output.y) > 30.0);
    let next = moving_pattern(320, 240, 5);
    let output = decode_one(
        decoder.as_mut(),
        &encoder.encode(&next, false).expect("encode"),
    );
    assert!(psnr(&next.y, &output.y) > 30.0);
}

/// Pseudo-random bytes for garbage tests.
pub fn random_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// Bitrate changes take effect within a few frames, both down and back up, and the encoder
/// stays near its target on content that could use much more.
pub fn follows_bitrate_changes(kind: CodecKind) {
    const HIGH: u32 = 2_000_000;
    const LOW: u32 = 200_000;
    let mut encoder = new_encoder(kind, HIGH).expect("encoder");
    let mut index = 0;
    // Bits per second over the last 20 of 30 frames (the first 10 let rate control settle).
    let mut phase = |encoder: &mut Box<dyn Encoder>, bitrate: u32| {
        encoder.set_bitrate(bitrate);
        let mut bytes = 0;
        for n in 0..30 {
            let encoded = encoder
                .encode(&grainy_pattern(320, 240, index), false)
                .expect("encode");
            index += 1;
            if n >= 10 {
                bytes += encoded.data.len();
            }
        }
        bytes as f64 * 8.0 * 30.0 / 20.0
    };
    let high = phase(&mut encoder, HIGH);
    let low = phase(&mut encoder, LOW);
    let high_again = phase(&mut encoder, HIGH);
    assert!(
        low < f64::from(LOW) * 2.0,
        "{kind:?}: {low:.0} bit/s at a {LOW} target"
    );
    assert!(
        high > low * 4.0,
        "{kind:?}: {high:.0} bit/s at {HIGH} vs {low:.0} at {LOW}"
    );
    assert!(
        high_again > low * 4.0,
        "{kind:?}: back up gave {high_again:.0} bit/s vs {low:.0}"
    );
    assert!(
        high < f64::from(HIGH) * 2.0,
        "{kind:?}: {high:.0} bit/s at a {HIGH} target"
    );
}

/// When pictures come slower than the camera's rate (a slow filter), each picture gets a larger
/// share so the stream still uses its bitrate.
pub fn keeps_bitrate_at_lower_frame_rates(kind: CodecKind) {
    const TARGET: u32 = 500_000;
    let mut encoder = new_encoder(kind, TARGET).expect("encoder");
    let mut bytes = 0;
    for i in 0..60 {
        let mut input = grainy_pattern(320, 240, i);
        input.rtp_timestamp = i * 2 * FRAME_TICKS; // 15 pictures per second
        let encoded = encoder.encode(&input, false).expect("encode");
        if i >= 30 {
            bytes += encoded.data.len();
        }
    }
    let rate = bytes as f64 * 8.0 / 2.0; // 30 pictures at 15 per second
    assert!(
        rate > f64::from(TARGET) * 0.7,
        "{kind:?}: {rate:.0} bit/s at 15 fps for a {TARGET} target"
    );
    assert!(
        rate < f64::from(TARGET) * 1.5,
        "{kind:?}: {rate:.0} bit/s at 15 fps for a {TARGET} target"
    );
}

/// Whatever a congestion controller asks for, the encoder keeps producing frames.
pub fn survives_extreme_bitrates(kind: CodecKind) {
    let mut encoder = new_encoder(kind, 0).expect("encoder");
    for (i, bitrate) in [0, u32::MAX, 1, 300_000].into_iter().enumerate() {
        encoder.set_bitrate(bitrate);
        for n in 0..3 {
            let index = i as u32 * 3 + n;
            let encoded = encoder.encode(&moving_pattern(160, 120, index), false);
            assert!(
                encoded.is_ok_and(|e| !e.data.is_empty()),
                "{kind:?} at {bitrate} bit/s"
            );
        }
    }
}

/// Pictures the encoder cannot take are errors, not panics.
pub fn refuses_malformed_pictures(kind: CodecKind) {
    let mut encoder = new_encoder(kind, 500_000).expect("encoder");
    let mut short = moving_pattern(64, 48, 0);
    short.y.truncate(100);
    assert!(encoder.encode(&short, false).is_err());
    assert!(
        encoder
            .encode(&VideoFrame::filled(0, 0, 0, 0, 0), false)
            .is_err()
    );
    // Still usable afterwards.
    assert!(encoder.encode(&moving_pattern(64, 48, 1), false).is_ok());
}
