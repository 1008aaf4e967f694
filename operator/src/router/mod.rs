//! The router: the HTTPS front door browsers talk to. It routes each WebRTC offer to its
//! session's camera pod, using watch-backed caches of CameraSessions and their Secrets, and
//! answers ACME HTTP-01 challenges on a plain HTTP port. Its metrics are on a third, internal
//! address.

pub mod app;
pub mod auth;
pub mod challenge;
pub mod client_address;
pub mod connections;
pub mod error;
pub mod forward;
pub mod ice;
pub mod metrics;
pub mod pod_endpoint;
pub mod ratelimit;
pub mod sessions;
pub mod tls;
pub mod watch;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::{reflector, watcher};
use tokio_util::sync::CancellationToken;

use self::app::{Readiness, RouterState};
use self::connections::{ConnectionLimit, bounded_server};
use self::forward::PodClients;
use self::ice::{TurnArgs, TurnConfig, TurnConfigError};
use self::metrics::Metrics;
use self::ratelimit::{KeyedLimiter, Rate};
use self::sessions::SessionCache;
use self::tls::SwappableCertificate;
use self::watch::WatchHealth;
use crate::ports::PortRange;

/// Name of the ConfigMap the operator's ACME client publishes HTTP-01 answers in.
pub const DEFAULT_CHALLENGE_CONFIG_MAP: &str = "p2pcamera-acme-challenges";
/// Name of the `kubernetes.io/tls` Secret the router serves.
pub const DEFAULT_TLS_SECRET: &str = "p2pcamera-router-tls";

#[derive(Debug, Clone, clap::Args)]
pub struct RouterArgs {
    /// HTTPS address browsers connect to.
    #[arg(long, env = "P2PCAMERA_ROUTER_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain HTTP address for ACME HTTP-01 challenges (the Service maps port 80 here).
    #[arg(
        long,
        env = "P2PCAMERA_ROUTER_HTTP_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub http_listen: SocketAddr,
    /// Namespace of the TLS Secret and the challenge ConfigMap (the router's own namespace).
    #[arg(
        long,
        env = "P2PCAMERA_ROUTER_NAMESPACE",
        default_value = "p2pcamera-system"
    )]
    pub namespace: String,
    /// `kubernetes.io/tls` Secret with the serving certificate (from ACME or cert-manager).
    #[arg(long, env = "P2PCAMERA_ROUTER_TLS_SECRET", default_value = DEFAULT_TLS_SECRET)]
    pub tls_secret: String,
    /// ConfigMap holding HTTP-01 challenge answers (token -> key authorization).
    #[arg(long, env = "P2PCAMERA_ROUTER_CHALLENGE_CONFIG_MAP", default_value = DEFAULT_CHALLENGE_CONFIG_MAP)]
    pub challenge_config_map: String,
    /// Only route sessions of this namespace (default: all namespaces).
    #[arg(long, env = "P2PCAMERA_ROUTER_SESSION_NAMESPACE")]
    pub session_namespace: Option<String>,
    /// Label selector of the per-session Secrets the router caches.
    #[arg(
        long,
        env = "P2PCAMERA_ROUTER_SESSION_SECRET_SELECTOR",
        default_value = "app.kubernetes.io/managed-by=p2pcamera-operator,p2pcamera.io/session"
    )]
    pub session_secret_selector: String,
    /// Page origins allowed to call the router (CORS), comma separated, e.g. `https://meet.example`.
    #[arg(long, env = "P2PCAMERA_ROUTER_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Plain HTTP address of `/metrics` (inside the cluster only; not on the public ports).
    #[arg(
        long,
        env = "P2PCAMERA_ROUTER_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,
    /// Ports camera pods use, `FIRST-LAST` (the operator's `--port-range`): the router connects
    /// to no session endpoint outside them.
    #[arg(long, env = "P2PCAMERA_PORT_RANGE", default_value = "40000-40999")]
    pub port_range: PortRange,
    /// Seconds to wait for a camera pod's answer before answering 504.
    #[arg(long, env = "P2PCAMERA_ROUTER_FORWARD_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub forward_timeout: Duration,
    /// Seconds an offer may take from its headers to its answer: a body not received by then is
    /// 400 `bad_body`, a pod answer not received by then 504 `pod_timeout`.
    #[arg(long, env = "P2PCAMERA_ROUTER_REQUEST_TIMEOUT", default_value = "15", value_parser = parse_seconds)]
    pub request_timeout: Duration,
    /// Seconds a client has for its TLS handshake and for each request's headers (also the
    /// longest a kept-alive connection waits for its next request).
    #[arg(long, env = "P2PCAMERA_ROUTER_HEADER_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub header_timeout: Duration,
    /// Connections open at once on the HTTPS and HTTP ports together; more are closed at once.
    #[arg(long, env = "P2PCAMERA_ROUTER_MAX_CONNECTIONS", default_value_t = connections::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Sustained offers per second accepted for one session.
    #[arg(long, env = "P2PCAMERA_ROUTER_SESSION_RATE", default_value_t = 1.0)]
    pub session_rate: f64,
    /// Offers one session may send in a burst.
    #[arg(long, env = "P2PCAMERA_ROUTER_SESSION_BURST", default_value_t = 5)]
    pub session_burst: u32,
    /// Sustained requests per second accepted from one client address.
    #[arg(long, env = "P2PCAMERA_ROUTER_CLIENT_RATE", default_value_t = 5.0)]
    pub client_rate: f64,
    /// Requests one client address may send in a burst.
    #[arg(long, env = "P2PCAMERA_ROUTER_CLIENT_BURST", default_value_t = 20)]
    pub client_burst: u32,
    /// Networks (or single addresses) of the proxies in front of the router (load balancer,
    /// ingress), comma separated, e.g. `10.0.0.0/8`. Requests from them are counted against the client named in their
    /// `X-Forwarded-For` header (the rightmost address not in these networks).
    #[arg(long, env = "P2PCAMERA_ROUTER_TRUSTED_PROXIES", value_delimiter = ',', value_parser = client_address::parse_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    #[command(flatten)]
    pub turn: TurnArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("binding {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid allowed origin {0:?}")]
    Origin(String),
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Turn(#[from] TurnConfigError),
}

