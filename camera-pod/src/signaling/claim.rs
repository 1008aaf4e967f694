//! `POST /claim` of a warm-pool pod (started with `--claim-token-file`): the operator hands an
//! idle, warm pod its session.
//!
//! [`Claim::check`] turns a [`ClaimRequest`] into a [`Claim`] whose every field was checked
//! (pure, before anything changes). [`AppState::accept_claim`] then decides, under the one lock
//! the camera endpoints read: an unclaimed warm pod takes the claim, a claimed one answers a
//! repeat of its own claim as the first time and refuses any other (409 `already_claimed`), a
//! pod still warming up is asked to retry (503 `not_ready`). Taking the claim swaps, at once, the
//! certificate new TLS handshakes get, the bearer token of the camera endpoints, and the camera
//! (made now, from the claim's media settings over the start-up ones); a claim for another filter
//! than the warm one starts the switch without waiting for it.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use p2pcamera_api::session::SessionKeyError;
use p2pcamera_api::wire::{CLAIM_PATH, ClaimReply, ClaimRequest};
use p2pcamera_api::{ErrorCode, SessionKey};

use super::tls::{ServerIdentity, TlsError};
use super::{ApiError, AppState, Phase, Pool, Readiness, Serving, auth, json_body};
use crate::codec::{CodecKind, UnknownCodec};
use crate::filter::{FilterError, FilterSpec, FilterWorker};
use crate::media::limits::{PictureLimitError, PictureLimits};
use crate::media::{Camera, MediaConfig};

/// Longest session token a claim may bring, in bytes (the operator's are 43).
pub const MAX_TOKEN_BYTES: usize = 512;

/// Why a claim's body was refused (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(transparent)]
    Session(#[from] SessionKeyError),
    #[error(
        "token must be 1 to {MAX_TOKEN_BYTES} visible ASCII characters (no spaces), as a bearer token is sent"
    )]
    Token,
    #[error("tls_cert and tls_key must be a PEM certificate and its own private key: {0}")]
    Tls(#[from] TlsError),
    #[error("filter: {}", .0.client_message())]
    Filter(#[from] FilterError),
    #[error("codecs: {0}")]
    Codec(#[from] UnknownCodec),
    #[error("public_ip {0:?} is not an IP address")]
    PublicIp(String),
    #[error(transparent)]
    Limits(#[from] PictureLimitError),
}

impl ClaimError {
    /// 422 `invalid_filter` for the filter, 400 `invalid_json` for every other field.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClaimError::Filter(_) => ErrorCode::InvalidFilter,
            ClaimError::Session(_)
            | ClaimError::Token
            | ClaimError::Tls(_)
            | ClaimError::Codec(_)
            | ClaimError::PublicIp(_)
            | ClaimError::Limits(_) => ErrorCode::InvalidJson,
        }
    }
}

/// What a claim sets of the media configuration; what it leaves unset keeps its start-up value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimedMedia {
    pub public_ip: Option<IpAddr>,
    /// Empty: the start-up codecs.
    pub codecs: Vec<CodecKind>,
    pub limits: PictureLimits,
}

impl ClaimedMedia {
    /// `start` with this claim's values in place of its own.
    pub fn over(&self, start: &MediaConfig) -> MediaConfig {
        MediaConfig {
            public_ip: self.public_ip.or(start.public_ip),
            codecs: if self.codecs.is_empty() {
                start.codecs.clone()
            } else {
                self.codecs.clone()
            },
            limits: start.limits.overridden_by(self.limits),
            ..start.clone()
        }
    }
}

/// A claim whose every field was checked: the session a warm-pool pod is to serve.
pub struct Claim {
    pub session: SessionKey,
    /// The session's bearer token.
    pub token: String,
    /// The session's certificate and key, ready to serve.
    pub tls: Arc<rustls::ServerConfig>,
    /// Parsed as a remote spec: it never names a file on the pod.
    pub filter: FilterSpec,
    pub media: ClaimedMedia,
}

