//! Checks on an offer before any WebRTC state is built: that it parses, names few enough ICE
//! candidates and only unicast ones (the pod sends connectivity checks to every address an offer
//! names), has a video m-line, and which of its video codecs camera-pod can handle and this pod
//! accepts (`--codecs`), in the offerer's order of preference.

use std::collections::HashSet;
use std::io::Cursor;
use std::net::IpAddr;

use rtc::sdp::description::session::SessionDescription;

use crate::codec::CodecKind;

/// The H264 format camera-pod encodes and answers with: constrained baseline, level 3.1,
/// non-interleaved packetization.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// Most distinct ICE candidates an offer may name. A browser offers a few per network interface
/// (host, server-reflexive, relay; UDP and TCP), repeated in each bundled m-line.
pub const MAX_REMOTE_CANDIDATES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("the SDP does not parse: {0}")]
    Unparsable(String),
    #[error(
        "the offer names {count} distinct ICE candidates; at most {MAX_REMOTE_CANDIDATES} are accepted"
    )]
    TooManyCandidates { count: usize },
    #[error(
        "the offer's ICE candidate address {address} is not a unicast address (multicast, broadcast or unspecified)"
    )]
    NonUnicastCandidate { address: IpAddr },
    #[error("the offer has no video m-line")]
    NoVideo,
    #[error("the offer's video codecs ({offered}) are not supported; offer {accepted}")]
    UnsupportedCodecs {
        /// What the offer has, as its rtpmap lines say (`none` when nothing).
        offered: String,
        /// What this pod takes, in words.
        accepted: String,
    },
}

/// Checks an offer (see the module documentation) and returns the video codecs of its first
/// active video m-line that camera-pod supports and `accepted` lists, in the order the offerer
/// prefers them (never empty). The order of `accepted` does not matter.
pub fn check_offer(sdp: &str, accepted: &[CodecKind]) -> Result<Vec<CodecKind>, SdpError> {
    let description = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| SdpError::Unparsable(e.to_string()))?;
    check_candidates(&description)?;
    supported_video_codecs(&description, accepted)
}

/// At most [`MAX_REMOTE_CANDIDATES`] distinct candidates (transport, address and port), none at
/// a multicast, broadcast or unspecified IP address. Host names (mDNS `.local` candidates) are
/// counted but not judged.
fn check_candidates(description: &SessionDescription) -> Result<(), SdpError> {
    let session = description.attributes.iter();
    let media = description
        .media_descriptions
        .iter()
        .flat_map(|m| m.attributes.iter());
    let mut distinct = HashSet::new();
    for value in session
        .chain(media)
        .filter(|a| a.key == "candidate")
        .filter_map(|a| a.value.as_deref())
    {
        // foundation component transport priority address port typ type ...
        let fields: Vec<&str> = value.split_ascii_whitespace().collect();
        let destination = match fields[..] {
            [_, _, transport, _, address, port, ..] => {
                if let Ok(ip) = address.parse::<IpAddr>()
                    && !is_unicast(ip)
                {
                    return Err(SdpError::NonUnicastCandidate { address: ip });
                }
                format!("{} {address} {port}", transport.to_ascii_lowercase())
            }
            _ => value.to_owned(),
        };
        distinct.insert(destination);
        if distinct.len() > MAX_REMOTE_CANDIDATES {
            let count = distinct.len();
            return Err(SdpError::TooManyCandidates { count });
        }
    }
    Ok(())
}

/// Whether `ip` names one host: not multicast, not the IPv4 broadcast address, not unspecified.
fn is_unicast(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    !ip.is_multicast() && !ip.is_unspecified() && ip != IpAddr::from(std::net::Ipv4Addr::BROADCAST)
}