/// A number of seconds from the command line: positive and finite, fractions allowed.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

/// The router's three sockets, bound before serving so callers (and tests) learn the addresses.
pub struct Listeners {
    pub https: TcpListener,
    pub http: TcpListener,
    pub metrics: TcpListener,
}

impl Listeners {
    pub fn bind(args: &RouterArgs) -> Result<Self, RouterError> {
        let bind = |address: SocketAddr| {
            let listener = TcpListener::bind(address)
                .map_err(|source| RouterError::Bind { address, source })?;
            listener
                .set_nonblocking(true)
                .map_err(|source| RouterError::Bind { address, source })?;
            Ok::<_, RouterError>(listener)
        };
        Ok(Self {
            https: bind(args.listen)?,
            http: bind(args.http_listen)?,
            metrics: bind(args.metrics_listen)?,
        })
    }
}

fn allowed_origins(origins: &[String]) -> Result<Vec<HeaderValue>, RouterError> {
    origins
        .iter()
        .map(|origin| origin.trim())
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            if origin == "*" {
                return Err(RouterError::Origin(origin.into()));
            }
            HeaderValue::from_str(origin).map_err(|_| RouterError::Origin(origin.into()))
        })
        .collect()
}

/// Runs the router on already bound listeners until `shutdown` fires.
pub async fn serve(
    client: Client,
    args: RouterArgs,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let origins = allowed_origins(&args.allowed_origins)?;
    let turn = TurnConfig::from_args(&args.turn)?;
    match &turn {
        Some(turn) => {
            tracing::info!(urls = ?turn.urls(), lifetime = ?args.turn.credential_lifetime, "TURN credentials for browsers")
        }
        None => {
            tracing::info!("no TURN servers configured: browsers connect to camera pods directly")
        }
    }
    let metrics = Arc::new(Metrics::new());
    let certificate = Arc::new(SwappableCertificate::default());
    let sessions_health = Arc::new(WatchHealth::new("camerasessions"));
    let secrets_health = Arc::new(WatchHealth::new("session-secrets"));
    let readiness = Readiness::new(
        certificate.clone(),
        vec![sessions_health.clone(), secrets_health.clone()],
    );

    let resource = sessions::camera_session_resource();
    let session_api: Api<DynamicObject> = match &args.session_namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let secret_api: Api<Secret> = match &args.session_namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let session_store = sessions::session_cache(session_api, sessions_health);
    let secret_store =
        sessions::session_secret_cache(secret_api, &args.session_secret_selector, secrets_health);
    // Challenge answers matter only while an order is pending: not part of readiness.
    let (challenge_store, challenge_writer) = reflector::store::<ConfigMap>();
    let challenge_api: Api<ConfigMap> = Api::namespaced(client.clone(), &args.namespace);
    let challenge_config =
        watcher::Config::default().fields(&format!("metadata.name={}", args.challenge_config_map));
    let challenge_health = Arc::new(WatchHealth::new("acme-challenges"));
    tokio::spawn(watch::reflect(
        challenge_api,
        challenge_config,
        challenge_writer,
        challenge_health,
        watch::drop_bookkeeping::<ConfigMap>,
    ));
    tokio::spawn({
        let (client, namespace, name) = (
            client.clone(),
            args.namespace.clone(),
            args.tls_secret.clone(),
        );
        let (certificate, metrics) = (certificate.clone(), metrics.clone());
        async move { tls::watch_secret(client, &namespace, &name, certificate, metrics).await }
    });

    let state = Arc::new(RouterState {
        sessions: SessionCache::new(session_store, secret_store),
        pods: PodClients::new(args.forward_timeout),
        per_session: KeyedLimiter::new(Rate {
            per_second: args.session_rate,
            burst: args.session_burst,
        }),
        per_client: KeyedLimiter::new(Rate {
            per_second: args.client_rate,
            burst: args.client_burst,
        }),
        trusted_proxies: args.trusted_proxies,
        metrics: metrics.clone(),
        readiness,
        allowed_origins: origins,
        port_range: args.port_range,
        request_timeout: args.request_timeout,
        turn,
    });
    let https_address = listeners.https.local_addr().ok();
    let http_address = listeners.http.local_addr().ok();
    let metrics_address = listeners.metrics.local_addr().ok();
    tracing::info!(https = ?https_address, http = ?http_address, metrics = ?metrics_address, "router listening");

    // One limit for both public ports; the TLS handshake counts against the header timeout.
    let limit = ConnectionLimit::new(args.max_connections, metrics.clone());
    let tls = RustlsAcceptor::new(RustlsConfig::from_config(tls::server_config(certificate)))
        .handshake_timeout(args.header_timeout)
        .acceptor(limit.clone());
    let handle = axum_server::Handle::new();
    let https = bounded_server(listeners.https, tls, args.header_timeout)
        .map_err(RouterError::Serve)?
        .handle(handle.clone())
        .serve(app::app(state).into_make_service_with_connect_info::<SocketAddr>());
    let challenges =
        challenge::Challenges::new(challenge_store, &args.namespace, &args.challenge_config_map);
    let http = bounded_server(listeners.http, limit, args.header_timeout)
        .map_err(RouterError::Serve)?
        .handle(handle.clone())
        .serve(challenge::app(challenges).into_make_service());
    let metrics_listener =
        tokio::net::TcpListener::from_std(listeners.metrics).map_err(RouterError::Serve)?;
    let metrics_server = axum::serve(metrics_listener, metrics::app(metrics))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
        }
    });
    let (https, http, metrics_server) = tokio::join!(https, http, metrics_server);
    https.map_err(RouterError::Serve)?;
    http.map_err(RouterError::Serve)?;
    metrics_server.map_err(RouterError::Serve)?;
    Ok(())
}

