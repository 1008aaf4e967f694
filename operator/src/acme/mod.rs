//! The operator's ACME client: obtains and renews the router's certificate with HTTP-01
//! (answered by every router replica from a ConfigMap), and stores it in a `kubernetes.io/tls`
//! Secret the router reloads. Only the leader calls [`run`].
//!
//! Objects in `--acme-namespace`:
//! - Secret `--acme-account-secret`: the ACME account credentials (key `credentials.json`) and
//!   the directory they belong to (key `directory`); reused across restarts.
//! - ConfigMap `--acme-challenge-config-map`: pending HTTP-01 answers, token -> key
//!   authorization; all entries are removed when an order ends (issued, failed or timed out)
//!   and when [`run`] starts, so a restart mid-order leaves nothing stale.
//! - Secret `--acme-tls-secret` (`kubernetes.io/tls`): chain and key, replaced in one write
//!   only after a new certificate was issued, so the key in use is never lost.
//! - ConfigMap `--acme-status-config-map`: key `conditions` holds a `CertificateReady`
//!   condition (metav1.Condition JSON), keys `notAfter` and `renewAt` (RFC 3339). Events are
//!   recorded against this ConfigMap.

pub mod plan;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio_util::sync::CancellationToken;

use crate::router::{DEFAULT_CHALLENGE_CONFIG_MAP, DEFAULT_TLS_SECRET};

const FIELD_MANAGER: &str = "p2pcamera-acme";

