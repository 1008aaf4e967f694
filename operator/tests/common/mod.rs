//! Shared by the operator's integration tests: the control plane with the CRD applied, one
//! namespace and one set of fake GPU nodes per test, and the operator running in-process,
//! confined to that namespace and those nodes.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use p2pcamera_api::objects::child_name;
use p2pcamera_operator::config::Config;
use p2pcamera_operator::controller;
use p2pcamera_operator::crd::{CRD_DIR, CameraClass, CameraSession};
use p2pcamera_operator::runtime::admin::AdminState;
use p2pcamera_tests::{ControlPlane, GpuNode, eventually};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Long enough for a loaded two-core machine; the usual wait is a second or two.
pub const WAIT: Duration = Duration::from_secs(60);
/// Node label that confines a test's pods to its own nodes.
pub const TEST_LABEL: &str = "p2pcamera.io/test";

/// One test's slice of the shared plane.
pub struct TestEnv {
    pub plane: &'static ControlPlane,
    pub ns: String,
    pub client: kube::Client,
    pub sessions: Api<CameraSession>,
    pub pods: Api<Pod>,
}

#[derive(Parser)]
struct OperatorArgs {
    #[command(flatten)]
    config: Config,
}

impl TestEnv {
    pub async fn new(name: &str) -> Self {
        init_tracing();
        let plane = ControlPlane::shared().await.expect("control plane");
        let crd = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(CRD_DIR);
        plane.apply_crds(&crd).await.expect("CRD applies");
        let ns = plane.namespace(name).await.expect("namespace");
        let client = plane.client().expect("client");
        Self {
            sessions: Api::namespaced(client.clone(), &ns),
            pods: Api::namespaced(client.clone(), &ns),
            plane,
            ns,
            client,
        }
    }

    /// Adds a GPU node only this test's pods go to (named `<namespace>-<suffix>`). Its
    /// InternalIP is 127.0.0.1; without an ExternalIP that is also its public address.
    pub async fn add_node(&self, suffix: &str, gpus: u32, external_ip: Option<&str>) -> String {
        let name = format!("{}-{suffix}", self.ns);
        let mut node = GpuNode::new(&name, gpus).label(TEST_LABEL, &self.ns);
        if let Some(ip) = external_ip {
            node = node.external_ip(ip.parse::<IpAddr>().expect("IP literal"));
        }
        self.plane
            .add_node(&node)
            .await
            .expect("node becomes Ready");
        name
    }

