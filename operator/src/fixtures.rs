//! Test fixtures (as in controller-rs's `fixtures.rs`): the operator's configuration, a session,
//! camera pods in a given state, statuses as the operator writes them, and [`Snapshot`], all that
//! one reconcile observes, for the tests of [`crate::controller::decide`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus, Pod,
    PodCondition, PodStatus, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use p2pcamera_api::objects::ANNOTATION_WAKE;

use crate::class_fit::{NotAccepted, ResolvedClass};
use crate::config::{Config, PublicIpSource, Tolerations};
use crate::controller::decide::{
    self, Decision, HandedAddress, Lookups, NodeAddress, Observed, OtherPort, Plan, Polled,
};
use crate::crd::{CameraSession, CameraSessionSpec, CameraSessionStatus};
use crate::desired;
use crate::ports::PortRange;
use crate::status::{self, Situation, StatusInputs};

/// The session's port in the fixtures.
pub const PORT: u16 = 40010;
/// The node fixture pods are bound to.
pub const NODE: &str = "gpu-1";
/// The host IP the kubelet reports for fixture pods.
pub const HOST_IP: &str = "10.0.0.5";
/// A public address of [`NODE`] that is not its host IP.
pub const PUBLIC_IP: &str = "203.0.113.9";

/// The time `secs` seconds after the epoch.
pub fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("a valid timestamp")
}

/// The operator's configuration: ports 40000-40999, a GPU node selector and toleration, public
/// addresses from nodes, 5 restarts and 60 s of crash backoff, polls every 15 s, no TURN URLs.
pub fn config() -> Config {
    Config {
        namespace: None,
        port_range: PortRange {
            first: 40000,
            last: 40999,
        },
        camera_pod_image: "camera-pod:test".into(),
        gpu_resource_name: "nvidia.com/gpu".into(),
        gpu_node_selector: BTreeMap::from([("gpu".into(), "yes".into())]),
        gpu_tolerations: Tolerations(vec![Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: Some("Exists".into()),
            ..Toleration::default()
        }]),
        public_ip_source: PublicIpSource::Node,
        lease_name: "l".into(),
        lease_namespace: "default".into(),
        identity: Some("me".into()),
        camera_pod_require_gpu: true,
        crash_restart_limit: 5,
        crash_backoff: Duration::from_secs(60),
        idle_poll_interval: Duration::from_secs(15),
        camera_pod_metrics_port_offset: 1000,
        camera_pod_turn_urls: Vec::new(),
    }
}

/// Session `team/cam1` (uid `uid-1`, generation 1) with `spec` (JSON, as a user writes it).
pub fn session(spec: serde_json::Value) -> CameraSession {
    let spec: CameraSessionSpec = serde_json::from_value(spec).expect("a valid spec");
    let mut session = CameraSession::new("cam1", spec);
    session.metadata.namespace = Some("team".into());
    session.metadata.uid = Some("uid-1".into());
    session.metadata.generation = Some(1);
    session
}

impl CameraSession {
    /// With the `p2pcamera.io/wake` annotation.
    pub fn woken(mut self) -> Self {
        self.metadata
            .annotations
            .get_or_insert_default()
            .insert(ANNOTATION_WAKE.into(), "now".into());
        self
    }

    /// Its spec changed: the next generation.
    pub fn changed(mut self) -> Self {
        self.metadata.generation = Some(self.metadata.generation.unwrap_or(0) + 1);
        self
    }
}

/// The pod the operator creates for `session` on [`PORT`], as the API server holds it before the
/// scheduler looked at it: uid `pod-uid-1`, empty status.
pub fn camera_pod(session: &CameraSession) -> Pod {
    let mut pod = desired::build_pod(session, &ResolvedClass::built_in(), PORT, &config())
        .expect("the desired pod");
    pod.metadata.uid = Some("pod-uid-1".into());
    pod.status = Some(PodStatus::default());
    pod
}

/// A camera pod moved on in its life.
pub trait PodFixture {
    /// Bound to `node`, whose kubelet reports `host_ip`.
    fn bound(self, node: &str, host_ip: &str) -> Self;
    /// Its camera container runs (not ready yet).
    fn running(self) -> Self;
    /// Its camera container runs and its Ready condition is True.
    fn ready(self) -> Self;
    /// The scheduler reported it cannot place it, with `message`.
    fn unschedulable(self, message: &str) -> Self;
    /// The camera container restarted `times` and waits in CrashLoopBackOff.
    fn restarted(self, times: i32) -> Self;
    /// The pod failed outright (e.g. evicted), with `message`.
    fn failed(self, message: &str) -> Self;
    /// Being deleted.
    fn terminating(self) -> Self;
    /// Created at `at`.
    fn created(self, at: Timestamp) -> Self;
}

fn with_condition(
    pod: &mut Pod,
    type_: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let conditions = pod
        .status
        .get_or_insert_default()
        .conditions
        .get_or_insert_default();
    conditions.push(PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(Into::into),
        message: message.map(Into::into),
        ..PodCondition::default()
    });
}

impl PodFixture for Pod {
    fn bound(mut self, node: &str, host_ip: &str) -> Self {
        self.spec.get_or_insert_default().node_name = Some(node.into());
        self.status.get_or_insert_default().host_ip = Some(host_ip.into());
        with_condition(&mut self, "PodScheduled", "True", None, None);
        self
    }

    fn running(mut self) -> Self {
        self.status.get_or_insert_default().container_statuses = Some(vec![ContainerStatus {
            name: p2pcamera_api::objects::CONTAINER.into(),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }]);
        self
    }

    fn ready(self) -> Self {
        let mut pod = self.running();
        with_condition(&mut pod, "Ready", "True", None, None);
        pod
    }