#[derive(Debug, Clone, clap::Args)]
pub struct AcmeArgs {
    /// ACME directory URL (e.g. https://acme-v02.api.letsencrypt.org/directory). ACME is off when
    /// unset: the router then serves whatever the TLS Secret holds (e.g. from cert-manager).
    #[arg(
        id = "acme-directory",
        long = "acme-directory",
        env = "P2PCAMERA_ACME_DIRECTORY"
    )]
    pub directory: Option<String>,
    /// Host names the router's certificate must cover, comma separated.
    #[arg(
        id = "acme-host-names",
        long = "acme-host-names",
        env = "P2PCAMERA_ACME_HOST_NAMES",
        value_delimiter = ','
    )]
    pub host_names: Vec<String>,
    /// Contact addresses for the ACME account, e.g. `mailto:ops@example.com`, comma separated.
    #[arg(
        id = "acme-contact",
        long = "acme-contact",
        env = "P2PCAMERA_ACME_CONTACT",
        value_delimiter = ','
    )]
    pub contact: Vec<String>,
    /// Agree to the ACME server's terms of service (required to create an account).
    #[arg(
        id = "acme-agree-terms",
        long = "acme-agree-terms",
        env = "P2PCAMERA_ACME_AGREE_TERMS"
    )]
    pub agree_terms: bool,
    /// External Account Binding key id, for servers that require one.
    #[arg(
        id = "acme-eab-kid",
        long = "acme-eab-kid",
        env = "P2PCAMERA_ACME_EAB_KID",
        requires = "acme-eab-hmac-key"
    )]
    pub eab_kid: Option<String>,
    /// External Account Binding HMAC key, base64url as the CA hands it out.
    #[arg(
        id = "acme-eab-hmac-key",
        long = "acme-eab-hmac-key",
        env = "P2PCAMERA_ACME_EAB_HMAC_KEY",
        requires = "acme-eab-kid"
    )]
    pub eab_hmac_key: Option<String>,
    /// PEM bundle of extra CA certificates to trust for the ACME server (private CAs, Pebble).
    #[arg(
        id = "acme-ca-bundle",
        long = "acme-ca-bundle",
        env = "P2PCAMERA_ACME_CA_BUNDLE"
    )]
    pub ca_bundle: Option<PathBuf>,
    /// Namespace of the account Secret, TLS Secret and ConfigMaps.
    #[arg(
        id = "acme-namespace",
        long = "acme-namespace",
        env = "P2PCAMERA_ACME_NAMESPACE",
        default_value = "p2pcamera-system"
    )]
    pub namespace: String,
    /// `kubernetes.io/tls` Secret the certificate is written to (the router's `--tls-secret`).
    #[arg(id = "acme-tls-secret", long = "acme-tls-secret", env = "P2PCAMERA_ACME_TLS_SECRET", default_value = DEFAULT_TLS_SECRET)]
    pub tls_secret: String,
    /// Secret holding the ACME account credentials.
    #[arg(
        id = "acme-account-secret",
        long = "acme-account-secret",
        env = "P2PCAMERA_ACME_ACCOUNT_SECRET",
        default_value = "p2pcamera-acme-account"
    )]
    pub account_secret: String,
    /// ConfigMap HTTP-01 answers are published in (the router's `--challenge-config-map`).
    #[arg(id = "acme-challenge-config-map", long = "acme-challenge-config-map", env = "P2PCAMERA_ACME_CHALLENGE_CONFIG_MAP", default_value = DEFAULT_CHALLENGE_CONFIG_MAP)]
    pub challenge_config_map: String,
    /// ConfigMap the certificate's status condition is written to.
    #[arg(
        id = "acme-status-config-map",
        long = "acme-status-config-map",
        env = "P2PCAMERA_ACME_STATUS_CONFIG_MAP",
        default_value = "p2pcamera-acme-status"
    )]
    pub status_config_map: String,
    /// Seconds between publishing a challenge and asking the server to validate it (time for
    /// every router replica's watch to see it).
    #[arg(
        id = "acme-propagation-delay",
        long = "acme-propagation-delay",
        env = "P2PCAMERA_ACME_PROPAGATION_DELAY",
        default_value_t = 2.0
    )]
    pub propagation_delay: f64,
    /// First retry delay in seconds after a failed order; doubles up to `--acme-retry-max`.
    #[arg(
        id = "acme-retry-min",
        long = "acme-retry-min",
        env = "P2PCAMERA_ACME_RETRY_MIN",
        default_value_t = 10.0
    )]
    pub retry_min: f64,
    /// Longest retry delay in seconds.
    #[arg(
        id = "acme-retry-max",
        long = "acme-retry-max",
        env = "P2PCAMERA_ACME_RETRY_MAX",
        default_value_t = 3600.0
    )]
    pub retry_max: f64,
    /// Seconds an order may take from creation to certificate.
    #[arg(
        id = "acme-order-timeout",
        long = "acme-order-timeout",
        env = "P2PCAMERA_ACME_ORDER_TIMEOUT",
        default_value_t = 120.0
    )]
    pub order_timeout: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("reading the CA bundle: {0}")]
    CaBundle(#[source] std::io::Error),
    #[error("account credentials: {0}")]
    Credentials(#[from] serde_json::Error),
    #[error("order {0}")]
    Order(String),
    #[error("key generation: {0}")]
    Key(#[from] rcgen::Error),
}

fn seconds(value: f64, what: &str) -> Result<Duration, AcmeError> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| AcmeError::Config(format!("{what} must be a non-negative number of seconds")))
}

/// The HTTPS client for the ACME server: platform roots plus the extra CA bundle.
fn http_client(ca_bundle: Option<&PathBuf>) -> Result<Box<dyn HttpClient>, AcmeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra = match ca_bundle {
        Some(path) => {
            let pem = std::fs::read(path).map_err(AcmeError::CaBundle)?;
            rustls_pemfile::certs(&mut &pem[..])
                .collect::<Result<Vec<_>, _>>()
                .map_err(AcmeError::CaBundle)?
        }
        None => Vec::new(),
    };
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Ok(Box::new(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    ))
}

struct Issuer {
    args: AcmeArgs,
    directory: String,
    client: Client,
    recorder: Recorder,
    account: tokio::sync::Mutex<Option<Account>>,
    propagation_delay: Duration,
    order_timeout: Duration,
}

fn secret_bytes(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(key).map(|value| value.0.clone())
}

