//! ACME against a real Pebble and a real API server: HTTP-01 answered by the real router,
//! the served certificate verified against Pebble's root, renewal without dropping an open
//! connection, an ACME outage that keeps the old certificate and reports it, and a restart
//! mid-order that issues with the same account and leaves no challenge answers behind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use p2pcamera_operator::acme::{self, AcmeArgs};
use p2pcamera_operator::router::{self, Listeners, RouterArgs};
use p2pcamera_tests::pebble::{Pebble, PebbleOptions};
use p2pcamera_tests::{ControlPlane, eventually};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

const HOST: &str = "router.p2pcamera.test";
const TLS_SECRET: &str = "router-tls";

struct Setup {
    pebble: Pebble,
    https: SocketAddr,
    namespace: String,
    client: kube::Client,
    shutdown: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn router_args(namespace: &str) -> RouterArgs {
    RouterArgs {
        listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        http_listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        namespace: namespace.into(),
        tls_secret: TLS_SECRET.into(),
        challenge_config_map: router::DEFAULT_CHALLENGE_CONFIG_MAP.into(),
        session_namespace: Some(namespace.into()),
        session_secret_selector: "p2pcamera.io/session".into(),
        allowed_origins: vec![],
        metrics_listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        port_range: "40000-40999".parse().unwrap_or_else(|e| panic!("{e}")),
        forward_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(15),
        // The renewal test keeps one connection idle across a renewal (up to ~30 s).
        header_timeout: Duration::from_secs(120),
        max_connections: 64,
        session_rate: 1.0,
        session_burst: 5,
        client_rate: 100.0,
        client_burst: 100,
        trusted_proxies: vec![],
        turn: Default::default(),
    }
}

fn acme_args(pebble: &Pebble, namespace: &str) -> AcmeArgs {
    AcmeArgs {
        directory: Some(pebble.directory_url()),
        host_names: vec![HOST.into()],
        contact: vec!["mailto:ops@p2pcamera.test".into()],
        agree_terms: true,
        eab_kid: None,
        eab_hmac_key: None,
        ca_bundle: Some(pebble.ca_bundle_path()),
        namespace: namespace.into(),
        tls_secret: TLS_SECRET.into(),
        account_secret: "acme-account".into(),
        challenge_config_map: router::DEFAULT_CHALLENGE_CONFIG_MAP.into(),
        status_config_map: "acme-status".into(),
        propagation_delay: 0.5,
        retry_min: 1.0,
        retry_max: 4.0,
        order_timeout: 30.0,
    }
}

/// Router and ACME loop for a fresh namespace, with a Pebble validating against the router.
async fn setup(prefix: &str, validity: Duration) -> Setup {
    let setup = start_router(prefix, validity).await;
    let acme_args = acme_args(&setup.pebble, &setup.namespace);
    tokio::spawn(acme::run(
        setup.client.clone(),
        acme_args,
        setup.shutdown.clone(),
    ));
    setup
}

/// Router for a fresh namespace, with a Pebble validating against it; no ACME loop yet.
async fn start_router(prefix: &str, validity: Duration) -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plane = ControlPlane::shared()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let namespace = plane
        .namespace(prefix)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = plane.client().unwrap_or_else(|e| panic!("{e}"));
    let args = router_args(&namespace);
    let listeners = Listeners::bind(&args).unwrap_or_else(|e| panic!("{e}"));
    let https = listeners
        .https
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"));
    let http_port = listeners
        .http
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let pebble = Pebble::start(PebbleOptions {
        http_port,
        validity,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let shutdown = CancellationToken::new();
    tokio::spawn(router::serve(
        client.clone(),
        args,
        listeners,
        shutdown.clone(),
    ));
    Setup {
        pebble,
        https,
        namespace,
        client,
        shutdown,
    }
}

fn connector(root_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut root_pem.as_bytes()) {
        roots
            .add(cert.unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A verified TLS connection to the router for HOST, or why not.
async fn connect(
    connector: &TlsConnector,
    address: SocketAddr,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(HOST).map_err(|e| e.to_string())?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

fn leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    let (_, connection) = stream.get_ref();
    let certs = connection
        .peer_certificates()
        .unwrap_or_else(|| panic!("no peer certificate"));
    certs[0].clone().into_owned()
}

/// One keep-alive `GET /healthz` on an existing connection; returns the status line.
async fn healthz(stream: &mut TlsStream<TcpStream>) -> String {
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
        if line.trim().is_empty() {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .await
        .unwrap_or_else(|e| panic!("read body: {e}"));
    status.trim().to_owned()
}

async fn status_condition(client: &kube::Client, namespace: &str) -> Option<serde_json::Value> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let config_map = api.get_opt("acme-status").await.ok()??;
    let conditions = config_map.data?.get("conditions")?.clone();
    let conditions: Vec<serde_json::Value> = serde_json::from_str(&conditions).ok()?;
    conditions
        .into_iter()
        .find(|c| c["type"] == "CertificateReady")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_via_http01_on_the_router_and_renews_without_dropping_connections() {
    let setup = setup("acme-issue", Duration::from_secs(30)).await;
    let root = setup
        .pebble
        .issuing_root()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tls = connector(&root);
    let mut open = eventually(
        "a certificate from Pebble served by the router",
        Duration::from_secs(60),
        || {
            let tls = tls.clone();
            async move { connect(&tls, setup.https).await }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\npebble log:\n{}", setup.pebble.log_tail(30)));
    let first = leaf(&open);
    assert_eq!(healthz(&mut open).await, "HTTP/1.1 200 OK");

    let condition = status_condition(&setup.client, &setup.namespace).await;
    assert_eq!(
        condition.as_ref().map(|c| c["status"].clone()),
        Some("True".into()),
        "{condition:?}"
    );
    let secrets: Api<Secret> = Api::namespaced(setup.client.clone(), &setup.namespace);
    let account_version = secrets
        .get("acme-account")
        .await
        .map(|s| s.metadata.resource_version);
    assert!(account_version.is_ok(), "account credentials stored");
    // Challenges are removed once the order ends. The certificate lives 30 s, so a renewal order
    // can already have published its own answer by now (seen under load): the map must empty
    // between orders, which it never does if answers are left behind.
    let challenges: Api<ConfigMap> = Api::namespaced(setup.client.clone(), &setup.namespace);
    eventually(
        "no challenge answer left between orders",
        Duration::from_secs(20),
        || {
            let challenges = challenges.clone();
            async move {
                match challenges
                    .get(router::DEFAULT_CHALLENGE_CONFIG_MAP)
                    .await
                    .map(|c| c.data.unwrap_or_default().len())
                {
                    Ok(0) => Ok(()),
                    other => Err(format!("challenge answers: {other:?}")),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Renewal (at most 2/3 of 30 s) swaps the certificate for new connections...
    let renewed = eventually(
        "a renewed certificate on new connections",
        Duration::from_secs(60),
        || {
            let tls = tls.clone();
            let first = first.clone();
            async move {
                let stream = connect(&tls, setup.https).await?;
                let cert = leaf(&stream);
                if cert != first {
                    Ok(cert)
                } else {
                    Err("still the first certificate".into())
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\npebble log:\n{}", setup.pebble.log_tail(30)));
    assert_ne!(renewed, first);
    // ...while the connection opened before keeps working with the certificate it started with.
    assert_eq!(healthz(&mut open).await, "HTTP/1.1 200 OK");
    assert_eq!(leaf(&open), first);
    // The stored account was reused for the renewal.
    assert_eq!(
        secrets
            .get("acme-account")
            .await
            .map(|s| s.metadata.resource_version)
            .ok(),
        account_version.ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_outage_keeps_the_old_certificate_and_reports_it() {
    let mut setup = setup("acme-down", Duration::from_secs(40)).await;
    let root = setup
        .pebble
        .issuing_root()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tls = connector(&root);
    let stream = eventually("the first certificate", Duration::from_secs(60), || {
        let tls = tls.clone();
        async move { connect(&tls, setup.https).await }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\npebble log:\n{}", setup.pebble.log_tail(30)));
    let first = leaf(&stream);
    setup.pebble.stop_pebble();

    let (client, namespace) = (setup.client.clone(), setup.namespace.clone());
    let condition = eventually(
        "CertificateReady=False after the renewal fails",
        Duration::from_secs(60),
        || {
            let (client, namespace) = (client.clone(), namespace.clone());
            async move {
                match status_condition(&client, &namespace).await {
                    Some(c) if c["status"] == "False" => Ok(c),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(condition["reason"], "IssuanceFailed");

    let events: Api<Event> = Api::namespaced(setup.client.clone(), &setup.namespace);
    eventually("an IssuanceFailed event", Duration::from_secs(20), || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .iter()
                .find(|e| {
                    e.reason.as_deref() == Some("IssuanceFailed")
                        && e.type_.as_deref() == Some("Warning")
                })
                .map(|_| ())
                .ok_or_else(|| format!("{} events, none IssuanceFailed", list.items.len()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The router still serves the certificate it had, and it still verifies.
    let again = connect(&tls, setup.https)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(leaf(&again), first);
}

/// The challenge ConfigMap's entries (none when it does not exist).
async fn challenges(
    client: &kube::Client,
    namespace: &str,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let config_map = api
        .get_opt(router::DEFAULT_CHALLENGE_CONFIG_MAP)
        .await
        .map_err(|e| e.to_string())?;
    Ok(config_map.and_then(|c| c.data).unwrap_or_default())
}

fn secret_value(secret: &Secret, key: &str) -> Vec<u8> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_order_issues_with_the_same_account_and_leaves_no_stale_challenges() {
    let setup = start_router("acme-restart", Duration::from_secs(3600)).await;
    let mut args = acme_args(&setup.pebble, &setup.namespace);
    // Long enough that the first run is stopped between publishing an answer and validating it.
    args.propagation_delay = 3.0;
    let (client, namespace) = (setup.client.clone(), setup.namespace.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);

    let first_run = setup.shutdown.child_token();
    let first = tokio::spawn(acme::run(client.clone(), args.clone(), first_run.clone()));
    let published = eventually(
        "a published HTTP-01 answer",
        Duration::from_secs(60),
        || {
            let (client, namespace) = (client.clone(), namespace.clone());
            async move {
                let data = challenges(&client, &namespace).await?;
                if data.is_empty() {
                    Err("no challenge yet".into())
                } else {
                    Ok(data)
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\npebble log:\n{}", setup.pebble.log_tail(30)));
    first_run.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), first).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "the first run stops cleanly: {stopped:?}"
    );
    // The abandoned order left its answer behind and issued nothing.
    assert_eq!(
        challenges(&client, &namespace).await.as_ref(),
        Ok(&published)
    );
    assert!(
        matches!(secrets.get_opt(TLS_SECRET).await, Ok(None)),
        "no certificate from the abandoned order"
    );
    let account = secrets
        .get("acme-account")
        .await
        .unwrap_or_else(|e| panic!("account stored before the order: {e}"));

    // The same configuration again: a fresh order completes.
    tokio::spawn(acme::run(
        client.clone(),
        args,
        setup.shutdown.child_token(),
    ));
    // The stale answer goes before the new order publishes its own (Pebble hands a new order
    // new tokens), not only when that order ends.
    eventually(
        "the new order's answer without the stale one",
        Duration::from_secs(60),
        || {
            let (client, namespace, published) =
                (client.clone(), namespace.clone(), published.clone());
            async move {
                let data = challenges(&client, &namespace).await?;
                let stale = data.keys().any(|token| published.contains_key(token));
                if !data.is_empty() && !stale {
                    Ok(())
                } else {
                    Err(format!("entries: {:?}", data.keys().collect::<Vec<_>>()))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\npebble log:\n{}", setup.pebble.log_tail(30)));
    let tls_secret = eventually("the TLS Secret", Duration::from_secs(60), || {
        let secrets = secrets.clone();
        async move {
            match secrets
                .get_opt(TLS_SECRET)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(secret) => Ok(secret),
                None => Err("no TLS Secret yet".into()),
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\npebble log:\n{}", setup.pebble.log_tail(30)));

    // The stored chain verifies against Pebble's root for the host...
    let root = setup
        .pebble
        .issuing_root()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut root.as_bytes()) {
        roots
            .add(cert.unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let chain: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut &secret_value(&tls_secret, "tls.crt")[..])
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("tls.crt: {e}"));
    assert!(
        chain.len() >= 2,
        "leaf and intermediate, got {}",
        chain.len()
    );
    let host = ServerName::try_from(HOST).unwrap_or_else(|e| panic!("{e}"));
    let verified = rustls::client::danger::ServerCertVerifier::verify_server_cert(
        verifier.as_ref(),
        &chain[0],
        &chain[1..],
        &host,
        &[],
        rustls::pki_types::UnixTime::now(),
    );
    assert!(verified.is_ok(), "{verified:?}");
    // ...and its key is the one the router serves it with.
    let tls = connector(&root);
    let served = eventually(
        "the router serving the issued certificate",
        Duration::from_secs(30),
        || {
            let tls = tls.clone();
            async move { connect(&tls, setup.https).await.map(|stream| leaf(&stream)) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(served, chain[0]);

    // The account from the first run was reused, not replaced.
    let reused = secrets
        .get("acme-account")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        secret_value(&reused, "credentials.json"),
        secret_value(&account, "credentials.json")
    );
    assert_eq!(
        reused.metadata.resource_version,
        account.metadata.resource_version
    );

    // Neither the abandoned order's answer nor the new order's stays behind.
    eventually("no challenge entries left", Duration::from_secs(30), || {
        let (client, namespace) = (client.clone(), namespace.clone());
        async move {
            let data = challenges(&client, &namespace).await?;
            if data.is_empty() {
                Ok(())
            } else {
                Err(format!("left: {:?}", data.keys().collect::<Vec<_>>()))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
