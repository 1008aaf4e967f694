//! `--public-ip` behind a 1:1 NAT, over real WebRTC on loopback: the answer names a host
//! candidate at the public address on the media port, and a client that knows only that
//! candidate connects through the NAT and gets its filtered video back; without a public address
//! (or with the bound one) the answer names only the socket's own address.
//!
//! A pod started with `--await-public-ip` is not ready until the operator hands it the node's
//! public address (`POST /public-address`), then advertises that address the same way.
//!
//! 127.0.0.2 stands for the node's public address and 127.0.0.1 for its private one (Linux
//! routes all of 127.0.0.0/8 to `lo`). The pod binds 127.0.0.1, not a wildcard: webrtc-rs turns a
//! wildcard into one socket per interface and leaves loopback out, so a wildcard would bind the
//! machine's network address, not anything on loopback. A socket bound to 127.0.0.1 receives
//! nothing sent to 127.0.0.2, so [`OneToOneNat`] plays the NAT.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use camera_pod::codec::CodecKind;
use common::{TestPeer, TestServer, post_offer, post_offer_with};
use tokio::net::UdpSocket;

const PRIVATE_IP: &str = "127.0.0.1";
const PUBLIC_IP: &str = "127.0.0.2";
/// The NAT's own address on the private side (see [`OneToOneNat`]).
const NAT_INSIDE_IP: &str = "127.0.0.3";

/// One `a=candidate:` line of an SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    foundation: String,
    component: u16,
    transport: String,
    priority: u32,
    address: SocketAddr,
    typ: String,
}

/// The candidates `sdp` names (lines that do not parse as one fail the test).
fn candidates(sdp: &str) -> Vec<Candidate> {
    sdp.lines()
        .filter_map(|line| line.strip_prefix("a=candidate:"))
        .map(|value| {
            let fields: Vec<&str> = value.split_ascii_whitespace().collect();
            let [
                foundation,
                component,
                transport,
                priority,
                ip,
                port,
                "typ",
                typ,
                ..,
            ] = fields[..]
            else {
                panic!("not a candidate: {value}");
            };
            Candidate {
                foundation: foundation.to_owned(),
                component: component.parse().unwrap(),
                transport: transport.to_ascii_lowercase(),
                priority: priority.parse().unwrap(),
                address: SocketAddr::new(ip.parse().unwrap(), port.parse().unwrap()),
                typ: typ.to_owned(),
            }
        })
        .collect()
}

/// `sdp` without the candidate lines that `keep` refuses.
fn keeping_candidates(sdp: &str, keep: impl Fn(&Candidate) -> bool) -> String {
    sdp.split_inclusive('\n')
        .filter(|line| candidates(line).first().is_none_or(&keep))
        .collect()
}

