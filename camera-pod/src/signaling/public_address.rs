//! `POST /public-address` of a pod started with its session and `--await-public-ip`: the operator
//! hands the running pod its node's public address.
//!
//! The operator learns which node a pod runs on, and so the node's public address, only after the
//! pod was scheduled. Rather than starting the pod again with the address, it hands the address to
//! the running pod over HTTPS pinned to the session's certificate, with the operator token derived
//! from the pod's private key ([`p2pcamera_api::operator_token`]), which the session's bearer
//! token does not give. Until then the pod is not ready (`/readyz` 503 `awaiting_public_address`), so
//! no offer reaches it before it can advertise the right address. The address counts from the
//! moment the camera is set up ([`OperatorChannel::fix`]): an address handed before replaces the
//! one handed earlier, one handed afterwards changes nothing, and the answer always names the
//! address the pod advertises.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use p2pcamera_api::wire::{PUBLIC_ADDRESS_PATH, PublicAddress};
use tokio::sync::watch;

use super::{ApiError, AppState, auth, json_body};

/// The address handed so far, and whether the camera serves with it already.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Handed {
    ip: Option<IpAddr>,
    fixed: bool,
}

/// The operator's side of a pod started with its session: its token, and the public address it
/// handed the pod.
#[derive(Debug)]
pub struct OperatorChannel {
    token: String,
    handed: watch::Sender<Handed>,
}

impl OperatorChannel {
    /// A channel authenticated by the operator `token`, with no address handed yet.
    pub fn new(token: String) -> Self {
        Self {
            token,
            handed: watch::Sender::new(Handed::default()),
        }
    }

    /// Takes `ip` as the public address unless the camera serves with one already; returns the
    /// address the pod advertises.
    pub fn hand(&self, ip: IpAddr) -> IpAddr {
        let mut advertised = ip;
        self.handed.send_modify(|handed| {
            if !handed.fixed {
                handed.ip = Some(ip);
            }
            advertised = handed.ip.unwrap_or(ip);
        });
        advertised
    }

    /// Waits until an address is handed, then keeps it for good and returns it (the camera is
    /// set up with it).
    pub async fn fix(&self) -> IpAddr {
        let mut handed = self.handed.subscribe();
        loop {
            // The sender lives in `self`, so the wait ends only with an address (and an address,
            // once handed, is never taken back).
            let _ = handed.wait_for(|handed| handed.ip.is_some()).await;
            let mut fixed = None;
            self.handed.send_if_modified(|handed| {
                fixed = handed.ip;
                handed.fixed = handed.ip.is_some();
                false
            });
            if let Some(ip) = fixed {
                return ip;
            }
        }
    }
}

/// Adds `POST /public-address` for the pod's operator `channel`.
pub(super) fn route(router: Router<AppState>, channel: Arc<OperatorChannel>) -> Router<AppState> {
    router.route(
        PUBLIC_ADDRESS_PATH,
        post(
            move |headers: HeaderMap, body: Result<Bytes, BytesRejection>| {
                let channel = channel.clone();
                async move { hand_address(&channel, &headers, body) }
            },
        ),
    )
}

fn hand_address(
    channel: &OperatorChannel,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let handed = auth::check_bearer(Some(&channel.token), headers)
        .and_then(|()| json_body::<PublicAddress>(headers, body))
        .and_then(|request| {
            request.public_ip.parse::<IpAddr>().map_err(|_| {
                ApiError::InvalidJson(format!(
                    "public_ip {:?} is not an IP address",
                    request.public_ip
                ))
            })
        });
    match handed {
        Ok(ip) => {
            let advertised = channel.hand(ip.to_canonical());
            if advertised == ip.to_canonical() {
                tracing::info!(public_ip = %advertised, "the operator handed the node's public address");
            } else {
                tracing::warn!(handed = %ip, %advertised, "the operator handed another public address after the camera was set up; a new address takes a new pod");
            }
            Json(PublicAddress {
                public_ip: advertised.to_string(),
            })
            .into_response()
        }
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_latest_address_counts_until_the_camera_is_set_up() {
        let channel = OperatorChannel::new("t".into());
        let first: IpAddr = "203.0.113.1".parse().unwrap();
        let second: IpAddr = "203.0.113.2".parse().unwrap();
        assert_eq!(channel.hand(first), first);
        assert_eq!(channel.hand(second), second);
        assert_eq!(channel.fix().await, second);
        assert_eq!(
            channel.hand(first),
            second,
            "fixed once the camera is set up"
        );
    }

    #[tokio::test]
    async fn fixing_waits_for_an_address() {
        let channel = Arc::new(OperatorChannel::new("t".into()));
        let waiting = tokio::spawn({
            let channel = channel.clone();
            async move { channel.fix().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no address handed yet");
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        channel.hand(ip);
        assert_eq!(waiting.await.unwrap(), ip);
    }
}
