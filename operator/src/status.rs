//! Status from observed reality, computed without a client.
//!
//! Conditions (`metav1.Condition` shape; `lastTransitionTime` changes only when `status` flips):
//! - `Scheduled`: `True` once bound; `Unknown` (`WaitingForScheduler`) until the scheduler says
//!   something; `False` with the scheduler's message when it reports the pod unschedulable, and a
//!   reason that says why ([`unschedulable_reason`]): `NoFreeGpu`, `NoFreePort`, `Unschedulable`
//!   (anything else, e.g. no node matches the selector), or `PortConflict` while the session
//!   moves to another port.
//! - `PodReady`: the pod's Ready condition.
//! - `Healthy`: `False` with reason `CrashLoopBackOff` after repeated crashes.
//! - `Idle`: `True` with reason `IdleTimeout` when the pod was removed for lack of a camera.
//! - `Accepted`: `False` with the misfit's reason (`ClassNotFound`, `FilterNotAllowed`,
//!   `MovedToClass`, ...) when the session does not fit its CameraClass; back to `True` once it
//!   does (absent until the first misfit).
//! - `SpecValid`: `False` with reason `PodRejected` and the API server's message when the pod made
//!   from the spec is refused as invalid; back to `True` once a pod is accepted (absent until the
//!   first rejection).
//!
//! `phase` is derived: Idle, Failed (crash loop or rejected spec), Terminating (old pod going away), Pending (no pod
//! yet), Scheduling (not bound), Starting (bound, not ready), Ready (ready; `endpoint` set).
//! `reason` says why a session is not Ready: the reason of the condition that holds it back
//! (`NoFreeGpu`, `NoFreePort`, `CrashLoopBackOff`, ...); absent once Ready. [`event`] says which
//! changes of phase and reason are published as Kubernetes Events.
//! `connection` is how the camera reaches the pod ([`connection`]), kept while the same pod runs;
//! any other situation (the pod gone, replaced, crashed) clears it.
//! `endpoint` is `https://<pod host IP>:<port>`: the address the router reaches from inside the
//! cluster. `publicAddress` is what ICE advertises (see [`crate::config::PublicIpSource`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{CameraSessionStatus, Phase, SessionConnection};
use p2pcamera_api::relay::ConnectionPath;

/// Condition type: the pod is bound to a node.
pub const SCHEDULED: &str = "Scheduled";
/// Condition type: the pod is ready.
pub const POD_READY: &str = "PodReady";
/// Condition type: the pod is not crash-looping.
pub const HEALTHY: &str = "Healthy";
/// Condition type: the session is idle (no pod).
pub const IDLE: &str = "Idle";
/// Condition type: the pod made from the spec is accepted by the API server.
pub const SPEC_VALID: &str = "SpecValid";
/// Condition type: the session fits its CameraClass. `False` (reasons from
/// [`crate::class_fit::NotAccepted::reason`]) when it does not; back to `True` once it does
/// (absent until the first misfit).
pub const ACCEPTED: &str = "Accepted";
/// Reason of `Accepted=True`.
pub const REASON_ACCEPTED: &str = "Accepted";
/// Reason of `SpecValid=False`.
pub const REASON_POD_REJECTED: &str = "PodRejected";
/// Reason of `Healthy=False`.
pub const REASON_CRASH_LOOP: &str = "CrashLoopBackOff";
/// Reason of `Idle=True`.
pub const REASON_IDLE_TIMEOUT: &str = "IdleTimeout";
/// Reason of `Scheduled=False`: no node that fits has a free GPU.
pub const REASON_NO_FREE_GPU: &str = "NoFreeGpu";
/// Reason of `Scheduled=False`: the session's port is taken on every node that fits, and it moved
/// as often as it may ([`crate::ports::MAX_PORT_MOVES`]).
pub const REASON_NO_FREE_PORT: &str = "NoFreePort";
/// Reason of `Scheduled=False`: the port is taken on the nodes that fit; moving to another port.
pub const REASON_PORT_CONFLICT: &str = "PortConflict";
/// Reason of `Scheduled=False`: anything else the scheduler reports (node selector, taints, ...).
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";
/// Reason of `Scheduled=Unknown`: the scheduler has not looked at the pod yet.
pub const REASON_WAITING_FOR_SCHEDULER: &str = "WaitingForScheduler";
/// The reasons of a session whose pod cannot be placed (the `reason` label of
/// `p2pcamera_operator_sessions_waiting`).
pub const WAITING_REASONS: [&str; 4] = [
    REASON_NO_FREE_GPU,
    REASON_NO_FREE_PORT,
    REASON_PORT_CONFLICT,
    REASON_UNSCHEDULABLE,
];

/// What the scheduler's NodePorts filter says of a node where the pod's port is taken.
const SCHEDULER_PORTS_TAKEN: &str = "didn't have free ports for the requested pod ports";

/// Whether the scheduler's unschedulable `message` counts nodes where the pod's port is taken.
pub fn port_conflict(message: &str) -> bool {
    message.contains(SCHEDULER_PORTS_TAKEN)
}

/// The reason constant for the scheduler's unschedulable `message`, for a pod that asks for GPUs
/// named `gpu_resource`. The scheduler checks ports before resources, so a node it counts as
/// having the port taken may lack a GPU too: a message that names missing GPUs at all is
/// `NoFreeGpu`.
pub fn unschedulable_reason(message: &str, gpu_resource: &str) -> &'static str {
    if message.contains(&format!("Insufficient {gpu_resource}")) {
        REASON_NO_FREE_GPU
    } else if port_conflict(message) {
        REASON_NO_FREE_PORT
    } else {
        REASON_UNSCHEDULABLE
    }
}