/// A 1:1 NAT in front of the pod's media socket: what arrives at the public address
/// (`127.0.0.2:port`) goes on to the private one (`127.0.0.1:port`), and what the pod sends back
/// leaves from the public address to the client. A kernel NAT keeps the client's address as the
/// source; a forwarder in user space cannot, so the pod sees the forwarder's inside socket
/// (`127.0.0.3`) as the client, a peer-reflexive candidate, as it sees a browser behind a NAT of
/// its own.
struct OneToOneNat {
    /// Datagrams forwarded from the client to the pod.
    inbound: Arc<AtomicU64>,
    /// Datagrams forwarded from the pod to the client.
    outbound: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl OneToOneNat {
    async fn start(public: SocketAddr, private: SocketAddr) -> OneToOneNat {
        let outside = UdpSocket::bind(public).await.unwrap();
        let inside = UdpSocket::bind((NAT_INSIDE_IP.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap();
        let (inbound, outbound) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (inbound_count, outbound_count) = (inbound.clone(), outbound.clone());
        let task = tokio::spawn(async move {
            let (mut from_client, mut from_pod) = ([0u8; 2048], [0u8; 2048]);
            let mut client = None;
            loop {
                tokio::select! {
                    received = outside.recv_from(&mut from_client) => {
                        let Ok((len, sender)) = received else { break };
                        client = Some(sender);
                        if inside.send_to(&from_client[..len], private).await.is_ok() {
                            inbound_count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    received = inside.recv_from(&mut from_pod) => {
                        let Ok((len, sender)) = received else { break };
                        let Some(client) = client.filter(|_| sender == private) else {
                            continue;
                        };
                        if outside.send_to(&from_pod[..len], client).await.is_ok() {
                            outbound_count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        OneToOneNat {
            inbound,
            outbound,
            task,
        }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.inbound.load(Ordering::Relaxed),
            self.outbound.load(Ordering::Relaxed),
        )
    }
}

impl Drop for OneToOneNat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Posts `offer` to `server` and returns the answer SDP.
async fn answer(server: &TestServer, offer: &str) -> String {
    let response = post_offer(&server.base, offer, None, None).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    answer["sdp"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_knows_only_the_public_candidate_connects_through_the_nat() {
    let server = TestServer::start(&["--udp-bind", PRIVATE_IP, "--public-ip", PUBLIC_IP]).await;
    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    // Without the client's candidates the pod reaches the client only by answering what comes
    // through the NAT, as in a cloud, where its packets leave through the NAT too (on loopback
    // they could take a way around it).
    let offer = keeping_candidates(&peer.offer().await, |_| false);
    let answer_sdp = answer(&server, &offer).await;

    let all = candidates(&answer_sdp);
    let private: Vec<&Candidate> = all
        .iter()
        .filter(|c| c.address.ip().to_string() == PRIVATE_IP)
        .collect();
    let public: Vec<&Candidate> = all
        .iter()
        .filter(|c| c.address.ip().to_string() == PUBLIC_IP)
        .collect();
    assert!(
        !private.is_empty(),
        "the private candidate stays: {answer_sdp}"
    );
    assert_eq!(
        public.len(),
        private.len(),
        "one public copy per private candidate: {answer_sdp}"
    );
    assert_eq!(all.len(), private.len() + public.len(), "{answer_sdp}");
    let media_port = private[0].address.port();
    for (private, public) in private.iter().zip(&public) {
        assert_eq!(
            (public.transport.as_str(), public.typ.as_str()),
            ("udp", "host")
        );
        assert_eq!(
            public.address.port(),
            media_port,
            "on the media socket's port"
        );
        assert_eq!(public.component, private.component);
        assert!(public.priority > private.priority, "{answer_sdp}");
        assert_ne!(public.foundation, private.foundation, "{answer_sdp}");
    }

    let nat = OneToOneNat::start(
        SocketAddr::new(PUBLIC_IP.parse().unwrap(), media_port),
        private[0].address,
    )
    .await;
    let public_only = keeping_candidates(&answer_sdp, |c| c.address.ip().to_string() == PUBLIC_IP);
    assert_eq!(candidates(&public_only).len(), public.len());
    peer.accept(public_only).await;
    peer.wait_connected().await;

    let sent = peer.send_pattern(0, 60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = peer.received.lock().unwrap().len();
    assert!(
        received >= 30,
        "only {received} of {} frames came back",
        sent.len()
    );
    // Everything went through the NAT: the camera in, the filtered video out.
    let (inbound, outbound) = nat.counts();
    assert!(
        inbound >= sent.len() as u64,
        "{inbound} datagrams in for {} frames",
        sent.len()
    );
    assert!(
        outbound >= received as u64,
        "{outbound} datagrams out for {received} frames"
    );

    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_another_public_address_the_answer_names_only_the_socket() {
    for public_ip in [None, Some(PRIVATE_IP)] {
        let mut args = vec!["--udp-bind", PRIVATE_IP];
        if let Some(ip) = public_ip {
            args.extend(["--public-ip", ip]);
        }
        let server = TestServer::start(&args).await;
        let mut peer = TestPeer::new(CodecKind::Vp8).await;
        let offer = peer.offer().await;
        let answer_sdp = answer(&server, &offer).await;
        let all = candidates(&answer_sdp);
        // The RTP and RTCP components of the one media socket, nothing else.
        assert_eq!(all.len(), 2, "{public_ip:?}: {answer_sdp}");
        assert!(
            all.iter()
                .all(|c| c.address == all[0].address && c.address.ip().to_string() == PRIVATE_IP),
            "{public_ip:?}: {answer_sdp}"
        );
        // And it connects as it always did.
        peer.accept(answer_sdp).await;
        peer.wait_connected().await;
        peer.close().await;
        server.stop().await;
    }
}

/// `POST /public-address` on `server` with `token` (none: no header) and a JSON `body`.
async fn hand(server: &TestServer, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let mut request = server
        .http
        .post(format!("{}/public-address", server.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waits_for_the_public_address_the_operator_hands_it_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key_pem = certified.signing_key.serialize_pem();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    let operator = p2pcamera_api::operator_token::operator_token(key_pem.as_bytes());
    let server = TestServer::spawn_https(
        (&cert, &key),
        &[
            "--udp-bind",
            PRIVATE_IP,
            "--public-ip",
            PRIVATE_IP,
            "--token",
            "token-of-the-session",
            "--await-public-ip",
        ],
    );
    let mut readiness = serde_json::Value::Null;
    for _ in 0..100 {
        if let Ok(response) = server
            .http
            .get(format!("{}/readyz", server.base))
            .send()
            .await
        {
            assert_eq!(response.status(), 503, "ready without its address");
            readiness = response.json().await.unwrap_or_default();
            if readiness["status"] == "awaiting_public_address" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        readiness["status"], "awaiting_public_address",
        "{readiness}"
    );
    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    let offer = peer.offer().await;
    let session_token = Some("token-of-the-session");
    let refused = post_offer_with(&server.http, &server.base, &offer, None, session_token).await;
    assert_eq!(refused.status(), 503, "no offer before the address");

    let body = format!(r#"{{"public_ip": "{PUBLIC_IP}"}}"#);
    let code = |reply: &serde_json::Value| reply["error"]["code"].as_str().map(str::to_owned);
    let (status, error) = hand(&server, None, &body).await;
    assert_eq!(
        (status, code(&error).as_deref()),
        (401, Some("missing_token"))
    );
    // The session's token (the router's, the browser's) is not the operator's.
    let (status, error) = hand(&server, session_token, &body).await;
    assert_eq!(
        (status, code(&error).as_deref()),
        (403, Some("wrong_token"))
    );
    let (status, error) = hand(&server, Some(&operator), r#"{"public_ip": "a.b"}"#).await;
    assert_eq!(
        (status, code(&error).as_deref()),
        (400, Some("invalid_json"))
    );
    let (status, error) = hand(&server, Some(&operator), "{").await;
    assert_eq!(
        (status, code(&error).as_deref()),
        (400, Some("invalid_json"))
    );
    let oversized = format!(r#"{{"public_ip": "{}"}}"#, "1".repeat(100 * 1024));
    let (status, error) = hand(&server, Some(&operator), &oversized).await;
    assert_eq!((status, code(&error).as_deref()), (413, Some("too_large")));
    let (status, reply) = hand(&server, Some(&operator), &body).await;
    assert_eq!(
        (status, reply["public_ip"].as_str()),
        (200, Some(PUBLIC_IP))
    );
    server.wait_ready().await;

    // The answer advertises the handed address (not --public-ip) on the media port.
    let response = post_offer_with(&server.http, &server.base, &offer, None, session_token).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    let answer_sdp = answer["sdp"].as_str().unwrap().to_owned();
    let all = candidates(&answer_sdp);
    assert!(
        all.iter().any(|c| c.address.ip().to_string() == PUBLIC_IP),
        "{answer_sdp}"
    );
    assert!(all.iter().any(|c| c.address.ip().to_string() == PRIVATE_IP));
    peer.accept(answer_sdp).await;
    peer.wait_connected().await;
    // Once the camera is set up, another address changes nothing: the pod names the one it keeps.
    let (status, reply) = hand(&server, Some(&operator), r#"{"public_ip": "127.0.0.9"}"#).await;
    assert_eq!(
        (status, reply["public_ip"].as_str()),
        (200, Some(PUBLIC_IP))
    );
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_started_without_await_public_ip_has_no_public_address_endpoint() {
    let server = TestServer::start(&["--udp-bind", PRIVATE_IP]).await;
    let (status, _) = hand(&server, Some("anything"), r#"{"public_ip": "127.0.0.2"}"#).await;
    assert_eq!(status, 404);
    server.stop().await;
}