/// Video codecs of the first active video m-line that camera-pod supports and `accepted` lists,
/// in the order the offerer prefers them (never empty).
fn supported_video_codecs(
    description: &SessionDescription,
    accepted: &[CodecKind],
) -> Result<Vec<CodecKind>, SdpError> {
    let video = description
        .media_descriptions
        .iter()
        .find(|m| m.media_name.media == "video" && m.media_name.port.value != 0)
        .ok_or(SdpError::NoVideo)?;
    let attribute_values = |key: &str| -> Vec<&str> {
        video
            .attributes
            .iter()
            .filter(|a| a.key == key)
            .filter_map(|a| a.value.as_deref())
            .collect()
    };
    let rtpmaps = attribute_values("rtpmap");
    let fmtps = attribute_values("fmtp");
    let for_payload = |lines: &[&'_ str], pt: &str| -> Option<String> {
        lines.iter().find_map(|line| {
            let (first, rest) = line.split_once(' ')?;
            (first == pt).then(|| rest.trim().to_owned())
        })
    };
    let mut supported = Vec::new();
    let mut offered = Vec::new();
    for pt in &video.media_name.formats {
        let Some(rtpmap) = for_payload(&rtpmaps, pt) else {
            continue;
        };
        let name = rtpmap
            .split('/')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let kind = match name.as_str() {
            "VP8" => Some(CodecKind::Vp8),
            "H264" if h264_fmtp_supported(&for_payload(&fmtps, pt).unwrap_or_default()) => {
                Some(CodecKind::H264)
            }
            _ => None,
        };
        match kind {
            Some(kind) if accepted.contains(&kind) => push_once(&mut supported, kind),
            Some(_) => push_once(&mut offered, rtpmap),
            None if !["RTX", "RED", "ULPFEC", "FLEXFEC-03"].contains(&name.as_str()) => {
                offered.push(rtpmap)
            }
            None => {}
        }
    }
    if supported.is_empty() {
        return Err(SdpError::UnsupportedCodecs {
            offered: if offered.is_empty() {
                "none".into()
            } else {
                offered.join(", ")
            },
            accepted: describe(accepted),
        });
    }
    Ok(supported)
}

/// Appends `item` unless `list` holds it already.
fn push_once<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// The accepted codecs in words, for error messages.
fn describe(accepted: &[CodecKind]) -> String {
    let names: Vec<&str> = [CodecKind::Vp8, CodecKind::H264]
        .into_iter()
        .filter(|kind| accepted.contains(kind))
        .map(|kind| match kind {
            CodecKind::Vp8 => "VP8",
            CodecKind::H264 => "H264 (baseline, packetization-mode=1)",
        })
        .collect();
    if names.is_empty() {
        "nothing: no codec is enabled".into()
    } else {
        names.join(" or ")
    }
}

