//! p2pcamera operator: turns each `CameraSession` into one GPU camera pod.
//!
//! Layout: [`crd`] holds the custom resource types, [`config`] the command-line configuration,
//! [`ports`] the port allocator, [`desired`] the pure builders of the Pod and Secret.

pub mod activity;
pub mod admin;
pub mod caches;
pub mod config;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod leader;
pub mod metrics;
pub mod node_addresses;
pub mod ports;
pub mod retry;
pub mod status;
pub mod status_memo;
pub mod telemetry;
pub mod watch_backoff;
pub mod acme;
pub mod router;
