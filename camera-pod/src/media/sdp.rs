//! Checks on an offer before any WebRTC state is built: that it parses, names few enough ICE
//! candidates and only unicast ones (the pod sends connectivity checks to every address an offer
//! names), has a video m-line, and which of its video codecs camera-pod can handle and this pod
//! accepts (`--codecs`), in the offerer's order of preference.
//!
//! And one change to the answer: behind a 1:1 NAT, the host candidates also at the public address
//! (`--public-ip`), see [`advertise_public_address`].

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use rtc::ice::candidate::candidate_host::CandidateHostConfig;
use rtc::ice::candidate::{CandidateConfig, CandidateType, unmarshal_candidate};
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
        "{count} distinct ICE candidates; at most {MAX_REMOTE_CANDIDATES} are accepted in an offer, \
         and as many again by trickle"
    )]
    TooManyCandidates { count: usize },
    #[error(
        "the ICE candidate address {address} is not a unicast address (multicast, broadcast or unspecified)"
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
        let destination = match candidate_destination(value) {
            Err(SdpError::Unparsable(_)) => value.to_owned(),
            other => other?,
        };
        count_distinct(&mut distinct, destination, MAX_REMOTE_CANDIDATES)?;
    }
    Ok(())
}

/// Where a candidate attribute's value (`foundation component transport priority address port
/// typ ...`, optionally after `a=` and `candidate:`) sends checks: `transport address port`.
/// An IP address must be unicast; a host name (mDNS) is not judged.
pub fn candidate_destination(value: &str) -> Result<String, SdpError> {
    let value = value.trim();
    let value = value.strip_prefix("a=").unwrap_or(value);
    let value = value.strip_prefix("candidate:").unwrap_or(value);
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [_, _, transport, _, address, port, "typ", _, ..] = fields[..] else {
        return Err(SdpError::Unparsable(format!(
            "not an ICE candidate: {}",
            value.chars().take(80).collect::<String>()
        )));
    };
    if let Ok(ip) = address.parse::<IpAddr>()
        && !is_unicast(ip)
    {
        return Err(SdpError::NonUnicastCandidate { address: ip });
    }
    Ok(format!(
        "{} {address} {port}",
        transport.to_ascii_lowercase()
    ))
}

/// Adds `destination` to `distinct`, which may hold at most `limit`.
pub fn count_distinct(
    distinct: &mut HashSet<String>,
    destination: String,
    limit: usize,
) -> Result<(), SdpError> {
    distinct.insert(destination);
    if distinct.len() > limit {
        return Err(SdpError::TooManyCandidates {
            count: distinct.len(),
        });
    }
    Ok(())
}

/// The offer's ICE username fragment (`a=ice-ufrag:`, session or first media level).
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|line| line.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
        .filter(|ufrag| !ufrag.is_empty())
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

/// Highest priority an ICE candidate may have (RFC 8445 section 5.1.2: 1 to 2^31 - 1).
const MAX_CANDIDATE_PRIORITY: u32 = (1 << 31) - 1;

/// An answer with host candidates at the public address added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicAnswer {
    /// The answer SDP.
    pub sdp: String,
    /// The transport addresses of the candidates added, once each (none when every host
    /// candidate already is at the public address, or none is of its address family).
    pub added: Vec<SocketAddr>,
}

/// Adds to `answer_sdp`, beside each UDP host candidate of the pod's media socket, a host
/// candidate at `public_ip` on the same port and component: behind a 1:1 NAT (a cloud node's
/// public address) that is where a browser outside the network reaches the socket, and its
/// connectivity checks then arrive at the private address, which the ICE agent serves as any.
///
/// The copy has its own foundation (ICE's, from its address) and a priority one above the
/// private candidates' on that port, so a remote agent checks it first. The private candidate stays: a client
/// in the same network (another pod, a VPN) reaches it directly, also where the NAT does not
/// hairpin; for a client outside it is one check that goes unanswered. One copy per m-section,
/// component and port is added, right after the first private candidate it copies (so
/// `a=end-of-candidates` still follows every candidate); none where that section already has a
/// candidate at the public address, and none for candidates of the other address family (a 1:1
/// NAT maps one family). Every other line is kept as it is.
pub fn advertise_public_address(answer_sdp: &str, public_ip: IpAddr) -> PublicAnswer {
    let public_ip = public_ip.to_canonical();
    let mut sdp = String::with_capacity(answer_sdp.len() + 256);
    let mut added = Vec::new();
    let mut rest = answer_sdp;
    while !rest.is_empty() {
        let end = section_end(rest);
        let (section, next) = rest.split_at(end);
        advertise_in_section(section, public_ip, &mut sdp, &mut added);
        rest = next;
    }
    PublicAnswer { sdp, added }
}