/// Binds the configured addresses and runs the router until `shutdown` fires.
pub async fn run(
    client: Client,
    args: RouterArgs,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    let listeners = Listeners::bind(&args)?;
    serve(client, args, listeners, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_and_invalid_origins_are_refused() {
        assert!(matches!(
            allowed_origins(&["*".into()]),
            Err(RouterError::Origin(_))
        ));
        assert!(matches!(
            allowed_origins(&["bad\norigin".into()]),
            Err(RouterError::Origin(_))
        ));
        let Ok(origins) = allowed_origins(&["https://a.example".into(), " ".into()]) else {
            panic!("valid")
        };
        assert_eq!(origins, vec![HeaderValue::from_static("https://a.example")]);
    }

    #[test]
    fn seconds_must_be_positive_and_finite() {
        assert_eq!(parse_seconds("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_seconds(" 0.5 "), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "NaN", "inf", "1e30", "", "ten"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[derive(clap::Parser)]
    struct Command {
        #[command(flatten)]
        router: RouterArgs,
    }

    #[test]
    fn defaults_bound_the_router_and_keep_metrics_off_the_public_ports() {
        use clap::Parser;
        let Ok(Command { router }) = Command::try_parse_from(["router"]) else {
            panic!("defaults parse")
        };
        assert_eq!(
            router.port_range,
            PortRange {
                first: 40000,
                last: 40999
            }
        );
        assert_eq!(router.request_timeout, Duration::from_secs(15));
        assert_eq!(router.header_timeout, Duration::from_secs(10));
        assert_eq!(router.max_connections, 4096);
        assert_eq!(router.metrics_listen, "0.0.0.0:9090".parse().unwrap());
        assert_ne!(router.metrics_listen.port(), router.listen.port());
        assert!(Command::try_parse_from(["router", "--max-connections", "0"]).is_err());
        assert!(Command::try_parse_from(["router", "--port-range", "2-1"]).is_err());
        assert!(router.turn.urls.is_empty() && router.turn.secret_file.is_none());
        assert_eq!(router.turn.credential_lifetime, Duration::from_secs(3600));
        let Ok(Command { router }) = Command::try_parse_from([
            "router",
            "--turn-urls",
            "turn:t.example:3478?transport=udp,turns:t.example:443",
            "--turn-secret-file",
            "/etc/turn/secret",
            "--turn-credential-lifetime",
            "600",
        ]) else {
            panic!("TURN flags parse")
        };
        assert_eq!(
            router.turn.urls,
            ["turn:t.example:3478?transport=udp", "turns:t.example:443"]
        );
        assert_eq!(router.turn.credential_lifetime, Duration::from_secs(600));
    }
}