/// Whether the scheduler has placed the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheduling {
    /// Bound to a node.
    Bound,
    /// The scheduler reported it cannot place the pod.
    Unschedulable {
        /// The scheduler's reason (e.g. `Unschedulable`).
        reason: String,
        /// The scheduler's message (e.g. `0/2 nodes are available: 2 Insufficient nvidia.com/gpu.`).
        message: String,
    },
    /// Not yet considered.
    Waiting,
}

/// What matters about a camera pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodObservation {
    /// Pod name.
    pub name: String,
    /// Node it is bound to.
    pub node_name: Option<String>,
    /// The node address the kubelet reports for it.
    pub host_ip: Option<String>,
    /// The pod is being deleted.
    pub terminating: bool,
    /// Scheduling state.
    pub scheduling: Scheduling,
    /// The pod's Ready condition is True.
    pub ready: bool,
    /// The camera container runs (it started and has not stopped).
    pub running: bool,
    /// Restarts of the camera container.
    pub restarts: i32,
    /// Why the container is waiting, if it is.
    pub waiting_reason: Option<String>,
    /// How the camera container's previous run ended: exit code and termination message.
    pub last_exit: Option<String>,
    /// The pod phase is `Failed` (e.g. evicted).
    pub failed: bool,
    /// Detail for the status message.
    pub message: Option<String>,
}

/// Extracts the [`PodObservation`] of `pod`.
pub fn observe_pod(pod: &Pod) -> PodObservation {
    let status = pod.status.as_ref();
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let condition = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let scheduling = match condition("PodScheduled") {
        _ if node_name.is_some() => Scheduling::Bound,
        Some(c) if c.status == "False" => Scheduling::Unschedulable {
            reason: c
                .reason
                .clone()
                .unwrap_or_else(|| "Unschedulable".to_string()),
            message: c.message.clone().unwrap_or_default(),
        },
        _ => Scheduling::Waiting,
    };
    let container = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
        .first();
    let waiting = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref());
    let last_exit = container
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|terminated| {
            let detail = [terminated.message.as_deref(), terminated.reason.as_deref()]
                .into_iter()
                .flatten()
                .map(str::trim)
                .find(|text| !text.is_empty())
                .unwrap_or("no message");
            format!(
                "exit code {}: {}",
                terminated.exit_code,
                last_chars(detail, LAST_EXIT_CHARS)
            )
        });
    PodObservation {
        name: pod.metadata.name.clone().unwrap_or_default(),
        node_name,
        host_ip: status
            .and_then(|s| s.host_ip.clone())
            .filter(|ip| !ip.is_empty()),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        scheduling,
        ready: condition("Ready").is_some_and(|c| c.status == "True"),
        running: container
            .and_then(|c| c.state.as_ref())
            .is_some_and(|s| s.running.is_some()),
        restarts: container.map(|c| c.restart_count).unwrap_or(0),
        waiting_reason: waiting.and_then(|w| w.reason.clone()),
        last_exit,
        failed: status.and_then(|s| s.phase.as_deref()) == Some("Failed"),
        message: waiting
            .and_then(|w| w.message.clone())
            .or_else(|| status.and_then(|s| s.message.clone())),
    }
}

/// Why the pod counts as crash-looping, or `None`. A pod that failed outright, or whose container
/// restarted `restart_limit` times or more, is crash-looping.
pub fn crash_loop(pod: &PodObservation, restart_limit: i32) -> Option<String> {
    if pod.failed {
        return Some(format!(
            "pod failed: {}",
            pod.message.as_deref().unwrap_or("no message")
        ));
    }
    (pod.restarts >= restart_limit).then(|| {
        let last_exit = pod
            .last_exit
            .as_deref()
            .map(|exit| format!("; last {exit}"))
            .unwrap_or_default();
        format!(
            "camera container restarted {} times (last state: {}){last_exit}",
            pod.restarts,
            pod.waiting_reason.as_deref().unwrap_or("running")
        )
    })
}

/// The most of a termination message a status message repeats: its end, where the error is
/// (a message taken from the log ends with the log's last lines).
const LAST_EXIT_CHARS: usize = 400;

/// The last `limit` characters of `text`, marked as cut when they are not all of it.
fn last_chars(text: &str, limit: usize) -> String {
    let count = text.chars().count();
    if count <= limit {
        text.to_owned()
    } else {
        format!("…{}", text.chars().skip(count - limit).collect::<String>())
    }
}

/// Time left before a crash-looped session may get a new pod, or `None` when it may now.
pub fn crash_backoff_remaining(
    status: &CameraSessionStatus,
    now: Timestamp,
    backoff: Duration,
) -> Option<Duration> {
    if status.phase != Some(Phase::Failed) {
        return None;
    }
    let since = status
        .conditions
        .iter()
        .find(|c| c.type_ == HEALTHY && c.status == "False")?
        .last_transition_time
        .0;
    let elapsed = now.duration_since(since).as_secs_f64().max(0.0);
    let left = backoff.as_secs_f64() - elapsed;
    (left > 0.0).then(|| Duration::from_secs_f64(left))
}

/// Whether a ready session has been without a camera for `timeout`. The clock starts at the
/// later of the last activity and the moment the pod became ready.
pub fn idle_expired(
    now: Timestamp,
    timeout: Duration,
    camera_connected: bool,
    last_active: Option<Timestamp>,
    ready_since: Option<Timestamp>,
) -> bool {
    if camera_connected {
        return false;
    }
    let Some(since) = last_active.into_iter().chain(ready_since).max() else {
        return false;
    };
    now.duration_since(since).as_secs_f64() >= timeout.as_secs_f64()
}