impl std::fmt::Debug for Claim {
    /// Leaves the token and the key out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("session", &self.session)
            .field("filter", &self.filter)
            .field("media", &self.media)
            .finish_non_exhaustive()
    }
}

impl Claim {
    /// Checks every field of `request`: the session is `namespace/name`, the token fits a bearer
    /// header, the certificate and key parse and belong together, the filter is a remote spec
    /// (no pod files), the codecs are known, `public_ip` is an address, and the video limits are
    /// within the ranges the flags accept.
    pub fn check(request: ClaimRequest) -> Result<Claim, ClaimError> {
        let session: SessionKey = request.session.parse()?;
        if !is_bearer_token(&request.token) {
            return Err(ClaimError::Token);
        }
        let tls = ServerIdentity::from_pem(
            "tls_cert",
            request.tls_cert.as_bytes(),
            "tls_key",
            request.tls_key.as_bytes(),
        )?
        .server_config()?;
        let filter = FilterSpec::from_remote(&request.filter)?;
        let codecs = request
            .codecs
            .iter()
            .map(|name| name.parse())
            .collect::<Result<Vec<CodecKind>, _>>()?;
        let public_ip = request
            .public_ip
            .map(|ip| ip.trim().parse().map_err(|_| ClaimError::PublicIp(ip)))
            .transpose()?;
        let limits = PictureLimits {
            max_width: request.max_width,
            max_height: request.max_height,
            max_fps: request.max_fps,
        }
        .checked()?;
        Ok(Claim {
            session,
            token: request.token,
            tls,
            filter,
            media: ClaimedMedia {
                public_ip,
                codecs,
                limits,
            },
        })
    }
}