fn rfc3339(time: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(time)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl Issuer {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.args.namespace)
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.args.namespace)
    }

    fn http(&self) -> Result<Box<dyn HttpClient>, AcmeError> {
        http_client(self.args.ca_bundle.as_ref())
    }

    /// The stored account for this directory, or a new one (then stored).
    async fn account(&self) -> Result<Account, AcmeError> {
        let mut cached = self.account.lock().await;
        if let Some(account) = cached.as_ref() {
            return Ok(account.clone());
        }
        let stored = self.secrets().get_opt(&self.args.account_secret).await?;
        let stored = stored.and_then(|secret| {
            let directory = secret_bytes(&secret, "directory")?;
            let credentials = secret_bytes(&secret, "credentials.json")?;
            (directory == self.directory.as_bytes()).then_some(credentials)
        });
        let account = match stored {
            Some(credentials) => {
                let credentials: AccountCredentials = serde_json::from_slice(&credentials)?;
                tracing::info!(directory = %self.directory, "reusing the stored ACME account");
                Account::builder_with_http(self.http()?)
                    .from_credentials(credentials)
                    .await?
            }
            None => {
                let contact: Vec<&str> = self.args.contact.iter().map(String::as_str).collect();
                let eab = match (&self.args.eab_kid, &self.args.eab_hmac_key) {
                    (Some(kid), Some(key)) => {
                        use base64::Engine;
                        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(key.trim_end_matches('='))
                            .map_err(|_| {
                                AcmeError::Config("EAB HMAC key is not base64url".into())
                            })?;
                        Some(ExternalAccountKey::new(kid.clone(), &key))
                    }
                    _ => None,
                };
                let new_account = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: self.args.agree_terms,
                    only_return_existing: false,
                };
                let (account, credentials) = Account::builder_with_http(self.http()?)
                    .create(&new_account, self.directory.clone(), eab.as_ref())
                    .await?;
                let data = BTreeMap::from([
                    (
                        "credentials.json".to_owned(),
                        ByteString(serde_json::to_vec(&credentials)?),
                    ),
                    (
                        "directory".to_owned(),
                        ByteString(self.directory.clone().into_bytes()),
                    ),
                ]);
                self.apply_secret(&self.args.account_secret, "Opaque", data)
                    .await?;
                tracing::info!(directory = %self.directory, id = account.id(), "created an ACME account");
                account
            }
        };
        *cached = Some(account.clone());
        Ok(account)
    }

    async fn apply_secret(
        &self,
        name: &str,
        type_: &str,
        data: BTreeMap<String, ByteString>,
    ) -> Result<(), AcmeError> {
        let secret = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {(p2pcamera_api::objects::LABEL_MANAGED_BY): p2pcamera_api::objects::MANAGED_BY, "app.kubernetes.io/name": "p2pcamera"}},
            "type": type_,
            "data": data,
        });
        self.secrets()
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(secret),
            )
            .await?;
        Ok(())
    }

    async fn set_challenge(&self, token: &str, key_authorization: &str) -> Result<(), AcmeError> {
        let api = self.config_maps();
        let name = &self.args.challenge_config_map;
        if api.get_opt(name).await?.is_none() {
            let empty = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
            api.patch(
                name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(empty),
            )
            .await?;
        }
        let patch = serde_json::json!({"data": {token: key_authorization}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// Removes every published HTTP-01 answer. Only the leader runs orders, one at a time, so
    /// between orders (and at start, e.g. after a restart mid-order) none of them is needed.
    async fn clear_challenges(&self) -> Result<(), AcmeError> {
        let api = self.config_maps();
        let name = &self.args.challenge_config_map;
        let Some(config_map) = api.get_opt(name).await? else {
            return Ok(());
        };
        let Some(patch) = plan::clear_challenges_patch(config_map.data.as_ref()) else {
            return Ok(());
        };
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        tracing::info!(config_map = %name, count = config_map.data.map_or(0, |d| d.len()), "removed stale ACME challenges");
        Ok(())
    }

    /// The stored chain, if the TLS Secret exists.
    async fn current_chain(&self) -> Result<Option<Vec<u8>>, AcmeError> {
        Ok(self
            .secrets()
            .get_opt(&self.args.tls_secret)
            .await?
            .and_then(|s| secret_bytes(&s, "tls.crt")))
    }

    /// The server's suggested renewal window for the stored certificate, when it offers one.
    async fn ari_window(&self, chain_pem: &[u8]) -> Option<(SystemTime, SystemTime)> {
        let leaf = rustls_pemfile::certs(&mut &chain_pem[..]).next()?.ok()?;
        let id = instant_acme::CertificateIdentifier::try_from(&leaf).ok()?;
        let account = self.account().await.ok()?;
        match account.renewal_info(&id).await {
            Ok((info, _)) => Some((
                info.suggested_window.start.into(),
                info.suggested_window.end.into(),
            )),
            Err(error) => {
                tracing::debug!(%error, "no renewal info");
                None
            }
        }
    }

    /// One pass: renew when due. Returns how long to wait before the next pass.
    async fn step(&self) -> Result<Duration, AcmeError> {
        let chain = self.current_chain().await?;
        let info = chain.as_deref().and_then(plan::certificate_info);
        if let (Some(chain), Some(info)) = (&chain, &info)
            && plan::covers(info, &self.args.host_names)
        {
            let window = self.ari_window(chain).await;
            let renew_at = plan::renew_at(info, window, rand::random::<f64>());
            let now = SystemTime::now();
            if let Ok(wait) = renew_at.duration_since(now) {
                self.report(
                    true,
                    "Valid",
                    &format!("certificate valid until {}", rfc3339(info.not_after)),
                    Some((info, renew_at)),
                )
                .await?;
                // Re-evaluate at least hourly: the renewal window may move.
                return Ok(wait.min(Duration::from_secs(3600)));
            }
            tracing::info!(not_after = %rfc3339(info.not_after), "certificate due for renewal");
        }
        let account = self.account().await?;
        let outcome = tokio::time::timeout(self.order_timeout, self.issue(&account)).await;
        // The order ended (issued, failed or timed out): none of its answers are needed any more.
        if let Err(error) = self.clear_challenges().await {
            tracing::warn!(%error, "removing published challenges");
        }
        let new_info = outcome.map_err(|_| AcmeError::Order("timed out".into()))??;
        let renew_at = plan::renew_at(&new_info, None, 0.0);
        let message = format!(
            "certificate issued, valid until {}",
            rfc3339(new_info.not_after)
        );
        self.event(EventType::Normal, "Issued", &message).await;
        self.report(true, "Issued", &message, Some((&new_info, renew_at)))
            .await?;
        Ok(Duration::ZERO)
    }

    /// Runs one order to the end and stores chain and key in the TLS Secret.
    async fn issue(&self, account: &Account) -> Result<plan::CertificateInfo, AcmeError> {
        let identifiers: Vec<Identifier> = self
            .args
            .host_names
            .iter()
            .map(|h| Identifier::Dns(h.clone()))
            .collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        tracing::info!(url = order.url(), "ACME order created");
        let (chain, key) = self.complete(&mut order).await?;
        let info = plan::certificate_info(chain.as_bytes())
            .ok_or_else(|| AcmeError::Order("unreadable certificate".into()))?;
        let data = BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(chain.into_bytes())),
            ("tls.key".to_owned(), ByteString(key.into_bytes())),
        ]);
        self.apply_secret(&self.args.tls_secret, "kubernetes.io/tls", data)
            .await?;
        tracing::info!(secret = %self.args.tls_secret, not_after = %rfc3339(info.not_after), "certificate stored");
        Ok(info)
    }

    async fn complete(
        &self,
        order: &mut instant_acme::Order,
    ) -> Result<(String, String), AcmeError> {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(AcmeError::Order(format!("authorization is {other:?}"))),
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| AcmeError::Order("server offers no http-01 challenge".into()))?;
            let token = challenge.token.clone();
            let key_authorization = challenge.key_authorization();
            self.set_challenge(&token, key_authorization.as_str())
                .await?;
            tokio::time::sleep(self.propagation_delay).await;
            challenge.set_ready().await?;
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(self.order_timeout);
        let status = order.poll_ready(&retries).await?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Order(format!("ended {status:?}")));
        }
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(self.args.host_names.clone())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key)?;
        order.finalize_csr(csr.der()).await?;
        let chain = order.poll_certificate(&retries).await?;
        Ok((chain, key.serialize_pem()))
    }

    async fn status_reference(
        &self,
    ) -> Result<k8s_openapi::api::core::v1::ObjectReference, AcmeError> {
        let api = self.config_maps();
        let name = &self.args.status_config_map;
        let config_map = match api.get_opt(name).await? {
            Some(config_map) => config_map,
            None => {
                let empty = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
                api.patch(
                    name,
                    &PatchParams::apply(FIELD_MANAGER),
                    &Patch::Apply(empty),
                )
                .await?
            }
        };
        Ok(config_map.object_ref(&()))
    }

    async fn event(&self, type_: EventType, reason: &str, note: &str) {
        let result = async {
            let reference = self.status_reference().await?;
            let event = Event {
                type_,
                reason: reason.into(),
                note: Some(note.chars().take(1000).collect()),
                action: "Certificate".into(),
                secondary: None,
            };
            self.recorder
                .publish(&event, &reference)
                .await
                .map_err(AcmeError::from)
        };
        if let Err(error) = result.await {
            tracing::warn!(%error, "recording an event");
        }
    }

    /// Writes the `CertificateReady` condition (and expiry, renewal time) to the status ConfigMap.
    async fn report(
        &self,
        ready: bool,
        reason: &str,
        message: &str,
        certificate: Option<(&plan::CertificateInfo, SystemTime)>,
    ) -> Result<(), AcmeError> {
        let api = self.config_maps();
        let name = &self.args.status_config_map;
        let existing = api.get_opt(name).await?;
        let previous: Option<Condition> = existing
            .as_ref()
            .and_then(|c| c.data.as_ref()?.get("conditions").cloned())
            .and_then(|json| serde_json::from_str::<Vec<Condition>>(&json).ok())
            .and_then(|conditions| {
                conditions
                    .into_iter()
                    .find(|c| c.type_ == plan::CONDITION_TYPE)
            });
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let condition = plan::next_condition(previous.as_ref(), ready, reason, message, now);
        if previous.as_ref() == Some(&condition) && certificate.is_none() {
            return Ok(());
        }
        let mut data = serde_json::json!({ "conditions": serde_json::to_string(&[condition])? });
        if let Some((info, renew_at)) = certificate {
            data["notAfter"] = rfc3339(info.not_after).into();
            data["renewAt"] = rfc3339(renew_at).into();
        }
        let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data});
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
        Ok(())
    }
}