    /// `operator run` flags for this test: its namespace, its nodes, its Lease.
    pub fn operator_args(&self, identity: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--namespace",
            &self.ns,
            "--lease-namespace",
            &self.ns,
            "--identity",
            identity,
            "--gpu-node-selector",
            &json!({TEST_LABEL: self.ns}).to_string(),
            "--camera-pod-image",
            "registry.invalid/camera-pod:test",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// The operator's configuration for this test, parsed from [`Self::operator_args`].
    pub fn config(&self, identity: &str, extra: &[&str]) -> Config {
        let args =
            std::iter::once("operator".to_owned()).chain(self.operator_args(identity, extra));
        OperatorArgs::try_parse_from(args)
            .expect("valid operator flags")
            .config
    }

    /// Runs the controller in-process (leader election included) until the handle is stopped.
    pub fn start_operator(&self, identity: &str, extra: &[&str]) -> OperatorHandle {
        let admin = AdminState::default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(controller::run(
            self.client.clone(),
            self.config(identity, extra),
            admin.clone(),
            shutdown.clone(),
        ));
        OperatorHandle {
            admin,
            shutdown,
            task: Some(task),
        }
    }

    pub async fn create_session(&self, name: &str, spec: Value) -> CameraSession {
        let session: CameraSession = serde_json::from_value(json!({
            "apiVersion": "p2pcamera.io/v1alpha1",
            "kind": "CameraSession",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("valid session");
        self.sessions
            .create(&PostParams::default(), &session)
            .await
            .expect("session created")
    }

    pub async fn delete_session(&self, name: &str) {
        self.sessions
            .delete(name, &DeleteParams::background())
            .await
            .expect("session deleted");
    }

    /// Waits until the session's status satisfies `check` (`Err` says what is missing).
    pub async fn wait_session<T>(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&CameraSession) -> Result<T, String>,
    ) -> CameraSession {
        eventually(&format!("session {name}: {what}"), WAIT, || async {
            let session = self.sessions.get(name).await.map_err(|e| e.to_string())?;
            check(&session)
                .map(|_| session.clone())
                .map_err(|why| format!("{why}; status {:?}", session.status))
        })
        .await
        .expect("session reaches the expected state")
    }

    pub async fn wait_ready(&self, name: &str) -> CameraSession {
        self.wait_session(name, "Ready", |s| phase_is(s, "Ready"))
            .await
    }

    /// The session's camera pod, if it exists.
    pub async fn pod_of(&self, session: &str) -> Option<Pod> {
        self.pods
            .get_opt(&child_name(session))
            .await
            .expect("pod lookup")
    }

    /// Waits for an Event of `type_` and `reason` about the named session.
    pub async fn wait_event(&self, session: &str, type_: &str, reason: &str) -> Event {
        eventually(
            &format!("{type_} event {reason} for {session}"),
            WAIT,
            || async {
                let events = self.events_of(session).await;
                events
                    .iter()
                    .find(|e| {
                        e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason)
                    })
                    .cloned()
                    .ok_or_else(|| {
                        let seen: Vec<_> = events
                            .iter()
                            .map(|e| (e.type_.clone(), e.reason.clone()))
                            .collect();
                        format!("events {seen:?}")
                    })
            },
        )
        .await
        .expect("the event is published")
    }

    /// Events whose regarding/involved object is the named session.
    pub async fn events_of(&self, session: &str) -> Vec<Event> {
        let events = Api::<Event>::namespaced(self.client.clone(), &self.ns);
        let selector = format!("involvedObject.kind=CameraSession,involvedObject.name={session}");
        events
            .list(&ListParams::default().fields(&selector))
            .await
            .expect("events")
            .items
    }
}

/// An operator running inside the test process.
pub struct OperatorHandle {
    pub admin: AdminState,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), controller::Error>>>,
}

impl OperatorHandle {
    /// The value of one metric series (name with labels, exactly as exposed); 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.admin.metrics.encode().expect("metrics encode");
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// Graceful shutdown: stops reconciling and releases the Lease.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("operator task")
                .expect("operator ends cleanly");
        }
    }
}

impl Drop for OperatorHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn phase_is(session: &CameraSession, phase: &str) -> Result<(), String> {
    let got = session
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| p.as_str());
    if got == Some(phase) {
        Ok(())
    } else {
        Err(format!("phase {got:?}, want {phase}"))
    }
}

/// The status condition of `type_` as (status, reason, message).
pub fn condition(session: &CameraSession, type_: &str) -> Option<(String, String, String)> {
    let status = session.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Logs of the in-process operator go to the test output (`RUST_LOG` to change the level).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("p2pcamera_operator=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Creates the cluster-scoped class `<namespace>-<suffix>`; returns its name.
pub async fn create_class(env: &TestEnv, suffix: &str, spec: Value) -> String {
    let name = format!("{}-{suffix}", env.ns);
    let class: CameraClass = serde_json::from_value(json!({
        "apiVersion": "p2pcamera.io/v1alpha1", "kind": "CameraClass",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("a valid class");
    classes(env)
        .create(&PostParams::default(), &class)
        .await
        .expect("class created");
    name
}

pub fn classes(env: &TestEnv) -> Api<CameraClass> {
    Api::all(env.client.clone())
}

pub async fn delete_class(env: &TestEnv, name: &str) {
    classes(env)
        .delete(name, &DeleteParams::default())
        .await
        .expect("class deleted");
}