/// Length of the SDP section `sdp` starts with: up to the next `m=` line (or the end).
fn section_end(sdp: &str) -> usize {
    let first_line = sdp.find('\n').map_or(sdp.len(), |i| i + 1);
    sdp[first_line..]
        .match_indices("\nm=")
        .next()
        .map_or(sdp.len(), |(i, _)| first_line + i + 1)
}

/// What a UDP host candidate line says that a public copy needs.
struct HostCandidate {
    component: u16,
    port: u16,
    priority: u32,
    ip: IpAddr,
}

/// The UDP host candidate an SDP line names, if it is one in `public_ip`'s address family (a
/// 1:1 NAT maps one family: its public address reaches no socket of the other).
fn udp_host_candidate(line: &str, public_ip: IpAddr) -> Option<HostCandidate> {
    let value = line.trim_end().strip_prefix("a=candidate:")?;
    let candidate = unmarshal_candidate(value).ok()?;
    if candidate.candidate_type() != CandidateType::Host || !candidate.network_type().is_udp() {
        return None;
    }
    let ip = candidate.address().parse::<IpAddr>().ok()?.to_canonical();
    (ip.is_ipv4() == public_ip.is_ipv4()).then(|| HostCandidate {
        component: candidate.component(),
        port: candidate.port(),
        priority: candidate.priority(),
        ip,
    })
}

/// [`advertise_public_address`] for one m-section (or the session part), appended to `out`.
fn advertise_in_section(
    section: &str,
    public_ip: IpAddr,
    out: &mut String,
    added: &mut Vec<SocketAddr>,
) {
    // (component, port) -> the highest priority among the private candidates there, or `None`
    // when the section already has that candidate at the public address.
    let mut wanted: HashMap<(u16, u16), Option<u32>> = HashMap::new();
    let candidates = section
        .split_inclusive('\n')
        .filter_map(|line| udp_host_candidate(line, public_ip));
    for candidate in candidates {
        let key = (candidate.component, candidate.port);
        if candidate.ip == public_ip {
            wanted.insert(key, None);
        } else if let Some(highest) = wanted.entry(key).or_insert(Some(0)) {
            *highest = (*highest).max(candidate.priority);
        }
    }
    for line in section.split_inclusive('\n') {
        out.push_str(line);
        let Some(candidate) = udp_host_candidate(line, public_ip) else {
            continue;
        };
        let key = (candidate.component, candidate.port);
        let Some(Some(private_priority)) = wanted.get(&key).copied() else {
            continue;
        };
        let public = SocketAddr::new(public_ip, candidate.port);
        let priority = private_priority
            .saturating_add(1)
            .min(MAX_CANDIDATE_PRIORITY);
        let Some(copy) = public_candidate_line(public, candidate.component, priority) else {
            continue;
        };
        // The copy ends as the line it follows; after a last line without an ending, it needs
        // one in between.
        let ending = line_ending(line);
        if ending.is_empty() {
            out.push_str("\r\n");
        }
        out.push_str(&copy);
        out.push_str(ending);
        wanted.insert(key, None);
        push_once(added, public);
    }
}

/// The line ending `line` has: CRLF (as SDP prescribes), a bare LF, or none (the last line).
fn line_ending(line: &str) -> &'static str {
    if line.ends_with("\r\n") {
        "\r\n"
    } else if line.ends_with('\n') {
        "\n"
    } else {
        ""
    }
}

