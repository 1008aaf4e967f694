//! The router: the HTTPS front door browsers talk to. It routes each WebRTC offer to its
//! session's camera pod, using watch-backed caches of CameraSessions and their Secrets, and
//! answers ACME HTTP-01 challenges on a plain HTTP port.

pub mod app;
pub mod auth;
pub mod challenge;
pub mod client_address;
pub mod error;
pub mod forward;
pub mod metrics;
pub mod ratelimit;
pub mod sessions;
pub mod tls;
pub mod watch;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::{reflector, watcher};
use tokio_util::sync::CancellationToken;

use self::app::{Readiness, RouterState};
use self::forward::PodClients;
use self::metrics::Metrics;
use self::ratelimit::{KeyedLimiter, Rate};
use self::sessions::SessionCache;
use self::tls::SwappableCertificate;
use self::watch::WatchHealth;

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
    /// Seconds to wait for a camera pod's answer before answering 504.
    #[arg(long, env = "P2PCAMERA_ROUTER_FORWARD_TIMEOUT", default_value_t = 10.0)]
    pub forward_timeout: f64,
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
    #[error("invalid forward timeout {0}")]
    Timeout(f64),
    #[error("pod client: {0}")]
    PodClient(#[from] forward::ClientError),
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// The router's two sockets, bound before serving so callers (and tests) learn the addresses.
pub struct Listeners {
    pub https: TcpListener,
    pub http: TcpListener,
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
    if !(args.forward_timeout.is_finite() && args.forward_timeout > 0.0) {
        return Err(RouterError::Timeout(args.forward_timeout));
    }
    let origins = allowed_origins(&args.allowed_origins)?;
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
    let session_writer = reflector::store::Writer::new(resource.clone());
    let session_store = session_writer.as_reader();
    tokio::spawn(watch::reflect(
        session_api,
        watcher::Config::default(),
        session_writer,
        sessions_health,
    ));
    let (secret_store, secret_writer) = reflector::store::<Secret>();
    let secret_config = watcher::Config::default().labels(&args.session_secret_selector);
    tokio::spawn(watch::reflect(
        secret_api,
        secret_config,
        secret_writer,
        secrets_health,
    ));
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
        pods: PodClients::new(Duration::from_secs_f64(args.forward_timeout))?,
        per_session: KeyedLimiter::new(Rate {
            per_second: args.session_rate,
            burst: args.session_burst,
        }),
        per_client: KeyedLimiter::new(Rate {
            per_second: args.client_rate,
            burst: args.client_burst,
        }),
        trusted_proxies: args.trusted_proxies,
        metrics,
        readiness,
        allowed_origins: origins,
    });
    let https_address = listeners.https.local_addr().ok();
    let http_address = listeners.http.local_addr().ok();
    tracing::info!(https = ?https_address, http = ?http_address, "router listening");

    let handle = axum_server::Handle::new();
    let https = axum_server::from_tcp_rustls(
        listeners.https,
        axum_server::tls_rustls::RustlsConfig::from_config(tls::server_config(certificate)),
    )
    .map_err(RouterError::Serve)?
    .handle(handle.clone())
    .serve(app::app(state).into_make_service_with_connect_info::<SocketAddr>());
    let http_listener =
        tokio::net::TcpListener::from_std(listeners.http).map_err(RouterError::Serve)?;
    let challenges =
        challenge::Challenges::new(challenge_store, &args.namespace, &args.challenge_config_map);
    let http = axum::serve(http_listener, challenge::app(challenges))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
        }
    });
    let (https, http) = tokio::join!(https, http);
    https.map_err(RouterError::Serve)?;
    http.map_err(RouterError::Serve)?;
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
}