/// Whether `token` can be sent as `Authorization: Bearer <token>` and compared as sent: 1 to
/// [`MAX_TOKEN_BYTES`] visible ASCII characters.
fn is_bearer_token(token: &str) -> bool {
    (1..=MAX_TOKEN_BYTES).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

/// `router` with `POST /claim` for the warm-pool pod `pool`.
pub(super) fn route(router: Router<AppState>, pool: Arc<Pool>) -> Router<AppState> {
    router.route(
        CLAIM_PATH,
        post(
            move |State(state): State<AppState>,
                  headers: HeaderMap,
                  body: Result<Bytes, BytesRejection>| {
                let pool = pool.clone();
                async move {
                    match take_claim(&state, &pool, &headers, body) {
                        Ok(reply) => Json(reply).into_response(),
                        Err(error) => {
                            state.metrics.count_refused_claim(error.code());
                            error.into_response()
                        }
                    }
                }
            },
        ),
    )
}

fn take_claim(
    state: &AppState,
    pool: &Pool,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<ClaimReply, ApiError> {
    auth::check_bearer(Some(&pool.claim_token), headers)?;
    let request: ClaimRequest = json_body(headers, body)?;
    let claim = Claim::check(request)?;
    state.accept_claim(pool, claim)
}

impl AppState {
    /// Decides on a checked claim and, when it is taken, makes the pod the claim's session's: one
    /// write of what the camera endpoints serve, the certificate swapped with it.
    fn accept_claim(&self, pool: &Pool, claim: Claim) -> Result<ClaimReply, ApiError> {
        let mut serving = self.serving.write().unwrap_or_else(|e| e.into_inner());
        if let Some(reply) = &serving.claim {
            let repeated = reply.session == claim.session.to_string()
                && serving
                    .token
                    .as_deref()
                    .is_some_and(|token| auth::same_token(&claim.token, token));
            return if repeated {
                tracing::info!(session = %claim.session, "claim repeated; answering as the first time");
                Ok(reply.clone())
            } else {
                Err(ApiError::AlreadyClaimed)
            };
        }
        let warm = match &serving.phase {
            Phase::Warm(warm) => warm.clone(),
            Phase::Warming { filter } => {
                return Err(ApiError::NotReady(format!(
                    "the filter {filter} is still warming up; claim again once /readyz says warm"
                )));
            }
            Phase::Unready { reason } => return Err(ApiError::NotReady(reason.clone())),
            // A warm-pool pod serves a camera only once claimed, and then `claim` is set; it never
            // waits for an address (`--await-public-ip` and `--claim-token-file` exclude each
            // other), the claim brings it.
            Phase::Ready { .. } | Phase::AwaitingAddress { .. } => {
                return Err(ApiError::AlreadyClaimed);
            }
        };
        let warm_filter = claim.filter == warm.spec;
        let reply = ClaimReply {
            session: claim.session.to_string(),
            filter: claim.filter.to_string(),
            warm_filter,
        };
        let camera = Camera::new(
            claim.media.over(&warm.media),
            warm.worker.clone(),
            self.metrics.clone(),
        );
        let readiness = Readiness {
            filter: claim.filter.name().to_owned(),
            execution_provider: warm.readiness.execution_provider.clone(),
        };
        if let Some(tls) = &pool.tls {
            tls.reload_from_config(claim.tls);
        }
        tracing::info!(
            session = %claim.session,
            filter = claim.filter.name(),
            warm_filter,
            "claimed: serving the session"
        );
        if !warm_filter {
            // Queued before anyone can use the session's token: a filter the session asks for
            // later supersedes it, never the other way round.
            switch_in_background(&warm.worker, claim.filter);
        }
        *serving = Arc::new(Serving {
            phase: Phase::Ready {
                camera: Arc::new(camera),
                readiness,
            },
            token: Some(Arc::from(claim.token)),
            claim: Some(reply.clone()),
        });
        drop(serving);
        self.metrics.claimed.set(1);
        Ok(reply)
    }
}

/// Queues the switch to the claim's filter and lets it finish in the background: the camera is
/// served meanwhile, with the warm filter until the new one is built. When it cannot be built
/// the warm filter stays.
fn switch_in_background(worker: &FilterWorker, filter: FilterSpec) {
    let name = filter.name();
    let switched = worker.queue_switch(filter);
    tokio::spawn(async move {
        match switched.await {
            Ok(name) => tracing::info!(filter = %name, "switched to the claim's filter"),
            Err(error) => tracing::warn!(
                %error,
                filter = name,
                "the claim's filter could not be switched to; the warm filter stays"
            ),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::limits::BitrateBounds;
    use std::time::Duration;

    fn certified() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    fn request() -> ClaimRequest {
        let (tls_cert, tls_key) = certified();
        ClaimRequest {
            session: "team/cam".into(),
            token: "c2Vzc2lvbi10b2tlbg".into(),
            tls_cert,
            tls_key,
            filter: "passthrough".into(),
            max_width: None,
            max_height: None,
            max_fps: None,
            codecs: vec![],
            public_ip: None,
        }
    }

    fn refusal(change: impl FnOnce(&mut ClaimRequest)) -> ClaimError {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut request = request();
        change(&mut request);
        Claim::check(request).expect_err("refused")
    }

    #[test]
    fn a_complete_claim_is_checked_into_its_parts() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut request = request();
        request.filter = r#"{"filter":"selfie-blur","strength":7}"#.into();
        request.codecs = vec!["h264".into(), "VP8".into()];
        request.public_ip = Some("192.0.2.7".into());
        request.max_width = Some(640);
        request.max_fps = Some(15);
        let claim = Claim::check(request).unwrap();
        assert_eq!(claim.session, SessionKey::new("team", "cam"));
        assert_eq!(claim.filter, FilterSpec::SelfieBlur { strength: 7 });
        assert_eq!(
            claim.media,
            ClaimedMedia {
                public_ip: Some([192, 0, 2, 7].into()),
                codecs: vec![CodecKind::H264, CodecKind::Vp8],
                limits: PictureLimits {
                    max_width: Some(640),
                    max_height: None,
                    max_fps: Some(15),
                },
            }
        );
        let debug = format!("{claim:?}");
        assert!(!debug.contains("c2Vzc2lvbi10b2tlbg"), "{debug}");
    }

    #[test]
    fn each_bad_field_is_refused_with_its_code() {
        for session in ["cam", "team/", "a/b/c", ""] {
            let err = refusal(|r| r.session = session.into());
            assert!(matches!(err, ClaimError::Session(_)), "{session}: {err}");
            assert_eq!(err.code(), ErrorCode::InvalidJson);
        }
        let too_long = "t".repeat(MAX_TOKEN_BYTES + 1);
        for token in ["", " padded ", "two words", "tök", too_long.as_str()] {
            let err = refusal(|r| r.token = token.into());
            assert!(matches!(err, ClaimError::Token), "{token:?}: {err}");
        }
        assert!(is_bearer_token(&"t".repeat(MAX_TOKEN_BYTES)));
        let err = refusal(|r| r.tls_cert = "not a certificate".into());
        assert!(
            matches!(err, ClaimError::Tls(TlsError::NoCertificate(_))),
            "{err}"
        );
        assert!(err.to_string().contains("tls_cert"), "{err}");
        let err = refusal(|r| r.tls_key = certified().1);
        assert!(matches!(err, ClaimError::Tls(TlsError::Rustls(_))), "{err}");
        assert_eq!(err.code(), ErrorCode::InvalidJson);
        for filter in [
            "sepia",
            r#"{"filter":"selfie-replace","image":"/etc/passwd"}"#,
            r#"{"filter":"style","style":99}"#,
        ] {
            let err = refusal(|r| r.filter = filter.into());
            assert!(matches!(err, ClaimError::Filter(_)), "{filter}: {err}");
            assert_eq!(err.code(), ErrorCode::InvalidFilter);
        }
        let err = refusal(|r| r.codecs = vec!["vp8".into(), "av1".into()]);
        assert!(matches!(err, ClaimError::Codec(_)), "{err}");
        let err = refusal(|r| r.public_ip = Some("node-1.example".into()));
        assert!(matches!(err, ClaimError::PublicIp(_)), "{err}");
        let err = refusal(|r| r.max_height = Some(1));
        assert!(
            matches!(err, ClaimError::Limits(PictureLimitError::Height(1))),
            "{err}"
        );
        let err = refusal(|r| r.max_fps = Some(0));
        assert!(
            matches!(err, ClaimError::Limits(PictureLimitError::Fps(0))),
            "{err}"
        );
    }

    #[test]
    fn claimed_media_replaces_only_what_the_claim_sets() {
        let start = MediaConfig {
            udp_addr: "10.0.0.5:31000".parse().unwrap(),
            public_ip: Some([198, 51, 100, 1].into()),
            bitrate: BitrateBounds {
                min: 150_000,
                start: 1_000_000,
                max: 4_000_000,
            },
            codecs: vec![CodecKind::Vp8, CodecKind::H264],
            limits: PictureLimits {
                max_width: Some(1280),
                max_height: Some(720),
                max_fps: None,
            },
            decode_cap: Default::default(),
            connect_deadline: Duration::from_secs(10),
            takeover_after: Duration::from_secs(1),
            forward_passthrough: true,
            relay: Default::default(),
        };
        let unchanged = ClaimedMedia::default().over(&start);
        assert_eq!(
            (unchanged.public_ip, &unchanged.codecs, unchanged.limits),
            (start.public_ip, &start.codecs, start.limits)
        );
        let claimed = ClaimedMedia {
            public_ip: Some([192, 0, 2, 7].into()),
            codecs: vec![CodecKind::H264],
            limits: PictureLimits {
                max_width: None,
                max_height: Some(480),
                max_fps: Some(24),
            },
        }
        .over(&start);
        assert_eq!(claimed.public_ip, Some([192, 0, 2, 7].into()));
        assert_eq!(claimed.codecs, vec![CodecKind::H264]);
        assert_eq!(
            claimed.limits,
            PictureLimits {
                max_width: Some(1280),
                max_height: Some(480),
                max_fps: Some(24),
            }
        );
        assert_eq!(claimed.udp_addr, start.udp_addr, "the pod's own port stays");
        assert_eq!(claimed.bitrate, start.bitrate);
    }
}
