//! Runtime plumbing of the operator binary, one module each (as in kubert): nothing here knows
//! about CameraSessions.
//!
//! - [`lease`]: leader election on a `coordination.k8s.io/v1` Lease (the controller's, and the
//!   ACME client's own).
//! - [`watch_backoff`]: how the controller's and the router's watches retry after an error.
//! - [`retry`]: per-key exponential back-off of failed reconciles.
//! - [`shutdown`]: the process-wide shutdown token, cancelled on SIGTERM or Ctrl-C.
//! - [`admin`]: the admin HTTP server (`/metrics`, `/healthz`, `/readyz`).
//! - [`telemetry`]: `tracing` set-up (`RUST_LOG`-style filter, plain or JSON lines).
//! - [`store_ready`]: waiting for a watch cache's first list from several tasks at once.
//!
//! Why these are our own code rather than the `kubert` crate's: docs/architecture.md, "Runtime
//! plumbing".

pub mod admin;
pub mod lease;
pub mod retry;
pub mod shutdown;
pub mod store_ready;
pub mod telemetry;
pub mod watch_backoff;
