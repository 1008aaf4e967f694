//! TURN relays for browsers that cannot reach a camera pod directly (networks that block UDP,
//! symmetric NAT): the router hands each authorized session short-lived TURN credentials from
//! `GET /v1/sessions/{namespace}/{name}/ice-servers`.
//!
//! The credentials follow the TURN REST scheme that coturn checks with `use-auth-secret`:
//! the username is `<expiry, Unix seconds>:<namespace>/<name>` and the credential is
//! base64(HMAC-SHA1(shared secret, username)). The TURN server needs only the shared secret to
//! check them, and refuses them after the expiry; the secret itself never leaves the router.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use p2pcamera_api::SessionKey;
use p2pcamera_api::relay::RelayCredential;
use serde::{Deserialize, Serialize};
use sha1::Sha1;

use super::parse_seconds;

/// How long credentials stay valid unless `--turn-credential-lifetime` says otherwise.
pub const DEFAULT_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, clap::Args)]
pub struct TurnArgs {
    /// TURN servers browsers may relay through, comma separated `turn:`/`turns:` URLs, e.g.
    /// `turn:turn.example:3478?transport=udp,turn:turn.example:3478?transport=tcp,turns:turn.example:443?transport=tcp`.
    /// Unset: no relay (`/ice-servers` answers an empty list).
    #[arg(
        long = "turn-urls",
        env = "P2PCAMERA_ROUTER_TURN_URLS",
        value_delimiter = ','
    )]
    pub urls: Vec<String>,
    /// File holding the TURN servers' shared secret (coturn's `static-auth-secret`; surrounding
    /// white space ignored). Read once at start.
    #[arg(long = "turn-secret-file", env = "P2PCAMERA_ROUTER_TURN_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Seconds a TURN credential handed to a browser stays valid.
    #[arg(
        long = "turn-credential-lifetime",
        env = "P2PCAMERA_ROUTER_TURN_CREDENTIAL_LIFETIME",
        default_value = "3600",
        value_parser = parse_seconds
    )]
    pub credential_lifetime: Duration,
}

impl Default for TurnArgs {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret_file: None,
            credential_lifetime: DEFAULT_CREDENTIAL_LIFETIME,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TurnConfigError {
    #[error("--turn-urls is set but --turn-secret-file is not")]
    MissingSecret,
    #[error("--turn-secret-file is set but --turn-urls is empty")]
    MissingUrls,
    #[error("reading the TURN secret {}: {source}", path.display())]
    ReadSecret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the TURN secret file {} is empty", .0.display())]
    EmptySecret(PathBuf),
    #[error("invalid TURN URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
}

/// The `iceServers` a browser passes to `RTCPeerConnection` (the route's JSON body), and for how
/// many seconds the credentials in it stay valid (`ttl`, 0 when there are none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServers {
    pub ice_servers: Vec<IceServer>,
    pub ttl: u64,
}

/// One `RTCIceServer`: TURN URLs with the credential for all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// The TURN servers and the secret shared with them. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct TurnConfig {
    urls: Vec<String>,
    secret: Vec<u8>,
    lifetime: Duration,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl TurnConfig {
    /// Checks every URL (a browser refuses a whole configuration for one bad URL) and that the
    /// secret is not empty.
    pub fn new(
        urls: Vec<String>,
        secret: Vec<u8>,
        lifetime: Duration,
    ) -> Result<Self, TurnConfigError> {
        for url in &urls {
            check_url(url).map_err(|reason| TurnConfigError::InvalidUrl {
                url: url.clone(),
                reason,
            })?;
        }
        if urls.is_empty() {
            return Err(TurnConfigError::MissingUrls);
        }
        Ok(Self {
            urls,
            secret,
            lifetime,
        })
    }

    /// The configuration the flags ask for: `None` without `--turn-urls` and
    /// `--turn-secret-file`, an error when only one of them is given.
    pub fn from_args(args: &TurnArgs) -> Result<Option<Self>, TurnConfigError> {
        let urls: Vec<String> = args
            .urls
            .iter()
            .map(|url| url.trim())
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        match (urls.is_empty(), &args.secret_file) {
            (true, None) => Ok(None),
            (true, Some(_)) => Err(TurnConfigError::MissingUrls),
            (false, None) => Err(TurnConfigError::MissingSecret),
            (false, Some(path)) => {
                Self::new(urls, read_secret(path)?, args.credential_lifetime).map(Some)
            }
        }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The ICE servers for `session`, with a credential that expires `lifetime` after `now`.
    pub fn ice_servers(&self, session: &SessionKey, now: SystemTime) -> IceServers {
        let RelayCredential {
            username,
            credential,
        } = self.credential(session, now);
        IceServers {
            ice_servers: vec![IceServer {
                urls: self.urls.clone(),
                credential,
                username,
            }],
            ttl: self.lifetime_seconds(),
        }
    }

    /// A credential for `session` that expires `lifetime` after `now`: the browser's (in
    /// [`Self::ice_servers`]) and the one the router adds to each offer for the session's pod.
    pub fn credential(&self, session: &SessionKey, now: SystemTime) -> RelayCredential {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_secs())
            .unwrap_or_default();
        let username = rest_username(now.saturating_add(self.lifetime_seconds()), session);
        RelayCredential {
            credential: rest_credential(&self.secret, &username),
            username,
        }
    }

    fn lifetime_seconds(&self) -> u64 {
        self.lifetime.as_secs_f64().ceil() as u64
    }
}

