//! coturn (Debian's `turnserver`), the TURN relay p2pcamera deploys, on 127.0.0.1 of the test's
//! network or of a [`NetworkNamespace`].
//!
//! It checks credentials as in production: `use-auth-secret` with a `static-auth-secret`, so it
//! accepts exactly the TURN REST credentials (`<expiry>:<user>`, base64 HMAC-SHA1) minted from
//! the same secret. It listens for TURN over UDP and TCP on one port and over TLS (`turns:`) on
//! another, with a certificate for `127.0.0.1`/`localhost` from a fresh test CA
//! ([`TurnServer::ca_bundle_path`]), and relays from a small port range. Loopback peers are
//! allowed (production coturn refuses them), since the camera pods here are on loopback.

use std::net::{SocketAddr, TcpStream};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::netns::NetworkNamespace;
use crate::pki::CertificateAuthority;
use crate::ports::{free_port, retry_start};
use crate::process::{ManagedProcess, remove_at_exit};
use crate::wait::eventually_while_running;

/// The Debian package's binary.
pub const TURNSERVER: &str = "turnserver";
/// Relay ports one server gets: a few cameras' worth.
const RELAY_PORTS: u16 = 20;

/// Where a TURN server listens and relays from, all on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnPorts {
    /// TURN over UDP and over TCP.
    pub listening: u16,
    /// TURN over TLS.
    pub tls: u16,
    /// Ports of the relayed addresses (the UDP sockets that talk to the peers).
    pub relay: RangeInclusive<u16>,
}

impl TurnPorts {
    /// The standard ports (3478, 5349) and `relay`, for a namespace where nothing else listens.
    pub fn standard(relay: RangeInclusive<u16>) -> Self {
        Self {
            listening: 3478,
            tls: 5349,
            relay,
        }
    }
}

/// A running coturn; dropping it stops it.
pub struct TurnServer {
    process: ManagedProcess,
    dir: PathBuf,
    ports: TurnPorts,
}

impl TurnServer {
    /// Starts coturn on free loopback ports of the test's own network; a start in which it
    /// exits (a port taken) is repeated on other ports.
    pub async fn start(secret: &str) -> Result<Self, Error> {
        retry_start("coturn", || async {
            let relay_start = free_port()?;
            let ports = TurnPorts {
                listening: free_port()?,
                tls: free_port()?,
                relay: relay_start..=relay_start.saturating_add(RELAY_PORTS - 1),
            };
            Self::launch(None, secret, ports).await
        })
        .await
    }

    /// Starts coturn inside `namespace` on `ports`.
    pub async fn start_in(
        namespace: &NetworkNamespace,
        secret: &str,
        ports: TurnPorts,
    ) -> Result<Self, Error> {
        Self::launch(Some(namespace), secret, ports).await
    }

    async fn launch(
        namespace: Option<&NetworkNamespace>,
        secret: &str,
        ports: TurnPorts,
    ) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("p2pcamera-coturn-")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "creating the coturn directory".into(),
                source,
            })?
            .keep();
        remove_at_exit(&dir);
        let ca = CertificateAuthority::new("p2pcamera test TURN CA")?;
        let serving = ca.server("turn", &["localhost", "127.0.0.1"])?;
        write(&dir.join("ca.pem"), ca.cert_pem())?;
        write(&dir.join("cert.pem"), &serving.cert_pem)?;
        write(&dir.join("key.pem"), &serving.key_pem)?;
        let config = format!(
            "listening-ip=127.0.0.1\n\
             relay-ip=127.0.0.1\n\
             listening-port={listening}\n\
             tls-listening-port={tls}\n\
             min-port={first}\n\
             max-port={last}\n\
             no-rfc5780\n\
             use-auth-secret\n\
             static-auth-secret={secret}\n\
             realm=p2pcamera.test\n\
             cert={dir}/cert.pem\n\
             pkey={dir}/key.pem\n\
             no-dtls\n\
             no-cli\n\
             allow-loopback-peers\n\
             fingerprint\n\
             no-software-attribute\n\
             log-file=stdout\n\
             simple-log\n\
             userdb={dir}/turndb\n\
             pidfile={dir}/turnserver.pid\n",
            listening = ports.listening,
            tls = ports.tls,
            first = ports.relay.start(),
            last = ports.relay.end(),
            dir = dir.display(),
        );
        let config_path = dir.join("turnserver.conf");
        write(&config_path, &config)?;
        let mut command = match namespace {
            Some(namespace) => namespace.command(TURNSERVER),
            None => Command::new(TURNSERVER),
        };
        command.arg("-c").arg(&config_path);
        let process = ManagedProcess::spawn("coturn", command, &dir.join("coturn.log"))?;
        let server = Self {
            process,
            dir,
            ports,
        };
        let listeners = [server.ports.listening, server.ports.tls]
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
        // Blocking, but a loopback connect is answered at once.
        let probe = || {
            let reachable = move || {
                listeners.iter().all(|address| {
                    TcpStream::connect_timeout(address, Duration::from_secs(1)).is_ok()
                })
            };
            match namespace {
                Some(namespace) => namespace.on_thread(reachable),
                None => Ok(reachable()),
            }
        };
        eventually_while_running(
            "coturn's TCP and TLS listeners",
            Duration::from_secs(20),
            &[&server.process],
            || {
                let ready = probe();
                async move {
                    match ready {
                        Ok(true) => Ok(()),
                        Ok(false) => Err("not listening yet".to_owned()),
                        Err(error) => Err(error.to_string()),
                    }
                }
            },
        )
        .await?;
        Ok(server)
    }

    pub fn ports(&self) -> &TurnPorts {
        &self.ports
    }

    /// `turn:` over UDP.
    pub fn udp_url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.ports.listening)
    }

    /// `turn:` over TCP.
    pub fn tcp_url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=tcp", self.ports.listening)
    }

    /// `turns:` (TURN over TLS, which is over TCP).
    pub fn tls_url(&self) -> String {
        format!("turns:127.0.0.1:{}?transport=tcp", self.ports.tls)
    }

    /// PEM of the CA that signed the TLS certificate (a `turns:` client's trust anchor).
    pub fn ca_bundle_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The last lines of coturn's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}