/// The `a=candidate:` line (without its line ending) of a UDP host candidate at `address`, its
/// foundation computed by ICE from that address.
fn public_candidate_line(address: SocketAddr, component: u16, priority: u32) -> Option<String> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: address.ip().to_string(),
            port: address.port(),
            component,
            priority,
            ..CandidateConfig::default()
        },
        ..CandidateHostConfig::default()
    }
    .new_candidate_host()
    .ok()?;
    Some(format!("a=candidate:{}", candidate.marshal()))
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

    /// An answer as camera-pod's WebRTC stack writes it: candidates (RTP and RTCP components on
    /// the media socket) in the first of two bundled m-sections, then `a=end-of-candidates`.
    fn answer(candidates: &[&str]) -> String {
        let mut sdp = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=setup:passive\r\na=mid:0\r\n\
            a=rtpmap:96 VP8/90000\r\na=sendrecv\r\n"
            .to_owned();
        for candidate in candidates {
            sdp.push_str(&format!("a=candidate:{candidate}\r\n"));
        }
        sdp.push_str(
            "a=end-of-candidates\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
             c=IN IP4 0.0.0.0\r\na=mid:1\r\na=sctp-port:5000\r\n",
        );
        sdp
    }

    fn address(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    const PRIVATE_RTP: &str = "607854466 1 udp 2130706431 10.0.0.5 40123 typ host";
    const PRIVATE_RTCP: &str = "607854466 2 udp 2130706431 10.0.0.5 40123 typ host";

    /// The fields of an `a=candidate:` line: foundation, component, transport, priority,
    /// address, port, `typ`, type.
    fn fields(line: &str) -> Vec<&str> {
        line.strip_prefix("a=candidate:")
            .unwrap()
            .split_ascii_whitespace()
            .collect()
    }

    fn candidate_lines(sdp: &str) -> Vec<&str> {
        sdp.lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .collect()
    }

    /// `sdp` without the lines naming `ip`.
    fn without(sdp: &str, ip: &str) -> String {
        sdp.split_inclusive('\n')
            .filter(|line| !line.contains(&format!(" {ip} ")))
            .collect()
    }

    #[test]
    fn each_host_candidate_gets_a_public_copy_right_after_it() {
        let original = answer(&[PRIVATE_RTP, PRIVATE_RTCP]);
        let public = advertise_public_address(&original, "203.0.113.7".parse().unwrap());
        assert_eq!(public.added, vec![address("203.0.113.7:40123")]);
        let lines: Vec<&str> = public.sdp.lines().collect();
        let at = |line: &str| lines.iter().position(|l| *l == line).unwrap();
        let (rtp, rtcp) = (
            at(&format!("a=candidate:{PRIVATE_RTP}")),
            at(&format!("a=candidate:{PRIVATE_RTCP}")),
        );
        for (private, component) in [(rtp, "1"), (rtcp, "2")] {
            let copy = fields(lines[private + 1]);
            let private = fields(lines[private]);
            assert_eq!(copy[1], component);
            assert_eq!(
                &copy[2..],
                ["udp", "2130706432", "203.0.113.7", "40123", "typ", "host"]
            );
            assert_ne!(copy[0], private[0], "the copy has its own foundation");
            let priority = |f: &[&str]| f[3].parse::<u32>().unwrap();
            assert_eq!(priority(&copy), priority(&private) + 1);
        }
        // One foundation for both components of the public address, as ICE groups them.
        assert_eq!(fields(lines[rtp + 1])[0], fields(lines[rtcp + 1])[0]);
        assert_eq!(lines[rtcp + 2], "a=end-of-candidates");
        // Nothing else changed: without the public lines it is the answer as it was.
        assert_eq!(without(&public.sdp, "203.0.113.7"), original);
        assert!(public.sdp.ends_with("a=sctp-port:5000\r\n"));
    }

    #[test]
    fn ipv6_public_address_copies_ipv6_candidates_only() {
        let private_v6 = "1790218498 1 udp 2130706431 2001:db8::5 40123 typ host";
        let original = answer(&[PRIVATE_RTP, private_v6]);
        let public = advertise_public_address(&original, "2001:db8:ffff::7".parse().unwrap());
        assert_eq!(public.added, vec![address("[2001:db8:ffff::7]:40123")]);
        let lines = candidate_lines(&public.sdp);
        assert_eq!(lines.len(), 3, "{}", public.sdp);
        assert_eq!(lines[1], format!("a=candidate:{private_v6}"));
        assert_eq!(
            &fields(lines[2])[3..6],
            ["2130706432", "2001:db8:ffff::7", "40123"]
        );
        assert_eq!(without(&public.sdp, "2001:db8:ffff::7"), original);

        // An IPv4 public address is not where an IPv6-only socket is reached, and vice versa.
        let v6_only = answer(&[private_v6]);
        let public = advertise_public_address(&v6_only, "203.0.113.7".parse().unwrap());
        assert_eq!(
            (public.sdp.as_str(), public.added.len()),
            (v6_only.as_str(), 0)
        );
        let v4_only = answer(&[PRIVATE_RTP]);
        let public = advertise_public_address(&v4_only, "2001:db8::7".parse().unwrap());
        assert_eq!(
            (public.sdp.as_str(), public.added.len()),
            (v4_only.as_str(), 0)
        );
        // An IPv4-mapped IPv6 public address is the IPv4 address.
        let public = advertise_public_address(&v4_only, "::ffff:203.0.113.7".parse().unwrap());
        assert_eq!(public.added, vec![address("203.0.113.7:40123")]);
    }

    #[test]
    fn no_copy_when_a_candidate_already_is_the_public_address() {
        let public_host = "3410231219 1 udp 2130706431 203.0.113.7 40123 typ host";
        for candidates in [
            vec![public_host],
            vec![PRIVATE_RTP, public_host],
            vec![public_host, PRIVATE_RTP],
        ] {
            let original = answer(&candidates);
            let public = advertise_public_address(&original, "203.0.113.7".parse().unwrap());
            assert_eq!(public.sdp, original, "{candidates:?}");
            assert!(public.added.is_empty());
        }
    }

    #[test]
    fn one_copy_per_port_above_every_interface_on_it() {
        // A wildcard bind: one socket per interface, all on the pinned port.
        let original = answer(&[
            "607854466 1 udp 2130706175 10.0.0.5 40123 typ host",
            "2893012290 1 udp 2130706431 172.17.0.1 40123 typ host",
        ]);
        let public = advertise_public_address(&original, "203.0.113.7".parse().unwrap());
        let lines = candidate_lines(&public.sdp);
        assert_eq!(lines.len(), 3, "{}", public.sdp);
        assert_eq!(&fields(lines[1])[3..5], ["2130706432", "203.0.113.7"]);
        assert_eq!(public.added.len(), 1);
    }

    #[test]
    fn other_candidates_are_left_alone() {
        let original = answer(&[
            "1 1 tcp 1518280447 10.0.0.5 9 typ host tcptype active",
            "2 1 udp 1694498815 198.51.100.1 40123 typ srflx raddr 10.0.0.5 rport 40123",
            "3 1 udp 16777215 192.0.2.50 3478 typ relay raddr 198.51.100.1 rport 40123",
            "4 1 udp 2130706431 4b1f7c3e-0c1d.local 40123 typ host",
            "not a candidate",
        ]);
        let public = advertise_public_address(&original, "203.0.113.7".parse().unwrap());
        assert_eq!(public.sdp, original);
        assert!(public.added.is_empty());
    }

    #[test]
    fn every_section_that_lists_candidates_gets_its_copy() {
        let original = format!(
            "{}a=candidate:{PRIVATE_RTP}\r\na=end-of-candidates\r\n",
            answer(&[PRIVATE_RTP])
        );
        let public = advertise_public_address(&original, "203.0.113.7".parse().unwrap());
        assert_eq!(candidate_lines(&public.sdp).len(), 4, "{}", public.sdp);
        assert_eq!(
            public.added.len(),
            1,
            "one address, however often it is listed"
        );
        let sections: Vec<&str> = public.sdp.split("\r\nm=").skip(1).collect();
        for section in sections {
            let lines: Vec<&str> = section.lines().collect();
            let end = lines
                .iter()
                .position(|l| *l == "a=end-of-candidates")
                .unwrap();
            assert!(lines[end - 1].contains(" 203.0.113.7 "), "{section}");
        }
    }

    #[test]
    fn line_endings_are_kept_and_the_priority_stays_in_range() {
        let highest = "5 1 udp 2147483647 10.0.0.5 40123 typ host";
        let bare_lf = format!("v=0\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=candidate:{highest}\n");
        let public = advertise_public_address(&bare_lf, "203.0.113.7".parse().unwrap());
        assert!(!public.sdp.contains('\r'), "{:?}", public.sdp);
        let copy = public.sdp.lines().last().unwrap();
        assert_eq!(&fields(copy)[3..5], ["2147483647", "203.0.113.7"]);
        assert!(public.sdp.ends_with('\n'));

        let unterminated = bare_lf.trim_end();
        let public = advertise_public_address(unterminated, "203.0.113.7".parse().unwrap());
        assert_eq!(
            without(&public.sdp, "203.0.113.7"),
            format!("{unterminated}\r\n")
        );
        assert!(public.sdp.lines().last().unwrap().contains(" 203.0.113.7 "));
    }
}