/// The TURN REST username: `<expires_at>:<namespace>/<name>`. The TURN server reads the expiry
/// from before the first `:`; the rest names the session in its logs.
pub fn rest_username(expires_at: u64, session: &SessionKey) -> String {
    format!("{expires_at}:{session}")
}

/// The TURN REST credential for `username`: base64(HMAC-SHA1(secret, username)).
pub fn rest_credential(secret: &[u8], username: &str) -> String {
    // HMAC takes keys of any length; this never fails.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

fn read_secret(path: &Path) -> Result<Vec<u8>, TurnConfigError> {
    let text = std::fs::read(path).map_err(|source| TurnConfigError::ReadSecret {
        path: path.to_owned(),
        source,
    })?;
    let secret = text.trim_ascii();
    if secret.is_empty() {
        return Err(TurnConfigError::EmptySecret(path.to_owned()));
    }
    Ok(secret.to_vec())
}

/// A `turn:`/`turns:` URL as RFC 7065 has it: `turn[s]:host[:port][?transport=udp|tcp]`.
fn check_url(url: &str) -> Result<(), &'static str> {
    let (scheme, rest) = url.split_once(':').ok_or("not a turn: or turns: URL")?;
    if !scheme.eq_ignore_ascii_case("turn") && !scheme.eq_ignore_ascii_case("turns") {
        return Err("not a turn: or turns: URL");
    }
    let (address, query) = match rest.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (rest, None),
    };
    if let Some(query) = query {
        let transport = query
            .strip_prefix("transport=")
            .ok_or("the only parameter is transport=udp or transport=tcp")?;
        if !transport.eq_ignore_ascii_case("udp") && !transport.eq_ignore_ascii_case("tcp") {
            return Err("the only parameter is transport=udp or transport=tcp");
        }
    }
    let host = match address.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:3478`.
        Some(bracketed) => {
            let (host, port) = bracketed.split_once(']').ok_or("unclosed [")?;
            check_port(port.strip_prefix(':'), port.is_empty())?;
            host
        }
        None => {
            let (host, port) = match address.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            };
            check_port(port, port.is_none())?;
            host
        }
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
    {
        return Err("the host must be a DNS name or an IP address");
    }
    Ok(())
}

fn check_port(port: Option<&str>, absent: bool) -> Result<(), &'static str> {
    match port {
        None if absent => Ok(()),
        Some(port) if port.parse::<u16>().is_ok_and(|port| port > 0) => Ok(()),
        _ => Err("the port must be a number from 1 to 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(urls: &[&str]) -> TurnConfig {
        TurnConfig::new(
            urls.iter().map(|url| url.to_string()).collect(),
            b"north".to_vec(),
            Duration::from_secs(3600),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_credential_is_base64_hmac_sha1_of_the_username() {
        // RFC 2202, HMAC-SHA1 test case 2 (digest effcdf6ae5eb2fa2d27416d5f184df9c259a7c79).
        assert_eq!(
            rest_credential(b"Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
        // The same scheme in Python's hmac module:
        // base64(hmac.new(b"north", b"1700003600:default/cam", sha1).digest()).
        assert_eq!(
            rest_credential(b"north", "1700003600:default/cam"),
            "rCM5D4eyggvVDHRf+PkJMvYwu8U="
        );
    }

    #[test]
    fn credentials_name_the_session_and_expire_after_the_lifetime() {
        let turn = config(&[
            "turn:turn.example:3478?transport=udp",
            "turns:turn.example:443",
        ]);
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let servers = turn.ice_servers(&SessionKey::new("default", "cam"), now);
        assert_eq!(servers.ttl, 3600);
        let [server] = servers.ice_servers.as_slice() else {
            panic!("one server: {servers:?}")
        };
        assert_eq!(server.username, "1700003600:default/cam");
        assert_eq!(server.credential, "rCM5D4eyggvVDHRf+PkJMvYwu8U=");
        assert_eq!(
            server.urls,
            [
                "turn:turn.example:3478?transport=udp",
                "turns:turn.example:443"
            ]
        );
        // Another session, or a later request, gets another credential.
        let other = turn.ice_servers(&SessionKey::new("default", "cam2"), now);
        assert_ne!(other.ice_servers[0].credential, server.credential);
        let later = turn.ice_servers(
            &SessionKey::new("default", "cam"),
            now + Duration::from_secs(1),
        );
        assert_eq!(later.ice_servers[0].username, "1700003601:default/cam");
    }

    #[test]
    fn the_json_is_what_rtc_peer_connection_takes() {
        let turn = config(&["turn:127.0.0.1:3478"]);
        let servers = turn.ice_servers(&SessionKey::new("ns", "cam"), UNIX_EPOCH);
        let json = serde_json::to_value(&servers).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"iceServers": [{"urls": ["turn:127.0.0.1:3478"],
                "username": "3600:ns/cam", "credential": rest_credential(b"north", "3600:ns/cam")}],
                "ttl": 3600})
        );
        assert_eq!(
            serde_json::to_value(IceServers::default()).unwrap_or_default(),
            serde_json::json!({"iceServers": [], "ttl": 0})
        );
    }

    #[test]
    fn urls_are_checked_as_browsers_would() {
        for good in [
            "turn:turn.example",
            "turn:turn.example:3478?transport=udp",
            "TURN:turn.example:3478?transport=TCP",
            "turns:turn.example:443?transport=tcp",
            "turn:10.0.0.1:3478",
            "turn:[2001:db8::1]:3478",
            "turn:[::1]",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "stun:turn.example",
            "https://turn.example",
            "turn:",
            "turn::3478",
            "turn:turn.example:0",
            "turn:turn.example:99999",
            "turn:turn.example:port",
            "turn:turn.example?transport=sctp",
            "turn:turn.example?foo=bar",
            "turn:user@turn.example",
            "turn:turn example",
            "turn:[::1",
            "turn:[::1]3478",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_need_both_urls_and_a_non_empty_secret() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "north\n").unwrap_or_else(|e| panic!("{e}"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap_or_else(|e| panic!("{e}"));
        let args = |urls: &[&str], file: Option<&Path>| TurnArgs {
            urls: urls.iter().map(|url| url.to_string()).collect(),
            secret_file: file.map(Path::to_owned),
            credential_lifetime: Duration::from_secs(60),
        };
        assert!(matches!(
            TurnConfig::from_args(&TurnArgs::default()),
            Ok(None)
        ));
        assert!(matches!(
            TurnConfig::from_args(&args(&[" "], None)),
            Ok(None)
        ));
        assert!(matches!(
            TurnConfig::from_args(&args(&["turn:t.example"], None)),
            Err(TurnConfigError::MissingSecret)
        ));
        assert!(matches!(
            TurnConfig::from_args(&args(&[], Some(&secret))),
            Err(TurnConfigError::MissingUrls)
        ));
        assert!(matches!(
            TurnConfig::from_args(&args(&["turn:t.example"], Some(&empty))),
            Err(TurnConfigError::EmptySecret(_))
        ));
        assert!(matches!(
            TurnConfig::from_args(&args(&["turn:t.example"], Some(&dir.path().join("none")))),
            Err(TurnConfigError::ReadSecret { .. })
        ));
        assert!(matches!(
            TurnConfig::from_args(&args(&["turn:t.example", "http://x"], Some(&secret))),
            Err(TurnConfigError::InvalidUrl { .. })
        ));
        let Ok(Some(turn)) = TurnConfig::from_args(&args(&["turn:t.example "], Some(&secret)))
        else {
            panic!("valid flags")
        };
        // The file's trailing newline is not part of the secret.
        let servers = turn.ice_servers(&SessionKey::new("default", "cam"), UNIX_EPOCH);
        assert_eq!(servers.ttl, 60);
        assert_eq!(servers.ice_servers[0].urls, ["turn:t.example"]);
        assert_eq!(
            servers.ice_servers[0].credential,
            rest_credential(b"north", "60:default/cam")
        );
        assert!(!format!("{turn:?}").contains("north"));
    }
}
