//! Pebble (Let's Encrypt's test ACME server) and pebble-challtestsrv (its DNS), on loopback.
//!
//! Every name resolves to 127.0.0.1 through challtestsrv, so HTTP-01 validation of any host
//! name reaches whatever listens on 127.0.0.1:`http_port` (the router's challenge port in the
//! tests). Pebble's own HTTPS certificate is signed by a fresh test CA written to
//! [`Pebble::ca_bundle_path`]; the CA that signs issued certificates is [`Pebble::issuing_root`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::pki::CertificateAuthority;
use crate::ports::{free_port, retry_start};
use crate::process::{ManagedProcess, remove_at_exit};
use crate::wait::{eventually, eventually_while_running};
use crate::{Error, binaries};

pub const PEBBLE_VERSION: &str = "v2.10.1";

/// What the tests choose about the ACME server.
#[derive(Debug, Clone)]
pub struct PebbleOptions {
    /// Port on 127.0.0.1 where HTTP-01 validation connects.
    pub http_port: u16,
    /// Lifetime of issued certificates.
    pub validity: Duration,
}

/// A running Pebble and challtestsrv; dropping it stops both.
pub struct Pebble {
    dir: PathBuf,
    listen: SocketAddr,
    management: SocketAddr,
    pebble: Option<ManagedProcess>,
    /// Dropping the fixture stops it.
    challtestsrv: ManagedProcess,
    command: PathBuf,
    dns: SocketAddr,
}

fn package_binary(name: &str) -> Result<PathBuf, Error> {
    let dir = binaries::cache_dir()
        .join("bin")
        .join(format!("{name}-{PEBBLE_VERSION}"));
    let path = dir.join(name);
    if dir.join(".complete").is_file() && path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinaries {
            dir,
            command: format!("{} pebble", binaries::INSTALL_COMMAND),
        })
    }
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

/// An HTTPS client trusting the test CA (Pebble's own endpoints).
fn client(ca_pem: &[u8]) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(ca_pem).map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        // Pebble, like any RFC 8555 server, rejects requests without one.
        .user_agent("p2pcamera-tests")
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())
}

impl Pebble {
    /// Starts challtestsrv and Pebble on free ports; a start in which either exits (a port taken,
    /// most likely) is repeated on other ports.
    pub async fn start(options: PebbleOptions) -> Result<Self, Error> {
        retry_start("pebble", || Self::start_on_free_ports(&options)).await
    }

    async fn start_on_free_ports(options: &PebbleOptions) -> Result<Self, Error> {
        let pebble_bin = package_binary("pebble")?;
        let challtestsrv_bin = package_binary("pebble-challtestsrv")?;
        let dir = tempfile::Builder::new()
            .prefix("p2pcamera-pebble-")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "creating the Pebble directory".into(),
                source,
            })?
            .keep();
        remove_at_exit(&dir);

        let ca = CertificateAuthority::new("p2pcamera test ACME server CA")?;
        let serving = ca.server("pebble", &["localhost", "127.0.0.1"])?;
        write(&dir.join("ca.pem"), ca.cert_pem())?;
        write(&dir.join("cert.pem"), &serving.cert_pem)?;
        write(&dir.join("key.pem"), &serving.key_pem)?;

        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (listen, management) = (loopback(free_port()?), loopback(free_port()?));
        let (dns, dns_management) = (loopback(free_port()?), loopback(free_port()?));
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": dir.join("cert.pem"),
                "privateKey": dir.join("key.pem"),
                "httpPort": options.http_port,
                "tlsPort": free_port()?,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "retryAfter": {"authz": 1, "order": 1},
                "keyAlgorithm": "ecdsa",
                "profiles": {"default": {"description": "test", "validityPeriod": options.validity.as_secs().max(1)}}
            }
        });
        write(
            &dir.join("pebble-config.json"),
            &serde_json::to_string_pretty(&config)?,
        )?;

        let mut challtestsrv = Command::new(&challtestsrv_bin);
        challtestsrv
            .args(["-http01", "", "-https01", "", "-doh", "", "-tlsalpn01", ""])
            .args([
                "-dnsserver",
                &dns.to_string(),
                "-management",
                &dns_management.to_string(),
            ])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
        let challtestsrv = ManagedProcess::spawn(
            "pebble-challtestsrv",
            challtestsrv,
            &dir.join("challtestsrv.log"),
        )?;
        let mut pebble = Self {
            dir,
            listen,
            management,
            pebble: None,
            challtestsrv,
            command: pebble_bin,
            dns,
        };
        pebble.start_pebble().await?;
        Ok(pebble)
    }

    /// (Re)starts the Pebble process with the same configuration and waits for its directory.
    /// A restarted Pebble has a new issuing root and forgets accounts.
    pub async fn start_pebble(&mut self) -> Result<(), Error> {
        let mut command = Command::new(&self.command);
        command
            .args([
                "-config",
                &self.dir.join("pebble-config.json").to_string_lossy(),
            ])
            .args(["-dnsserver", &self.dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0");
        let log = self.dir.join("pebble.log");
        let ca = self.ca_pem()?;
        let url = self.directory_url();
        let pebble = self
            .pebble
            .insert(ManagedProcess::spawn("pebble", command, &log)?);
        // A Pebble or challtestsrv that exited (e.g. its port was taken) fails the wait at once.
        eventually_while_running(
            "Pebble's directory",
            Duration::from_secs(30),
            &[pebble, &self.challtestsrv],
            || {
                let (ca, url) = (ca.clone(), url.clone());
                async move {
                    let response = client(&ca)?
                        .get(&url)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    if response.status().is_success() {
                        Ok(())
                    } else {
                        Err(format!("status {}", response.status()))
                    }
                }
            },
        )
        .await
    }

    /// Stops Pebble (challtestsrv keeps running): the ACME server is down.
    pub fn stop_pebble(&mut self) {
        // Dropping the process handle stops it.
        self.pebble = None;
    }

    pub fn directory_url(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// PEM of the CA that signed Pebble's own HTTPS certificate (the ACME client's extra CA).
    pub fn ca_bundle_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn ca_pem(&self) -> Result<Vec<u8>, Error> {
        std::fs::read(self.ca_bundle_path()).map_err(|source| Error::Io {
            what: "reading the Pebble CA".into(),
            source,
        })
    }

    /// PEM of the root that issued certificates chain to (from the management endpoint).
    pub async fn issuing_root(&self) -> Result<String, Error> {
        let ca = self.ca_pem()?;
        let url = format!("https://{}/roots/0", self.management);
        eventually("Pebble's issuing root", Duration::from_secs(10), || {
            let (ca, url) = (ca.clone(), url.clone());
            async move {
                let response = client(&ca)?
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("status {}", response.status()));
                }
                response.text().await.map_err(|e| e.to_string())
            }
        })
        .await
    }

    /// The last lines of Pebble's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.pebble
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }
}
