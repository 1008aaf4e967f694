//! Fixtures for p2pcamera's end-to-end tests: real third-party processes started on loopback and
//! stopped with the test binary.
//!
//! - [`ControlPlane`]: etcd, kube-apiserver, kube-scheduler, kube-controller-manager and kwok
//!   (fake GPU nodes whose pods become Running/Ready), built from pinned Go modules by
//!   `tests/bin/install-test-binaries.sh`.
//! - [`ManagedProcess`]: any long-running child (the operator binary, Pebble, ...) that must not
//!   outlive the tests.
//! - [`turn::TurnServer`]: coturn, the TURN relay, checking TURN REST credentials; and
//!   [`netns::NetworkNamespace`]: a network namespace with a firewall of the test's own (root).
//!
//! Each test binary starts one plane on first use ([`ControlPlane::shared`], about 10 s) and each
//! test takes its own namespace ([`ControlPlane::namespace`]). Environment: `P2PCAMERA_CACHE`
//! (where the built binaries live, default `~/.cache/p2pcamera`), `P2PCAMERA_KEEP_PLANE=1` (keep
//! the plane's directory with every component's log after the tests).

pub mod binaries;
mod control_plane;
mod kubeconfig;
pub mod kubelet;
pub mod netns;
mod nodes;
pub mod pebble;
pub mod pki;
mod ports;
mod process;
pub mod properties;
pub mod stats;
pub mod turn;
mod wait;

use std::path::PathBuf;
use std::time::Duration;

pub use control_plane::{ClientRateLimit, ControlPlane, PlaneTuning};
pub use nodes::GpuNode;
pub use ports::{FIRST_FIXTURE_PORT, free_port};
pub use process::{ManagedProcess, remove_at_exit};
pub use wait::eventually;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "test binaries missing: {} does not exist; build them with `{command}` (tens of minutes the first time)",
        dir.display()
    )]
    MissingBinaries { dir: PathBuf, command: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited during start-up ({status}); last log lines:\n{log}")]
    Exited {
        name: String,
        status: String,
        log: String,
    },
    #[error("timed out after {timeout:?} waiting for {what}; last state: {last}")]
    Timeout {
        what: String,
        timeout: Duration,
        last: String,
    },
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("`kubectl {args}` failed ({status}): {stderr}")]
    Kubectl {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("the shared control plane failed to start earlier in this test binary: {0}")]
    SharedStartFailed(String),
}