/// H264 parameters OpenH264 decodes and the answer's format is compatible with: packetization
/// mode 1 and a baseline-family profile (`42xxxx`).
fn h264_fmtp_supported(fmtp: &str) -> bool {
    let param = |key: &str| {
        fmtp.split(';').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            k.eq_ignore_ascii_case(key)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    let mode_one = param("packetization-mode").as_deref() == Some("1");
    let baseline = param("profile-level-id").is_none_or(|p| p.len() == 6 && p.starts_with("42"));
    mode_one && baseline
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[CodecKind] = &[CodecKind::Vp8, CodecKind::H264];

    fn offer(video_lines: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n{video_lines}"
        )
    }

    fn video(formats: &str, attrs: &[&str]) -> String {
        let mut s =
            format!("m=video 9 UDP/TLS/RTP/SAVPF {formats}\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n");
        for a in attrs {
            s.push_str(&format!("a={a}\r\n"));
        }
        s
    }

    #[test]
    fn keeps_the_offerers_order() {
        let sdp = offer(&video(
            "102 96 97",
            &[
                "rtpmap:102 H264/90000",
                "fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                "rtpmap:96 VP8/90000",
                "rtpmap:97 rtx/90000",
                "fmtp:97 apt=96",
            ],
        ));
        assert_eq!(
            check_offer(&sdp, BOTH).unwrap(),
            vec![CodecKind::H264, CodecKind::Vp8]
        );
        let sdp = offer(&video(
            "96 102",
            &[
                "rtpmap:96 VP8/90000",
                "rtpmap:102 H264/90000",
                "fmtp:102 packetization-mode=1;profile-level-id=42001f",
            ],
        ));
        assert_eq!(
            check_offer(&sdp, BOTH).unwrap(),
            vec![CodecKind::Vp8, CodecKind::H264]
        );
    }

    #[test]
    fn only_accepted_codecs_count_in_the_offerers_order() {
        let sdp = offer(&video(
            "96 102",
            &[
                "rtpmap:96 VP8/90000",
                "rtpmap:102 H264/90000",
                "fmtp:102 packetization-mode=1;profile-level-id=42e01f",
            ],
        ));
        let h264_only = check_offer(&sdp, &[CodecKind::H264]).unwrap();
        assert_eq!(h264_only, vec![CodecKind::H264]);
        // The pod's list says what is allowed, not in which order: the offerer's order wins.
        let pod_prefers_h264 = check_offer(&sdp, &[CodecKind::H264, CodecKind::Vp8]);
        assert_eq!(
            pod_prefers_h264.unwrap(),
            vec![CodecKind::Vp8, CodecKind::H264]
        );

        let vp8_only = offer(&video(
            "96 97",
            &["rtpmap:96 VP8/90000", "rtpmap:97 rtx/90000"],
        ));
        let err = check_offer(&vp8_only, &[CodecKind::H264]).unwrap_err();
        assert_eq!(
            err,
            SdpError::UnsupportedCodecs {
                offered: "VP8/90000".into(),
                accepted: "H264 (baseline, packetization-mode=1)".into()
            }
        );
        assert!(err.to_string().contains("offer H264"), "{err}");
    }

    #[test]
    fn skips_h264_we_cannot_handle() {
        let sdp = offer(&video(
            "100 101 96",
            &[
                "rtpmap:100 H264/90000",
                "fmtp:100 packetization-mode=0;profile-level-id=42e01f",
                "rtpmap:101 H264/90000",
                "fmtp:101 packetization-mode=1;profile-level-id=640032",
                "rtpmap:96 VP8/90000",
            ],
        ));
        assert_eq!(check_offer(&sdp, BOTH).unwrap(), vec![CodecKind::Vp8]);
    }

    #[test]
    fn only_unsupported_codecs_is_named() {
        let sdp = offer(&video(
            "98 45",
            &["rtpmap:98 VP9/90000", "rtpmap:45 AV1/90000"],
        ));
        let err = check_offer(&sdp, BOTH).unwrap_err();
        assert!(
            matches!(&err, SdpError::UnsupportedCodecs { offered, .. } if offered.contains("VP9") && offered.contains("AV1")),
            "{err}"
        );
    }

    #[test]
    fn audio_only_or_rejected_video_has_no_video() {
        let audio =
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(check_offer(&offer(audio), BOTH), Err(SdpError::NoVideo));
        let rejected =
            "m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(check_offer(&offer(rejected), BOTH), Err(SdpError::NoVideo));
    }

    /// A VP8 offer naming these candidates (`address port`), each as a UDP host candidate, in
    /// its video m-line and again in a bundled data channel m-line, as browsers write them.
    fn offer_with_candidates(candidates: &[String]) -> String {
        let lines: Vec<String> = candidates
            .iter()
            .enumerate()
            .map(|(i, destination)| {
                format!("candidate:{i} 1 udp 2122260223 {destination} typ host")
            })
            .collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut video_attrs = vec!["rtpmap:96 VP8/90000"];
        video_attrs.extend(&lines);
        let mut sdp = offer(&video("96", &video_attrs));
        sdp.push_str(
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n",
        );
        for line in &lines {
            sdp.push_str(&format!("a={line}\r\n"));
        }
        sdp
    }

    fn destinations(count: usize) -> Vec<String> {
        (0..count)
            .map(|i| format!("192.0.2.{} {}", i % 250 + 1, 50_000 + i))
            .collect()
    }

    #[test]
    fn at_most_sixteen_distinct_candidates_are_accepted() {
        let most = offer_with_candidates(&destinations(MAX_REMOTE_CANDIDATES));
        assert_eq!(check_offer(&most, BOTH).unwrap(), vec![CodecKind::Vp8]);
        let too_many = offer_with_candidates(&destinations(MAX_REMOTE_CANDIDATES + 1));
        let err = check_offer(&too_many, BOTH).unwrap_err();
        assert_eq!(
            err,
            SdpError::TooManyCandidates {
                count: MAX_REMOTE_CANDIDATES + 1
            }
        );
        assert!(err.to_string().contains("at most 16"), "{err}");
        // Repeating one candidate does not make it more destinations.
        let repeated = offer_with_candidates(&vec!["192.0.2.1 50000".to_owned(); 40]);
        assert!(check_offer(&repeated, BOTH).is_ok());
    }

    #[test]
    fn candidates_must_name_unicast_addresses() {
        for address in [
            "224.0.0.251",
            "255.255.255.255",
            "0.0.0.0",
            "ff02::1",
            "::",
            "::ffff:239.1.1.1",
        ] {
            let sdp =
                offer_with_candidates(&["192.0.2.1 50000".to_owned(), format!("{address} 50001")]);
            let err = check_offer(&sdp, BOTH).unwrap_err();
            assert!(
                matches!(err, SdpError::NonUnicastCandidate { .. }),
                "{address}: {err}"
            );
        }
        for fine in [
            "10.1.2.3",
            "127.0.0.1",
            "2001:db8::1",
            "fe80::1",
            "4b1f7c3e-0c1d.local",
        ] {
            let sdp = offer_with_candidates(&[format!("{fine} 50000")]);
            assert!(check_offer(&sdp, BOTH).is_ok(), "{fine}");
        }
    }

    #[test]
    fn garbage_is_unparsable() {
        assert!(matches!(
            check_offer("hello", BOTH),
            Err(SdpError::Unparsable(_))
        ));
        assert!(matches!(
            check_offer("", BOTH),
            Err(SdpError::Unparsable(_))
        ));
    }
}