/// When the pod became ready, from the session's own `PodReady` condition.
pub fn ready_since(status: &CameraSessionStatus) -> Option<Timestamp> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == POD_READY && c.status == "True")
        .map(|c| c.last_transition_time.0)
}

/// Where the session stands, as decided by the reconciler.
#[derive(Clone, Debug)]
pub enum Situation<'a> {
    /// The pod was removed after the idle timeout.
    Idle,
    /// The pod crash-looped; it is removed and recreated after the backoff.
    CrashLoop {
        /// What happened.
        message: String,
    },
    /// No pod yet (about to be created).
    NoPod,
    /// The session does not fit its CameraClass: nothing is created.
    NotAccepted {
        /// The `Accepted=False` reason ([`crate::class_fit::NotAccepted::reason`]).
        reason: &'static str,
        /// What does not fit.
        message: String,
    },
    /// The API server refused the pod made from the spec as invalid.
    InvalidSpec {
        /// The API server's message.
        message: String,
    },
    /// The current pod is going away (spec or port change, deletion in progress).
    Replacing(&'a PodObservation),
    /// The scheduler cannot place the pod because its port is taken on the nodes that fit: the
    /// pod is deleted and the session moves to another port ([`StatusInputs::port`]).
    PortMove {
        /// The unschedulable pod.
        pod: &'a PodObservation,
        /// The port it asked for.
        from: u16,
    },
    /// The current pod is the desired one.
    Running(&'a PodObservation),
}

/// Inputs beyond the situation.
#[derive(Clone, Debug)]
pub struct StatusInputs<'a> {
    /// The session's `metadata.generation`.
    pub generation: Option<i64>,
    /// The session's port.
    pub port: u16,
    /// The extended resource the pod asks GPUs of (names missing GPUs in the scheduler's message).
    pub gpu_resource: &'a str,
    /// The public address of the node the pod is bound to, when known.
    pub public_address: Option<&'a str>,
    /// A new activity time from the camera pod.
    pub last_active: Option<Timestamp>,
    /// The connection the camera pod reported at this reconcile's poll, if it reported one.
    pub connection: Option<ConnectionPath>,
}

fn condition(type_: &str, status: &str, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: None,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// Replaces condition `new.type_` in `conditions`, keeping `lastTransitionTime` unless the
/// status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    mut new: Condition,
    generation: Option<i64>,
    now: Timestamp,
) {
    new.observed_generation = generation;
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            new.last_transition_time = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                Time(now)
            };
            *old = new;
        }
        None => {
            new.last_transition_time = Time(now);
            conditions.push(new);
        }
    }
}

/// Formats `https://<address>:<port>`, bracketing IPv6 addresses.
pub fn endpoint(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("https://[{address}]:{port}")
    } else {
        format!("https://{address}:{port}")
    }
}

/// The session's `status.connection` once the pod reported `reported` at `now` (`None`: it did
/// not, or was not asked), given `known`, the one the status holds for the same pod: the report
/// in the CRD's spelling, seen at `now` unless it is the known one (whose time stays, so an
/// unchanged connection writes nothing); the known one when there is no report.
pub fn connection(
    known: Option<&SessionConnection>,
    reported: Option<ConnectionPath>,
    now: Timestamp,
) -> Option<SessionConnection> {
    let Some(reported) = reported else {
        return known.cloned();
    };
    let mut seen = SessionConnection::from(reported);
    seen.observed_time = match known {
        Some(known) if known.same_path(&seen) => known.observed_time.clone(),
        _ => Some(Time(now)),
    };
    Some(seen)
}