/// Runs [`run`] only while `leading` says this replica leads; a lost term drops the loop
/// (an order in flight is abandoned and the next leader starts a fresh one).
pub async fn run_while_leading(
    client: Client,
    args: AcmeArgs,
    mut leading: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) -> Result<(), AcmeError> {
    if validate(&args)?.is_none() {
        tracing::info!("ACME off: serving the TLS secret as provided");
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            became = leading.wait_for(|leads| *leads) => if became.is_err() { return Ok(()) },
        }
        tracing::info!("leading: managing the router certificate");
        let mut lost = leading.clone();
        tokio::select! {
            result = run(client.clone(), args.clone(), shutdown.clone()) => return result,
            _ = lost.wait_for(|leads| !*leads) => tracing::info!("lost leadership: certificate management paused"),
        }
    }
}

/// Validated settings; `Ok(None)` when ACME is off.
fn validate(args: &AcmeArgs) -> Result<Option<String>, AcmeError> {
    let Some(directory) = args.directory.clone() else {
        return Ok(None);
    };
    if args.host_names.is_empty() {
        return Err(AcmeError::Config(
            "--acme-host-names is required with --acme-directory".into(),
        ));
    }
    if !args.agree_terms {
        return Err(AcmeError::Config(
            "--acme-agree-terms is required to create an ACME account".into(),
        ));
    }
    seconds(args.propagation_delay, "--acme-propagation-delay")?;
    seconds(args.order_timeout, "--acme-order-timeout")?;
    if seconds(args.retry_min, "--acme-retry-min")? > seconds(args.retry_max, "--acme-retry-max")? {
        return Err(AcmeError::Config(
            "--acme-retry-min is larger than --acme-retry-max".into(),
        ));
    }
    Ok(Some(directory))
}

