//! p2pcamera operator: turns each `CameraSession` into one GPU camera pod, and hosts the router
//! (the HTTPS front door that forwards offers to camera pods) and the ACME client.
//!
//! Layout, from the resource to the process:
//! - The resources: [`crd`] (the `CameraSession` and `CameraClass` types, the CRDs) and
//!   [`config`] (the flags of `operator run`). Names shared with the router and camera-pod (labels, annotations, Secret
//!   keys, env vars, [`p2pcamera_api::SessionKey`]) come from the `p2pcamera-api` crate.
//! - The pure core, no client: [`class_fit`] picks a session's class and holds the session to
//!   it, [`desired`] builds the Pod and Secret of a session, [`status`]
//!   turns what was observed into conditions and a phase, [`controller::decide`] decides what a
//!   reconcile does ([`controller::decide::Plan`]), [`ports`] allocates ports.
//! - The controller: [`controller`] runs the reconciles while this replica leads, reading from
//!   the watch caches ([`caches`]) and executing the plans; [`status_memo`] and [`applied_pods`]
//!   bridge the lag between its own writes (status, pods) and its cache, [`node_addresses`]
//!   remembers nodes' public addresses, [`activity`] polls camera pods for a connected camera,
//!   [`first_looks`] lets a new leader reconcile the sessions that need work before it looks
//!   closely at the ones left Ready, [`metrics`] counts.
//! - Runtime plumbing, nothing session-specific: [`runtime`] (Lease election, watch and retry
//!   back-off, shutdown signal, admin server, logging).
//! - The other services of the binary: [`router`] and [`acme`].

pub mod acme;
pub mod activity;
pub mod applied_pods;
pub mod caches;
pub mod class_fit;
pub mod config;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod first_looks;
#[cfg(test)]
mod fixtures;
pub mod metrics;
pub mod node_addresses;
pub mod pod_api;
pub mod pool;
pub mod ports;
pub mod router;
pub mod runtime;
pub mod start_times;
pub mod status;
pub mod status_memo;