/// The next status of a session, from the previous one and what was observed.
pub fn next_status(
    prev: &CameraSessionStatus,
    situation: &Situation<'_>,
    inputs: &StatusInputs<'_>,
    now: Timestamp,
) -> CameraSessionStatus {
    let mut conditions = prev.conditions.clone();
    let mut set = |c: Condition| set_condition(&mut conditions, c, inputs.generation, now);
    let mut next = CameraSessionStatus {
        udp_port: Some(inputs.port),
        observed_generation: inputs.generation,
        last_active_time: inputs
            .last_active
            .map(Time)
            .or_else(|| prev.last_active_time.clone()),
        start: prev.start.clone(),
        ..CameraSessionStatus::default()
    };
    let (phase, reason, message) = match situation {
        Situation::Idle => {
            set(condition(
                IDLE,
                "True",
                REASON_IDLE_TIMEOUT,
                "no camera within the idle timeout; pod removed",
            ));
            set(condition(
                POD_READY,
                "False",
                "PodRemoved",
                "the pod was removed while idle",
            ));
            (
                Phase::Idle,
                Some(REASON_IDLE_TIMEOUT),
                "idle: pod removed; change the spec or set annotation p2pcamera.io/wake to resume"
                    .to_string(),
            )
        }
        Situation::CrashLoop { message } => {
            set(condition(
                HEALTHY,
                "False",
                REASON_CRASH_LOOP,
                message.clone(),
            ));
            set(condition(
                POD_READY,
                "False",
                REASON_CRASH_LOOP,
                message.clone(),
            ));
            (Phase::Failed, Some(REASON_CRASH_LOOP), message.clone())
        }
        Situation::NotAccepted { reason, message } => {
            set(condition(ACCEPTED, "False", reason, message.clone()));
            set(condition(POD_READY, "False", reason, message.clone()));
            (
                Phase::Failed,
                Some(*reason),
                format!("not accepted: {message}"),
            )
        }
        Situation::InvalidSpec { message } => {
            set(condition(
                SPEC_VALID,
                "False",
                REASON_POD_REJECTED,
                message.clone(),
            ));
            set(condition(
                POD_READY,
                "False",
                REASON_POD_REJECTED,
                message.clone(),
            ));
            (
                Phase::Failed,
                Some(REASON_POD_REJECTED),
                format!("the pod for this spec is invalid: {message}"),
            )
        }
        Situation::NoPod => {
            set(condition(
                SCHEDULED,
                "Unknown",
                "PodNotCreated",
                "the pod is being created",
            ));
            set(condition(
                POD_READY,
                "False",
                "PodNotCreated",
                "the pod is being created",
            ));
            set(condition(IDLE, "False", "Active", ""));
            (
                Phase::Pending,
                Some("PodNotCreated"),
                "creating the pod".to_string(),
            )
        }
        Situation::Replacing(pod) => {
            next.pod_name = Some(pod.name.clone());
            set(condition(
                POD_READY,
                "False",
                "PodReplaced",
                "the pod is being replaced",
            ));
            (
                Phase::Terminating,
                Some("PodReplaced"),
                "replacing the pod".to_string(),
            )
        }
        Situation::PortMove { pod, from } => {
            next.pod_name = Some(pod.name.clone());
            let scheduler = match &pod.scheduling {
                Scheduling::Unschedulable { message, .. } => message.as_str(),
                _ => "",
            };
            let message = format!(
                "port {from} is taken on the nodes that fit; moving to port {} (scheduler: {scheduler})",
                inputs.port
            );
            set(condition(
                SCHEDULED,
                "False",
                REASON_PORT_CONFLICT,
                message.clone(),
            ));
            (Phase::Scheduling, Some(REASON_PORT_CONFLICT), message)
        }
        Situation::Running(pod) => {
            next.pod_name = Some(pod.name.clone());
            next.node_name = pod.node_name.clone();
            let known = prev
                .connection
                .as_ref()
                .filter(|_| prev.pod_name == next.pod_name);
            next.connection = connection(known, inputs.connection, now);
            set(condition(IDLE, "False", "Active", ""));
            if pod.restarts < 1 || pod.waiting_reason.as_deref() != Some(REASON_CRASH_LOOP) {
                set(condition(HEALTHY, "True", "Running", ""));
            }
            match &pod.scheduling {
                Scheduling::Bound => set(condition(
                    SCHEDULED,
                    "True",
                    "Bound",
                    format!(
                        "bound to node {}",
                        pod.node_name.as_deref().unwrap_or_default()
                    ),
                )),
                Scheduling::Unschedulable { message, .. } => set(condition(
                    SCHEDULED,
                    "False",
                    unschedulable_reason(message, inputs.gpu_resource),
                    message.clone(),
                )),
                Scheduling::Waiting => set(condition(
                    SCHEDULED,
                    "Unknown",
                    REASON_WAITING_FOR_SCHEDULER,
                    "waiting for the scheduler",
                )),
            }
            let not_ready = pod
                .waiting_reason
                .as_deref()
                .unwrap_or("ContainersNotReady");
            if pod.ready {
                set(condition(POD_READY, "True", "PodReady", ""));
            } else {
                let why = pod.message.clone().unwrap_or_default();
                set(condition(POD_READY, "False", not_ready, why));
            }
            if pod.scheduling == Scheduling::Bound {
                next.public_address = inputs
                    .public_address
                    .map(str::to_string)
                    .or_else(|| pod.host_ip.clone());
            }
            match (&pod.scheduling, pod.ready) {
                (Scheduling::Bound, true) => {
                    next.endpoint = pod
                        .host_ip
                        .as_deref()
                        .or(inputs.public_address)
                        .map(|address| endpoint(address, inputs.port));
                    (Phase::Ready, None, "ready".to_string())
                }
                (Scheduling::Bound, false) => (
                    Phase::Starting,
                    Some(not_ready),
                    "waiting for the pod to become ready".to_string(),
                ),
                (Scheduling::Unschedulable { message, .. }, _) => (
                    Phase::Scheduling,
                    Some(unschedulable_reason(message, inputs.gpu_resource)),
                    message.clone(),
                ),
                (Scheduling::Waiting, _) => (
                    Phase::Scheduling,
                    Some(REASON_WAITING_FOR_SCHEDULER),
                    "waiting for the scheduler".to_string(),
                ),
            }
        }
    };
    let accepted = matches!(situation, Situation::NoPod | Situation::Running(_));
    if accepted && conditions.iter().any(|c| c.type_ == SPEC_VALID) {
        set_condition(
            &mut conditions,
            condition(SPEC_VALID, "True", "PodAccepted", ""),
            inputs.generation,
            now,
        );
    }
    let misfit = matches!(situation, Situation::NotAccepted { .. });
    if !misfit && conditions.iter().any(|c| c.type_ == ACCEPTED) {
        set_condition(
            &mut conditions,
            condition(
                ACCEPTED,
                "True",
                REASON_ACCEPTED,
                "the session fits its class",
            ),
            inputs.generation,
            now,
        );
    }
    next.phase = Some(phase);
    next.reason = reason.map(str::to_string);
    next.message = Some(message);
    next.conditions = conditions;
    next
}

/// How long a new pod's normal progress (waiting for the scheduler, then for its container) may
/// stay out of a status that says nothing yet or that the pod is being created ([`settling`]).
pub const STATUS_SETTLE: Duration = Duration::from_secs(10);