/// Keeps the router's certificate issued and renewed until `shutdown` fires. Call it only
/// while holding leadership. Returns at once when no directory is configured.
pub async fn run(
    client: Client,
    args: AcmeArgs,
    shutdown: CancellationToken,
) -> Result<(), AcmeError> {
    let Some(directory) = validate(&args)? else {
        tracing::info!("ACME off: serving the TLS secret as provided");
        return Ok(());
    };
    let (retry_min, retry_max) = (seconds(args.retry_min, "")?, seconds(args.retry_max, "")?);
    let issuer = Issuer {
        propagation_delay: seconds(args.propagation_delay, "")?,
        order_timeout: seconds(args.order_timeout, "")?,
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "p2pcamera-acme".into(),
                instance: None,
            },
        ),
        args,
        directory,
        client,
        account: tokio::sync::Mutex::new(None),
    };
    // No order is in flight yet: answers left behind by an earlier run (a restart or a
    // leadership change mid-order) are stale. A failure here only leaves them for the next order.
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        result = issuer.clear_challenges() => if let Err(error) = result {
            tracing::warn!(%error, "removing stale challenges");
        }
    }
    let mut failures = 0u32;
    loop {
        let wait = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            result = issuer.step() => match result {
                Ok(wait) => {
                    failures = 0;
                    wait
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = plan::backoff(failures, retry_min, retry_max);
                    tracing::warn!(%error, failures, retry_in_s = delay.as_secs_f64(), "certificate issuance failed, keeping the current certificate");
                    let message = format!("{error}; retrying in {}s", delay.as_secs());
                    issuer.event(EventType::Warning, "IssuanceFailed", &message).await;
                    if let Err(error) = issuer.report(false, "IssuanceFailed", &message, None).await {
                        tracing::warn!(%error, "writing the certificate status");
                    }
                    delay
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        acme: AcmeArgs,
    }

    fn parse(args: &[&str]) -> Result<AcmeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("operator").chain(args.iter().copied()))
            .map(|cli| cli.acme)
    }

    #[test]
    fn acme_is_off_without_a_directory_and_checked_with_one() {
        let Ok(off) = parse(&[]) else {
            panic!("defaults parse")
        };
        assert!(matches!(validate(&off), Ok(None)));
        let Ok(no_terms) = parse(&[
            "--acme-directory",
            "https://acme.example/dir",
            "--acme-host-names",
            "a.example",
        ]) else {
            panic!("parse")
        };
        assert!(matches!(validate(&no_terms), Err(AcmeError::Config(_))));
        let Ok(no_hosts) = parse(&[
            "--acme-directory",
            "https://acme.example/dir",
            "--acme-agree-terms",
        ]) else {
            panic!("parse")
        };
        assert!(matches!(validate(&no_hosts), Err(AcmeError::Config(_))));
        let Ok(good) = parse(&[
            "--acme-directory",
            "https://acme.example/dir",
            "--acme-agree-terms",
            "--acme-host-names",
            "a.example,b.example",
        ]) else {
            panic!("parse")
        };
        assert_eq!(good.host_names, vec!["a.example", "b.example"]);
        assert!(matches!(validate(&good), Ok(Some(_))));
        // EAB needs both halves.
        assert!(parse(&["--acme-eab-kid", "kid"]).is_err());
    }
}