    fn unschedulable(mut self, message: &str) -> Self {
        with_condition(
            &mut self,
            "PodScheduled",
            "False",
            Some("Unschedulable"),
            Some(message),
        );
        self
    }

    fn restarted(mut self, times: i32) -> Self {
        self.status.get_or_insert_default().container_statuses = Some(vec![ContainerStatus {
            name: p2pcamera_api::objects::CONTAINER.into(),
            restart_count: times,
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(status::REASON_CRASH_LOOP.into()),
                    message: Some("back-off 40s restarting failed container".into()),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }]);
        self
    }

    fn failed(mut self, message: &str) -> Self {
        let status = self.status.get_or_insert_default();
        status.phase = Some("Failed".into());
        status.message = Some(message.into());
        self
    }

    fn terminating(mut self) -> Self {
        self.metadata.deletion_timestamp = Some(Time(ts(1)));
        self
    }

    fn created(mut self, at: Timestamp) -> Self {
        self.metadata.creation_timestamp = Some(Time(at));
        self
    }
}

/// The status the operator writes for the fixture session in `situation` at `at`, starting from
/// none.
fn written(
    situation: &Situation<'_>,
    public_address: Option<&str>,
    at: Timestamp,
) -> CameraSessionStatus {
    let inputs = StatusInputs {
        generation: Some(1),
        port: PORT,
        gpu_resource: "nvidia.com/gpu",
        public_address,
        last_active: None,
        connection: None,
    };
    status::next_status(&CameraSessionStatus::default(), situation, &inputs, at)
}

impl CameraSessionStatus {
    /// Idle: the pod was removed for lack of a camera.
    pub fn idle() -> Self {
        written(&Situation::Idle, None, ts(1))
    }

    /// Failed: the pod crash-looped at `at` with `message`.
    pub fn crash_looped_at(at: Timestamp, message: &str) -> Self {
        written(
            &Situation::CrashLoop {
                message: message.into(),
            },
            None,
            at,
        )
    }

    /// Ready since `at` on [`NODE`].
    pub fn ready_since(at: Timestamp) -> Self {
        let pod = camera_pod(&session(serde_json::json!({})))
            .bound(NODE, HOST_IP)
            .ready();
        written(&Situation::Running(&status::observe_pod(&pod)), None, at)
    }
}

/// All that one reconcile observes, owned: a session, the configuration, the previous status, the
/// pod, the time and the answers to lookups. By default: a new session without a pod at
/// `ts(1000)`, nothing looked up.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub session: CameraSession,
    pub class: Result<ResolvedClass, NotAccepted>,
    pub config: Config,
    pub prev: CameraSessionStatus,
    pub pod: Option<Pod>,
    pub applied_pod: Option<String>,
    pub now: Timestamp,
    pub awaits_first_frame: bool,
    pub lookups: Lookups,
}

impl Snapshot {
    /// `session`, new: no status, no pod.
    pub fn new(session: CameraSession) -> Self {
        Self {
            session,
            class: Ok(ResolvedClass::built_in()),
            config: config(),
            prev: CameraSessionStatus::default(),
            pod: None,
            applied_pod: None,
            now: ts(1000),
            awaits_first_frame: false,
            lookups: Lookups::default(),
        }
    }

    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The session does not fit its class.
    pub fn not_accepted(mut self, misfit: NotAccepted) -> Self {
        self.class = Err(misfit);
        self
    }

    pub fn with_prev(mut self, prev: CameraSessionStatus) -> Self {
        self.prev = prev;
        self
    }

    pub fn with_pod(mut self, pod: Pod) -> Self {
        self.pod = Some(pod);
        self
    }

    /// The operator applied a pod with `hash` moments ago; the cache does not show it yet.
    pub fn with_applied_pod(mut self, hash: &str) -> Self {
        self.applied_pod = Some(hash.into());
        self
    }

    pub fn at(mut self, now: Timestamp) -> Self {
        self.now = now;
        self
    }

    /// The answer to the lookup of `node`'s public address.
    pub fn with_node_address(mut self, node: &str, address: Option<&str>) -> Self {
        self.lookups.node_address = Some(NodeAddress {
            node: node.into(),
            address: address.map(Into::into),
        });
        self
    }

    /// The allocator's answer to the port conflict of [`PORT`]: `port`, or none.
    pub fn with_other_port(mut self, port: Option<u16>) -> Self {
        self.lookups.other_port = Some(OtherPort { taken: PORT, port });
        self
    }

    /// The outcome of handing the node's public address to the pod.
    pub fn with_handed_address(mut self, handed: HandedAddress) -> Self {
        self.lookups.public_address = Some(handed);
        self
    }

    /// The answer to the activity poll.
    pub fn with_activity(mut self, polled: Polled) -> Self {
        self.lookups.activity = Some(polled);
        self
    }

    /// As [`decide::decide`] sees it.
    pub fn observed(&self) -> Observed<'_> {
        Observed {
            session: &self.session,
            class: &self.class,
            config: &self.config,
            prev: &self.prev,
            port: PORT,
            pod: self.pod.as_ref(),
            applied_pod: self.applied_pod.as_deref(),
            now: self.now,
            awaits_first_frame: self.awaits_first_frame,
            lookups: self.lookups.clone(),
        }
    }

    pub fn decide(&self) -> Decision {
        decide::decide(&self.observed()).expect("the desired pod builds")
    }

    /// The plan; panics when a lookup is still needed.
    pub fn plan(&self) -> Plan {
        match self.decide() {
            Decision::Plan(plan) => *plan,
            Decision::Lookup(lookup) => panic!("no plan yet: needs {lookup:?}"),
        }
    }
}