/// The reasons of a bound pod that starts normally (no image pull or container error).
const STARTING_NORMALLY: [&str; 3] = ["ContainerCreating", "PodInitializing", "ContainersNotReady"];

/// Whether `status` is a step on the way to Ready that needs nobody's attention: waiting for the
/// scheduler, or bound and starting normally.
pub fn passing(status: &CameraSessionStatus) -> bool {
    match (status.phase, status.reason.as_deref()) {
        (Some(Phase::Scheduling), Some(reason)) => reason == REASON_WAITING_FOR_SCHEDULER,
        (Some(Phase::Starting), Some(reason)) => STARTING_NORMALLY.contains(&reason),
        _ => false,
    }
}

/// How much longer the status `prev` stays instead of `next`, or `None` when `next` is written
/// now. A new pod usually passes the scheduler and starts within seconds, and writing each step
/// would cost a request per step and session; so while the session has no status yet or says its
/// pod is being created (`Pending`), a [`passing`] step is written only once the pod, created at
/// `pod_created`, is [`STATUS_SETTLE`] old. Ready, and anything that needs attention (no free
/// GPU or port, an image that cannot be pulled, a crash), is written at once.
pub fn settling(
    prev: &CameraSessionStatus,
    next: &CameraSessionStatus,
    pod_created: Option<Timestamp>,
    now: Timestamp,
) -> Option<Duration> {
    if !matches!(prev.phase, None | Some(Phase::Pending)) || !passing(next) {
        return None;
    }
    let age = now.duration_since(pod_created?).as_secs_f64().max(0.0);
    let left = STATUS_SETTLE.as_secs_f64() - age;
    (left > 0.0).then(|| Duration::from_secs_f64(left))
}

/// A Kubernetes Event about a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionEvent {
    /// A Warning (something a user may have to act on), else Normal.
    pub warning: bool,
    /// `Ready`, or the session's `reason` (`NoFreePort`, `CrashLoopBackOff`, ...).
    pub reason: String,
    /// The status message.
    pub note: Option<String>,
}

/// The Event to publish when a session's status goes from `prev` to `next`, if any: one when it
/// becomes Idle (the operator removed its pod) or Failed, and one when its pod starts waiting for
/// something (a GPU, a port, a node) or moves to another port; each only when the phase or the
/// reason changes, so a retry never publishes again. The normal course publishes nothing: the
/// steps on the way (Pending, WaitingForScheduler, Starting, Terminating) pass in moments and the
/// pod's own Events (the scheduler's, the kubelet's) tell them in detail, and becoming Ready is
/// recorded in the status (`phase`, the `PodReady` condition's `lastTransitionTime`), as a
/// Deployment records its pods becoming ready without an Event.
pub fn event(prev: &CameraSessionStatus, next: &CameraSessionStatus) -> Option<SessionEvent> {
    let phase = next.phase?;
    if (prev.phase, &prev.reason) == (next.phase, &next.reason) {
        return None;
    }
    let reason = next.reason.as_deref();
    let warning = match (phase, reason) {
        (Phase::Idle, _) => false,
        (Phase::Failed, _) => true,
        (Phase::Scheduling, Some(REASON_PORT_CONFLICT)) => false,
        (Phase::Scheduling, Some(reason)) if WAITING_REASONS.contains(&reason) => true,
        _ => return None,
    };
    Some(SessionEvent {
        warning,
        reason: reason.unwrap_or(phase.as_str()).to_string(),
        note: next.message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{IceCandidateType, MediaRoute, MediaTransport};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        PodCondition, PodSpec, PodStatus,
    };

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn pod(node: Option<&str>, conditions: &[(&str, &str, Option<&str>, Option<&str>)]) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("cam1-p2pcamera".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..Default::default()
            }),
            status: Some(PodStatus {
                host_ip: node.map(|_| "10.0.0.5".into()),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s, reason, message)| PodCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            reason: reason.map(Into::into),
                            message: message.map(Into::into),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn inputs(public: Option<&str>) -> StatusInputs<'_> {
        StatusInputs {
            generation: Some(3),
            port: 40010,
            gpu_resource: "nvidia.com/gpu",
            public_address: public,
            last_active: None,
            connection: None,
        }
    }

    fn cond<'a>(s: &'a CameraSessionStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn unschedulable_pod_reports_the_schedulers_message() {
        let msg = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.";
        let p = observe_pod(&pod(
            None,
            &[("PodScheduled", "False", Some("Unschedulable"), Some(msg))],
        ));
        let s = next_status(
            &Default::default(),
            &Situation::Running(&p),
            &inputs(None),
            ts(100),
        );
        assert_eq!(s.phase, Some(Phase::Scheduling));
        let c = cond(&s, SCHEDULED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            ("False", REASON_NO_FREE_GPU, msg)
        );
        assert_eq!(s.reason.as_deref(), Some(REASON_NO_FREE_GPU));
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(s.endpoint, None);
        assert_eq!(s.udp_port, Some(40010));
    }

    #[test]
    fn the_schedulers_message_gives_the_waiting_reason() {
        let ports = "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 node(s) didn't have free ports for the requested pod ports. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
        let both = "0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't have free ports for the requested pod ports.";
        let taints = "0/1 nodes are available: 1 node(s) had untolerated taint {gpu: yes}.";
        let gpu = "nvidia.com/gpu";
        assert!(port_conflict(ports) && port_conflict(both) && !port_conflict(taints));
        assert_eq!(unschedulable_reason(ports, gpu), REASON_NO_FREE_PORT);
        assert_eq!(unschedulable_reason(both, gpu), REASON_NO_FREE_GPU);
        assert_eq!(unschedulable_reason(taints, gpu), REASON_UNSCHEDULABLE);
        assert_eq!(
            unschedulable_reason(both, "amd.com/gpu"),
            REASON_NO_FREE_PORT,
            "another GPU resource is not this pod's"
        );
    }

    #[test]
    fn a_port_move_says_from_where_to_where_and_why() {
        let msg = "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports.";
        let p = observe_pod(&pod(
            None,
            &[("PodScheduled", "False", Some("Unschedulable"), Some(msg))],
        ));
        let s = next_status(
            &Default::default(),
            &Situation::PortMove {
                pod: &p,
                from: 40001,
            },
            &inputs(None),
            ts(100),
        );
        assert_eq!(
            (s.phase, s.reason.as_deref(), s.udp_port),
            (
                Some(Phase::Scheduling),
                Some(REASON_PORT_CONFLICT),
                Some(40010)
            )
        );
        let c = cond(&s, SCHEDULED);
        assert_eq!(c.reason, REASON_PORT_CONFLICT);
        assert!(
            c.message.contains("port 40001")
                && c.message.contains("port 40010")
                && c.message.contains(msg),
            "{}",
            c.message
        );
    }

    #[test]
    fn events_for_idle_failed_and_waiting_once_per_change_none_for_ready() {
        let status = |phase, reason: Option<&str>| CameraSessionStatus {
            phase: Some(phase),
            reason: reason.map(Into::into),
            message: Some("why".into()),
            ..CameraSessionStatus::default()
        };
        let none = CameraSessionStatus::default();
        let scheduling = status(Phase::Scheduling, Some(REASON_WAITING_FOR_SCHEDULER));
        let no_gpu = status(Phase::Scheduling, Some(REASON_NO_FREE_GPU));
        let no_port = status(Phase::Scheduling, Some(REASON_NO_FREE_PORT));
        let moving = status(Phase::Scheduling, Some(REASON_PORT_CONFLICT));
        let starting = status(Phase::Starting, Some("ContainersNotReady"));
        let ready = status(Phase::Ready, None);
        let failed = status(Phase::Failed, Some(REASON_CRASH_LOOP));
        let idle = status(Phase::Idle, Some(REASON_IDLE_TIMEOUT));
        let published = |prev, next| event(prev, next).map(|e| (e.warning, e.reason));
        // The steps on the way publish nothing.
        assert_eq!(published(&none, &scheduling), None);
        assert_eq!(published(&scheduling, &starting), None);
        let replacing = status(Phase::Terminating, Some("PodReplaced"));
        assert_eq!(published(&ready, &replacing), None);
        assert_eq!(published(&starting, &ready), None, "the status records it");
        assert_eq!(published(&ready, &ready), None, "no change, no event");
        assert_eq!(
            published(&scheduling, &no_gpu),
            Some((true, REASON_NO_FREE_GPU.into()))
        );
        assert_eq!(
            published(&no_gpu, &no_gpu),
            None,
            "a retry publishes nothing"
        );
        assert_eq!(
            published(&no_gpu, &moving),
            Some((false, REASON_PORT_CONFLICT.into()))
        );
        assert_eq!(
            published(&moving, &no_port),
            Some((true, REASON_NO_FREE_PORT.into()))
        );
        assert_eq!(
            published(&ready, &failed),
            Some((true, REASON_CRASH_LOOP.into()))
        );
        assert_eq!(
            published(&ready, &idle),
            Some((false, REASON_IDLE_TIMEOUT.into()))
        );
        assert_eq!(
            event(&scheduling, &no_gpu).unwrap().note.as_deref(),
            Some("why")
        );
    }

    #[test]
    fn a_new_pods_normal_progress_waits_to_be_written_until_it_settles() {
        let status = |phase, reason: Option<&str>| CameraSessionStatus {
            phase: Some(phase),
            reason: reason.map(Into::into),
            ..CameraSessionStatus::default()
        };
        let none = CameraSessionStatus::default();
        let pending = status(Phase::Pending, Some("PodNotCreated"));
        let scheduling = status(Phase::Scheduling, Some(REASON_WAITING_FOR_SCHEDULER));
        let starting = status(Phase::Starting, Some("ContainerCreating"));
        let pull_error = status(Phase::Starting, Some("ImagePullBackOff"));
        let no_gpu = status(Phase::Scheduling, Some(REASON_NO_FREE_GPU));
        let ready = status(Phase::Ready, None);
        let created = ts(100);
        let settle = STATUS_SETTLE.as_secs() as i64;
        for prev in [&none, &pending] {
            for next in [&scheduling, &starting] {
                assert_eq!(
                    settling(prev, next, Some(created), ts(104)),
                    Some(STATUS_SETTLE - Duration::from_secs(4)),
                    "{prev:?} -> {next:?}"
                );
                assert_eq!(
                    settling(prev, next, Some(created), ts(100 + settle)),
                    None,
                    "settled"
                );
            }
            for next in [&pull_error, &no_gpu, &ready] {
                assert_eq!(
                    settling(prev, next, Some(created), ts(101)),
                    None,
                    "{next:?}"
                );
            }
        }
        // Once the session said where its pod stands, every change is written.
        assert_eq!(settling(&no_gpu, &starting, Some(created), ts(101)), None);
        assert_eq!(settling(&ready, &scheduling, Some(created), ts(101)), None);
        assert_eq!(
            settling(&scheduling, &starting, Some(created), ts(101)),
            None
        );
        assert_eq!(
            settling(&none, &scheduling, None, ts(101)),
            None,
            "age unknown"
        );
    }

    #[test]
    fn bound_then_ready_sets_endpoint_and_public_address() {
        let p = observe_pod(&pod(Some("gpu-1"), &[("PodScheduled", "True", None, None)]));
        let starting = next_status(
            &Default::default(),
            &Situation::Running(&p),
            &inputs(Some("203.0.113.9")),
            ts(100),
        );
        assert_eq!(starting.phase, Some(Phase::Starting));
        assert_eq!(starting.node_name.as_deref(), Some("gpu-1"));
        assert_eq!(starting.public_address.as_deref(), Some("203.0.113.9"));
        assert_eq!(starting.endpoint, None);
        let p = observe_pod(&pod(
            Some("gpu-1"),
            &[
                ("PodScheduled", "True", None, None),
                ("Ready", "True", None, None),
            ],
        ));
        let ready = next_status(
            &starting,
            &Situation::Running(&p),
            &inputs(Some("203.0.113.9")),
            ts(200),
        );
        assert_eq!(ready.phase, Some(Phase::Ready));
        assert_eq!(ready.endpoint.as_deref(), Some("https://10.0.0.5:40010"));
        assert_eq!(ready_since(&ready), Some(ts(200)));
        // Scheduled stayed True: its transition time is kept.
        assert_eq!(cond(&ready, SCHEDULED).last_transition_time.0, ts(100));
    }

    #[test]
    fn unchanged_observation_gives_identical_status() {
        let p = observe_pod(&pod(Some("gpu-1"), &[("Ready", "True", None, None)]));
        let a = next_status(
            &Default::default(),
            &Situation::Running(&p),
            &inputs(None),
            ts(100),
        );
        let b = next_status(&a, &Situation::Running(&p), &inputs(None), ts(500));
        assert_eq!(a, b, "no flapping: same input, same status");
    }

    #[test]
    fn the_connection_is_written_when_it_changes_and_kept_while_the_pod_runs() {
        use p2pcamera_api::relay::{CandidateType, Transport};
        let p = observe_pod(&pod(Some("gpu-1"), &[("Ready", "True", None, None)]));
        let running = Situation::Running(&p);
        let polled = |connection| StatusInputs {
            connection,
            ..inputs(None)
        };
        let ready = next_status(&Default::default(), &running, &inputs(None), ts(100));
        assert_eq!(
            ready.connection, None,
            "no connection before the pod reports one"
        );
        let camera_relays = ConnectionPath::of_pair(CandidateType::Host, CandidateType::Relay);
        let relayed = next_status(&ready, &running, &polled(Some(camera_relays)), ts(200));
        let seen = relayed.connection.clone().expect("reported");
        assert_eq!(
            (seen.path, seen.transport, seen.camera_candidate),
            (MediaRoute::Relay, None, IceCandidateType::Relay)
        );
        assert_eq!(seen.observed_time, Some(Time(ts(200))));
        // The same report later, or no report at all, changes nothing: nothing to write.
        for later in [Some(camera_relays), None] {
            assert_eq!(
                next_status(&relayed, &running, &polled(later), ts(300)),
                relayed
            );
        }
        // The camera says how it reaches its relay: a new connection, seen now.
        let over_tls = camera_relays.with_camera_transport(Transport::Tls);
        let told = next_status(&relayed, &running, &polled(Some(over_tls)), ts(400));
        let told = told.connection.expect("reported");
        assert_eq!(
            (told.transport, told.observed_time),
            (Some(MediaTransport::Tls), Some(Time(ts(400))))
        );
        // The pod goes away: its connection with it; another pod's is not this one's.
        let idle = next_status(
            &relayed,
            &Situation::Idle,
            &polled(Some(camera_relays)),
            ts(500),
        );
        assert_eq!(idle.connection, None);
        let mut other_pod = relayed.clone();
        other_pod.pod_name = Some("cam1-warm-x".into());
        assert_eq!(
            next_status(&other_pod, &running, &inputs(None), ts(600)).connection,
            None
        );
    }

    #[test]
    fn crash_loop_message_says_how_the_last_run_ended() {
        let with_last_state = |message: Option<&str>, reason: Option<&str>| {
            let mut pod = pod(Some("n"), &[]);
            pod.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
                restart_count: 3,
                last_state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 1,
                        message: message.map(Into::into),
                        reason: reason.map(Into::into),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
            observe_pod(&pod)
        };
        let p = with_last_state(
            Some("camera-pod failed: the media UDP port 10.0.0.5:40001 is not available\n"),
            Some("Error"),
        );
        assert_eq!(
            crash_loop(&p, 3).unwrap(),
            "camera container restarted 3 times (last state: running); last exit code 1: camera-pod failed: the media UDP port 10.0.0.5:40001 is not available"
        );
        // Without a message the reason stands in; a long message (a log's end) keeps its end.
        let p = with_last_state(None, Some("OOMKilled"));
        assert!(
            crash_loop(&p, 3)
                .unwrap()
                .ends_with("; last exit code 1: OOMKilled")
        );
        let log = format!("{}the error at the end", "x".repeat(2000));
        let why = crash_loop(&with_last_state(Some(&log), None), 3).unwrap();
        assert!(why.ends_with("xxxxthe error at the end"), "{why}");
        assert!(why.contains("last exit code 1: …x"), "{why}");
        assert!(why.chars().count() < 500, "{why}");
        // No previous run: nothing to say about it.
        let mut p = observe_pod(&pod(Some("n"), &[]));
        p.restarts = 3;
        assert!(!crash_loop(&p, 3).unwrap().contains("last exit"));
    }

    #[test]
    fn crash_loop_detection_and_backoff() {
        let mut p = observe_pod(&pod(Some("n"), &[]));
        assert_eq!(crash_loop(&p, 5), None);
        p.restarts = 5;
        p.waiting_reason = Some(REASON_CRASH_LOOP.into());
        let why = crash_loop(&p, 5).unwrap();
        assert!(why.contains("restarted 5 times"), "{why}");
        let s = next_status(
            &Default::default(),
            &Situation::CrashLoop { message: why },
            &inputs(None),
            ts(1000),
        );
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(cond(&s, HEALTHY).reason, REASON_CRASH_LOOP);
        let backoff = Duration::from_secs(60);
        assert_eq!(
            crash_backoff_remaining(&s, ts(1010), backoff),
            Some(Duration::from_secs(50))
        );
        assert_eq!(crash_backoff_remaining(&s, ts(1060), backoff), None);
        assert_eq!(
            crash_backoff_remaining(&Default::default(), ts(1010), backoff),
            None
        );
    }

    #[test]
    fn failed_pod_counts_as_crash() {
        let mut raw = pod(Some("n"), &[]);
        raw.status.as_mut().unwrap().phase = Some("Failed".into());
        raw.status.as_mut().unwrap().message = Some("evicted".into());
        assert_eq!(
            crash_loop(&observe_pod(&raw), 5).as_deref(),
            Some("pod failed: evicted")
        );
    }

    #[test]
    fn container_waiting_reason_is_observed() {
        let mut raw = pod(Some("n"), &[]);
        raw.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            restart_count: 3,
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    message: Some("back-off 40s".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let p = observe_pod(&raw);
        assert_eq!(
            (p.restarts, p.waiting_reason.as_deref()),
            (3, Some("CrashLoopBackOff"))
        );
        let s = next_status(
            &Default::default(),
            &Situation::Running(&p),
            &inputs(None),
            ts(1),
        );
        assert_eq!(cond(&s, POD_READY).reason, "CrashLoopBackOff");
    }

    #[test]
    fn idle_clock_starts_at_latest_of_ready_and_activity() {
        let t = Duration::from_secs(60);
        assert!(!idle_expired(ts(1000), t, false, None, None));
        assert!(idle_expired(ts(1000), t, false, None, Some(ts(900))));
        assert!(!idle_expired(ts(1000), t, true, None, Some(ts(900))));
        assert!(!idle_expired(
            ts(1000),
            t,
            false,
            Some(ts(990)),
            Some(ts(900))
        ));
        assert!(idle_expired(
            ts(1060),
            t,
            false,
            Some(ts(1000)),
            Some(ts(900))
        ));
    }

    #[test]
    fn idle_and_terminating_phases() {
        let s = next_status(&Default::default(), &Situation::Idle, &inputs(None), ts(1));
        assert_eq!(s.phase, Some(Phase::Idle));
        assert_eq!(cond(&s, IDLE).status, "True");
        assert_eq!(s.pod_name, None);
        let p = observe_pod(&pod(Some("n"), &[("Ready", "True", None, None)]));
        let s = next_status(
            &Default::default(),
            &Situation::Replacing(&p),
            &inputs(None),
            ts(1),
        );
        assert_eq!((s.phase, s.endpoint), (Some(Phase::Terminating), None));
        assert_eq!(
            (s.node_name, s.public_address),
            (None, None),
            "the next pod may land on another node"
        );
        let s = next_status(&Default::default(), &Situation::NoPod, &inputs(None), ts(1));
        assert_eq!(s.phase, Some(Phase::Pending));
    }

    #[test]
    fn rejected_spec_fails_until_a_pod_is_accepted() {
        let fresh = next_status(&Default::default(), &Situation::NoPod, &inputs(None), ts(1));
        assert!(
            fresh.conditions.iter().all(|c| c.type_ != SPEC_VALID),
            "absent until a rejection"
        );
        let why = "Pod \"cam1-p2pcamera\" is invalid: spec.nodeSelector: Invalid value".to_string();
        let rejected = next_status(
            &fresh,
            &Situation::InvalidSpec {
                message: why.clone(),
            },
            &inputs(None),
            ts(5),
        );
        assert_eq!(rejected.phase, Some(Phase::Failed));
        let c = cond(&rejected, SPEC_VALID);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            ("False", REASON_POD_REJECTED, why.as_str())
        );
        assert_eq!(c.last_transition_time, Time(ts(5)));
        assert!(
            rejected
                .message
                .as_deref()
                .unwrap_or_default()
                .contains(&why)
        );
        assert_eq!(
            crash_backoff_remaining(&rejected, ts(6), Duration::from_secs(60)),
            None,
            "no crash backoff"
        );
        let again = next_status(
            &rejected,
            &Situation::InvalidSpec { message: why },
            &inputs(None),
            ts(50),
        );
        assert_eq!(again, rejected, "the same rejection writes nothing new");
        let accepted = next_status(&rejected, &Situation::NoPod, &inputs(None), ts(60));
        let c = cond(&accepted, SPEC_VALID);
        assert_eq!(
            (c.status.as_str(), c.last_transition_time.clone()),
            ("True", Time(ts(60)))
        );
        assert_eq!(accepted.phase, Some(Phase::Pending));
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        assert_eq!(endpoint("fd00::1", 40000), "https://[fd00::1]:40000");
        assert_eq!(endpoint("10.1.2.3", 40000), "https://10.1.2.3:40000");
    }
}
