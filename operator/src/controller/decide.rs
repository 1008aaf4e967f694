//! What one reconcile does, decided without a client: [`decide`] turns what was observed into a
//! [`Plan`] (what to do with the pod, the next status, the wake annotation, when to come back).
//!
//! The facts a decision may hang on that need I/O or shared state: the public address of a node,
//! a ready camera pod's activity, another port for a session whose port is taken on the nodes
//! that fit ([`crate::ports::UdpPortAllocator::other_port`]), a warm pod claimed, and the node's
//! public address handed to a starting pod. `decide` asks for them: it answers
//! [`Decision::Lookup`] when it needs one that [`Observed::lookups`] does not hold yet, and the
//! executor (`controller/execute.rs`) puts the answer there and calls `decide` again. It asks only
//! on the branches that use the answer, and never twice for the same fact, so one reconcile
//! performs at most one node read, one activity poll, one port move, one claim and one hand-over.
//! Applying the pod is the one action whose outcome changes the plan: when the API server refuses
//! the pod as invalid (`422`), [`rejected`] is the plan instead.
//!
//! The branches, first match wins:
//! 0. The session does not fit its CameraClass ([`crate::class_fit`]): no pod (a live one is
//!    deleted), phase Failed with `Accepted=False` and the misfit's reason; wait for a change of
//!    the session or of a class.
//! 1. Idle (phase Idle, spec unchanged, no `p2pcamera.io/wake` annotation): no pod (a left-over
//!    one is deleted); wait for a change.
//! 2. A live pod crash-loops ([`status::crash_loop`]): delete it, phase Failed, come back after
//!    the crash backoff.
//! 3. Within the crash backoff while the crashed pod is going away or gone: stay Failed until the
//!    backoff ends.
//! 4. No pod, and the session's class has a warm pool it may claim from
//!    ([`claim::pool_for`]): claim an idle warm pod
//!    ([`Lookup::WarmPod`], answered by the executor, which claims as it answers). A claimed pod
//!    is reported like a running one (usually Ready at once) with `WarmStart=True`; when none
//!    could be claimed, the session goes on as below with `WarmStart=False` and the reason
//!    (`WarmPoolEmpty`, `WarmClaimFailed`), written in its first status.
//!
//!    No pod: apply the desired one (field manager [`p2pcamera_api::objects::FIELD_MANAGER`]),
//!    unless this operator applied the same pod moments ago and its cache does not show it yet
//!    ([`Observed::applied_pod`]; then look again when that memory ends, if no pod event came).
//!    A new session's first status waits for its pod: the status written now would only say
//!    "creating the pod", and the pod's watch event brings the next reconcile within moments
//!    (its port is recorded on the pod, `p2pcamera.io/port`).
//! 5. The pod is terminating: phase Terminating until it is gone.
//! 6. A live pod whose `p2pcamera.io/pod-hash` differs from the desired pod's, or a claimed warm
//!    pod's from [`desired::claimed_pod_hash`] (the spec or the port changed): delete it. The
//!    hash depends only on the spec and the port, so an unchanged spec never replaces a pod (no
//!    flapping).
//!
//!    With `--public-ip-source node`, a session's own pod that runs (its container started) and
//!    is not ready waits for its node's public address: it is handed over
//!    ([`Lookup::PublicAddress`], the node's address from [`Lookup::NodeAddress`], its host IP
//!    when the node names none), and tried again after [`ADDRESS_RETRY`] when the pod did not
//!    take it (its server may not listen yet); the pod then turns ready by itself. The pod
//!    starts once, on whichever node the scheduler picks (a claimed pod got the address with its
//!    claim).
//! 7. The scheduler cannot place the pod because its port is taken on the nodes that fit
//!    ([`status::port_conflict`]): the session moves to another port ([`Lookup::OtherPort`]) and
//!    the pod is deleted, to be created again on the new port (reason `PortConflict`). When the
//!    allocator has no other port for it, the pod stays and the session waits
//!    ([`PortWait::Waiting`], reason `NoFreePort`, or `NoFreeGpu` when the scheduler also counts
//!    nodes without a free GPU).
//! 8. A ready pod with `idleTimeout`: its activity is polled ([`Lookup::Activity`], at most every
//!    `--idle-poll-interval`); idle too long -> delete it, phase Idle (the Secret and port stay).
//!    A ready pod whose first frame the start times wait for ([`Observed::awaits_first_frame`])
//!    is polled the same way, for the pod's first answer and frame. Every answer's connection
//!    (direct or relayed, [`status::connection`]) goes into `status.connection`, which is
//!    written only when it changed.
//! 9. Otherwise the pod runs: status from its observation; a ready pod with `idleTimeout` is
//!    looked at again after the poll interval, any other after [`RESYNC`]. A new pod's normal
//!    progress (waiting for the scheduler, starting) is not written over a status that says
//!    nothing yet or `Pending` until the pod is [`status::STATUS_SETTLE`] old
//!    ([`status::settling`]; looked at again then): most sessions go from no status to Ready in
//!    one write.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::applied_pods::APPLIED_POD_MEMORY;
use crate::class_fit::{NotAccepted, ResolvedClass};
use crate::config::{Config, PublicIpSource, parse_duration};
use crate::crd::{CameraSession, CameraSessionStatus, Phase};
use crate::desired::{self, BuildError};
use crate::pool::claim::{self, PoolTarget};
use crate::status::{self, PodObservation, Scheduling, Situation, StatusInputs};
use p2pcamera_api::objects::{ANNOTATION_POD_HASH, ANNOTATION_WAKE};
use p2pcamera_api::relay::ConnectionPath;

/// When a session whose pod is being replaced is looked at again.
pub const REPLACING_RECHECK: Duration = Duration::from_secs(2);
/// When the hand-over of a node's public address to a pod that did not take it is tried again.
pub const ADDRESS_RETRY: Duration = Duration::from_millis(250);
/// When a session with nothing to wait for is looked at again (pod and session changes trigger
/// a reconcile at once anyway).
pub const RESYNC: Duration = Duration::from_secs(300);
/// The shortest interval between two activity polls of one session.
pub const MIN_IDLE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The interval between activity polls of one session: `--idle-poll-interval`, at least
/// [`MIN_IDLE_POLL_INTERVAL`].
pub fn idle_poll_interval(config: &Config) -> Duration {
    config.idle_poll_interval.max(MIN_IDLE_POLL_INTERVAL)
}

/// Everything one reconcile of a session decides from.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// The session, as cached.
    pub session: &'a CameraSession,
    /// Its CameraClass, or why it does not fit one ([`crate::class_fit`]).
    pub class: &'a Result<ResolvedClass, NotAccepted>,
    /// The operator's configuration.
    pub config: &'a Config,
    /// The session's status as this operator knows it (the cached one, or the one it wrote last
    /// while the cache lags: [`crate::status_memo`]).
    pub prev: &'a CameraSessionStatus,
    /// The session's port, claimed or newly allocated.
    pub port: u16,
    /// The session's pod, as cached.
    pub pod: Option<&'a Pod>,
    /// The `p2pcamera.io/pod-hash` of the pod this operator applied for the session moments ago
    /// and the cache does not show yet ([`crate::applied_pods`]).
    pub applied_pod: Option<&'a str>,
    /// The time of the reconcile.
    pub now: Timestamp,
    /// The operator waits for the first frame of the session's start, or for how its camera is
    /// connected ([`crate::start_times::StartClock::awaits_first_frame`]): a ready pod is polled
    /// for them.
    pub awaits_first_frame: bool,
    /// The answers to the lookups [`decide`] asked for so far.
    pub lookups: Lookups,
}

/// Answers to the [`Lookup`]s of one reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lookups {
    /// The outcome of claiming a warm-pool pod.
    pub warm_claim: Option<WarmClaim>,
    /// The public address of a node.
    pub node_address: Option<NodeAddress>,
    /// The activity poll of the session's pod.
    pub activity: Option<Polled>,
    /// The allocator's answer to a port conflict.
    pub other_port: Option<OtherPort>,
    /// The outcome of handing the node's public address to the session's pod.
    pub public_address: Option<HandedAddress>,
}

/// What handing a node's public address to a pod gave ([`crate::pod_api::hand_public_address`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandedAddress {
    /// The pod advertises the address.
    Accepted,
    /// The pod did not take it (not listening yet, refused, or advertises another address).
    Failed(String),
}

/// What claiming a warm-pool pod for the session gave ([`crate::pool::claim`]).
#[derive(Clone, Debug, PartialEq)]
pub enum WarmClaim {
    /// The session claimed this pod (as the claim write returned it) and the pod accepted the
    /// session; the session's port is the pod's.
    Claimed {
        /// The claimed pod.
        pod: Box<Pod>,
        /// Its port.
        port: u16,
        /// The pod had warmed up the session's own filter.
        warm_filter: bool,
    },
    /// No pod was claimed; the session starts its own.
    Missed {
        /// `WarmStart=False` reason.
        reason: &'static str,
        /// What happened.
        message: String,
    },
}

/// Another port for a session whose port the scheduler found taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherPort {
    /// The port found taken.
    pub taken: u16,
    /// The session's new port; `None` when it may not move again during this wait.
    pub port: Option<u16>,
}

/// A node's public address, as read ([`crate::node_addresses::public_address`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    /// The node.
    pub node: String,
    /// Its public address; `None` when the node (or an address) is not there.
    pub address: Option<String>,
}

/// What an activity poll gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Polled {
    /// No answer: the session was polled less than the poll interval ago, or the poll failed.
    NoAnswer,
    /// The camera pod's answer.
    Answer(Activity),
}

/// A camera pod's report of its camera.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Activity {
    /// A camera is connected now.
    pub camera_connected: bool,
    /// When a camera was last connected (or the pod started, when none has been yet).
    pub last_active: Option<Timestamp>,
    /// Unix milliseconds of the pod's first answer, and of its first filtered frame.
    pub first_answer_ms: Option<u64>,
    pub first_frame_ms: Option<u64>,
    /// How the camera is connected (the live or last connection); `None` before the first.
    pub connection: Option<ConnectionPath>,
}

/// A fact [`decide`] needs that only I/O gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The public address of `node` (answer in [`Lookups::node_address`]).
    NodeAddress {
        /// The node.
        node: String,
    },
    /// The camera activity of the pod at `endpoint` (answer in [`Lookups::activity`]).
    Activity {
        /// `https://<host IP>:<port>` of the camera pod.
        endpoint: String,
    },
    /// Another port for the session, whose port `taken` the scheduler found taken on the nodes
    /// that fit (answer in [`Lookups::other_port`]; the allocator moves the session as it answers).
    OtherPort {
        /// The session's port now.
        taken: u16,
    },
    /// Hand `address`, the public address of its node, to the session's pod at `endpoint`, which
    /// runs and waits for it (answer in [`Lookups::public_address`]).
    PublicAddress {
        /// `https://<host IP>:<port>` of the camera pod.
        endpoint: String,
        /// The node's public address.
        address: String,
    },
    /// Claim an idle warm pod of `pool` for the session, which has no pod (answer in
    /// [`Lookups::warm_claim`]; the executor claims as it answers).
    WarmPod {
        /// The pool.
        pool: PoolTarget,
    },
}

/// What [`decide`] answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Answer this lookup, then decide again.
    Lookup(Lookup),
    /// Carry out this plan.
    Plan(Box<Plan>),
}

/// What a reconcile does, in this order: change the pod, write the status (when it differs from
/// [`Observed::prev`]), remove the wake annotation, and come back as `then` says.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What happens to the pod.
    pub pod: PodChange,
    /// The session's next status.
    pub status: CameraSessionStatus,
    /// The session carries the `p2pcamera.io/wake` annotation, acted on by this plan: remove it.
    /// Removed after the status write, so a failure before that retries with the annotation.
    pub clear_wake: bool,
    /// When to reconcile again without a trigger.
    pub then: Action,
    /// What the plan means for the session's wait for a port.
    pub port_wait: PortWait,
}

/// What a plan means for the session's wait for a port ([`crate::ports`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortWait {
    /// Nothing changes.
    Unchanged,
    /// The pod is bound: the wait is over.
    Over,
    /// The port is taken on the nodes that fit and the session may not move again: it waits
    /// until a port comes free on a node.
    Waiting,
}

/// What happens to the session's pod.
#[derive(Clone, Debug, PartialEq)]
pub enum PodChange {
    /// Nothing.
    Keep,
    /// Server-side apply of this pod; see [`rejected`] for a `422`.
    Apply(Box<Pod>),
    /// Delete the pod (this exact one: the delete names its uid).
    Delete {
        /// Pod name.
        name: String,
        /// Pod uid, the delete's precondition.
        uid: Option<String>,
        /// Why.
        reason: DeleteReason,
    },
}

/// Why a pod is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// The session is Idle and a pod is still there.
    Idle,
    /// The pod crash-loops.
    CrashLoop,
    /// The pod is not the desired one (the spec or the port changed).
    Replace,
    /// No camera within the idle timeout.
    IdleTimeout,
    /// The session does not fit its CameraClass (any more).
    NotAccepted,
    /// The scheduler found the pod's port taken on the nodes that fit; the session moved.
    PortConflict,
}

/// Decides what the reconcile of `observed` does, or which fact it needs first.
pub fn decide(observed: &Observed<'_>) -> Result<Decision, BuildError> {
    match observed.plan() {
        Ok(plan) => Ok(Decision::Plan(Box::new(plan))),
        Err(Unfinished::Lookup(lookup)) => Ok(Decision::Lookup(lookup)),
        Err(Unfinished::Build(error)) => Err(error),
    }
}

/// The plan once the API server refused the pod of [`PodChange::Apply`] as invalid (`422`), with
/// its `message`: the spec is at fault, so the session is Failed (`SpecValid=False` with the
/// message) and waits for a change instead of retrying.
pub fn rejected(observed: &Observed<'_>, message: String) -> Plan {
    observed.plan_for(
        PodChange::Keep,
        &Situation::InvalidSpec { message },
        None,
        None,
        Action::await_change(),
    )
}

/// Why [`Observed::plan`] has no plan yet.
enum Unfinished {
    /// It needs this fact.
    Lookup(Lookup),
    /// A desired object could not be built.
    Build(BuildError),
}

impl From<BuildError> for Unfinished {
    fn from(error: BuildError) -> Self {
        Self::Build(error)
    }
}

impl Observed<'_> {
    fn wake(&self) -> bool {
        self.session.annotations().contains_key(ANNOTATION_WAKE)
    }

    /// The address a ready pod already serves, as its Ready status recorded it for this pod on
    /// this node: a pod is handed its node's address once, before it is ready, and serves that
    /// one from then on, so its node is not read again (a later change of the node's address
    /// would only make the status name an address the pod does not serve).
    fn served_address(&self, obs: &PodObservation, node: &str) -> Option<String> {
        let prev = self.prev;
        let recorded = obs.ready
            && prev.phase == Some(Phase::Ready)
            && prev.pod_name.as_deref() == Some(obs.name.as_str())
            && prev.node_name.as_deref() == Some(node);
        recorded.then(|| prev.public_address.clone()).flatten()
    }

    /// The public address of `node` from the lookups, or the lookup that gives it.
    fn node_address(&self, node: &str) -> Result<Option<String>, Unfinished> {
        match &self.lookups.node_address {
            Some(answer) if answer.node == node => Ok(answer.address.clone()),
            _ => Err(Unfinished::Lookup(Lookup::NodeAddress {
                node: node.to_string(),
            })),
        }
    }

    fn plan_for(
        &self,
        pod: PodChange,
        situation: &Situation<'_>,
        public_address: Option<&str>,
        last_active: Option<Timestamp>,
        then: Action,
    ) -> Plan {
        let inputs = StatusInputs {
            generation: self.session.metadata.generation,
            port: self.port,
            gpu_resource: match self.class {
                Ok(class) => desired::gpu_resource(class, self.config),
                Err(_) => &self.config.gpu_resource_name,
            },
            public_address,
            last_active,
            connection: match &self.lookups.activity {
                Some(Polled::Answer(report)) => report.connection,
                _ => None,
            },
        };
        Plan {
            pod,
            status: status::next_status(self.prev, situation, &inputs, self.now),
            clear_wake: self.wake(),
            then,
            port_wait: PortWait::Unchanged,
        }
    }

    fn plan(&self) -> Result<Plan, Unfinished> {
        let (prev, config) = (self.prev, self.config);
        let class = match self.class {
            Ok(class) => class,
            Err(misfit) => {
                let delete = self
                    .pod
                    .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                    .map_or(PodChange::Keep, |pod| {
                        delete(pod, DeleteReason::NotAccepted)
                    });
                let situation = Situation::NotAccepted {
                    reason: misfit.reason(),
                    message: misfit.to_string(),
                };
                return Ok(self.plan_for(delete, &situation, None, None, Action::await_change()));
            }
        };
        let stays_idle = !self.wake()
            && prev.phase == Some(Phase::Idle)
            && prev.observed_generation == self.session.metadata.generation;
        let observation = self.pod.map(status::observe_pod);
        let live = self
            .pod
            .zip(observation.as_ref())
            .filter(|(_, obs)| !obs.terminating);
        if stays_idle {
            let delete = self
                .pod
                .map_or(PodChange::Keep, |pod| delete(pod, DeleteReason::Idle));
            return Ok(self.plan_for(delete, &Situation::Idle, None, None, Action::await_change()));
        }
        if let Some((pod, obs)) = live
            && let Some(message) = status::crash_loop(obs, config.crash_restart_limit)
        {
            let delete = delete(pod, DeleteReason::CrashLoop);
            let situation = Situation::CrashLoop { message };
            return Ok(self.plan_for(
                delete,
                &situation,
                None,
                None,
                Action::requeue(config.crash_backoff),
            ));
        }
        // During the crash backoff the crashed pod is going away or gone, and the session stays Failed.
        if live.is_none()
            && let Some(left) =
                status::crash_backoff_remaining(prev, self.now, config.crash_backoff)
        {
            let message = prev.message.clone().unwrap_or_default();
            let situation = Situation::CrashLoop { message };
            return Ok(self.plan_for(
                PodChange::Keep,
                &situation,
                None,
                None,
                Action::requeue(left),
            ));
        }
        match (live, &observation) {
            (_, None) => self.create(class),
            (None, Some(obs)) => Ok(self.plan_for(
                PodChange::Keep,
                &Situation::Replacing(obs),
                None,
                None,
                Action::requeue(REPLACING_RECHECK),
            )),
            (Some((pod, obs)), _) => self.running(class, pod, obs),
        }
    }

    /// No pod: claim a warm one, or apply the desired one.
    fn create(&self, class: &ResolvedClass) -> Result<Plan, Unfinished> {
        let prev = self.prev;
        // Not while the session's own pod, applied moments ago, is not in the cache yet.
        let warm = match self.applied_pod {
            None => claim::pool_for(self.session, class, self.config),
            Some(_) => None,
        };
        let missed = match (warm, &self.lookups.warm_claim) {
            (None, _) => None,
            (Some(pool), None) => return Err(Unfinished::Lookup(Lookup::WarmPod { pool })),
            (
                Some(_),
                Some(WarmClaim::Claimed {
                    pod,
                    port,
                    warm_filter,
                }),
            ) => {
                // The pod's activity dates from its start in the pool, before the session
                // existed: the idle clock starts with the claim (PodReady in the next status).
                let mut lookups = self.lookups.clone();
                lookups.activity = Some(Polled::NoAnswer);
                let claimed = Observed {
                    pod: Some(pod),
                    port: *port,
                    lookups,
                    ..self.clone()
                };
                let obs = status::observe_pod(pod);
                let mut plan = claimed.running(class, pod, &obs)?;
                let message = if *warm_filter {
                    format!("claimed warm pod {}", obs.name)
                } else {
                    format!(
                        "claimed warm pod {}; it loads the session's filter (the pool warms another)",
                        obs.name
                    )
                };
                self.set_warm_start(
                    &mut plan.status,
                    true,
                    claim::REASON_WARM_POD_CLAIMED,
                    message,
                );
                return Ok(plan);
            }
            (Some(_), Some(WarmClaim::Missed { reason, message })) => Some((*reason, message)),
        };
        let desired = desired::build_pod(self.session, class, self.port, self.config)?;
        let (change, then) = if self.applied_pod.is_some() && self.applied_pod == pod_hash(&desired)
        {
            (PodChange::Keep, Action::requeue(APPLIED_POD_MEMORY))
        } else {
            (PodChange::Apply(Box::new(desired)), Action::requeue(RESYNC))
        };
        let mut plan = self.plan_for(change, &Situation::NoPod, None, None, then);
        match missed {
            // A cold start of a class with a pool says why, in the first status.
            Some((reason, message)) => {
                self.set_warm_start(&mut plan.status, false, reason, message.clone());
            }
            None if *prev == CameraSessionStatus::default() => {
                plan.status = CameraSessionStatus::default();
            }
            None => {}
        }
        Ok(plan)
    }

    /// Sets the `WarmStart` condition of a session of a class with a warm pool.
    fn set_warm_start(
        &self,
        status: &mut CameraSessionStatus,
        claimed: bool,
        reason: &str,
        message: String,
    ) {
        let condition = Condition {
            type_: claim::WARM_START.to_string(),
            status: if claimed { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: None,
            last_transition_time: Time(self.now),
        };
        status::set_condition(
            &mut status.conditions,
            condition,
            self.session.metadata.generation,
            self.now,
        );
    }

    /// A live pod: replace it when it is not the desired one, delete it when idle too long, else
    /// report it.
    fn running(
        &self,
        class: &ResolvedClass,
        pod: &Pod,
        obs: &PodObservation,
    ) -> Result<Plan, Unfinished> {
        let (session, config, port) = (self.session, self.config, self.port);
        let bound_node = obs
            .node_name
            .as_deref()
            .filter(|_| obs.scheduling == Scheduling::Bound);
        let public_address = match (bound_node, config.public_ip_source) {
            (None, _) => None,
            (Some(_), PublicIpSource::Host) => obs.host_ip.clone(),
            (Some(node), PublicIpSource::Node) => match self.served_address(obs, node) {
                Some(address) => Some(address),
                None => self.node_address(node)?,
            },
        };
        // A claimed pool pod got the node's public address with its session; only a change of
        // the spec (or port) replaces it, as it replaces a session's own pod.
        let claimed = claim::is_claimed(pod);
        let wanted_hash = if claimed {
            desired::claimed_pod_hash(session, class, port)?
        } else {
            let wanted = desired::build_pod(session, class, port, config)?;
            pod_hash(&wanted).unwrap_or_default().to_owned()
        };
        if pod_hash(pod) != Some(wanted_hash.as_str()) {
            let delete = delete(pod, DeleteReason::Replace);
            let then = Action::requeue(REPLACING_RECHECK);
            return Ok(self.plan_for(delete, &Situation::Replacing(obs), None, None, then));
        }
        // A session's own pod waits, once it runs, for its node's public address (its host IP
        // when the node names none).
        let handing = match (
            public_address.as_ref().or(obs.host_ip.as_ref()),
            &obs.host_ip,
        ) {
            (Some(address), Some(host_ip))
                if !claimed
                    && config.public_ip_source == PublicIpSource::Node
                    && obs.running
                    && !obs.ready =>
            {
                match &self.lookups.public_address {
                    None => {
                        return Err(Unfinished::Lookup(Lookup::PublicAddress {
                            endpoint: status::endpoint(host_ip, port),
                            address: address.clone(),
                        }));
                    }
                    Some(handed) => Some(handed),
                }
            }
            _ => None,
        };
        let mut plan = self.report(pod, obs, bound_node, public_address)?;
        if let Some(HandedAddress::Failed(_)) = handing {
            // The pod may still be starting its server: try again soon.
            plan.then = Action::requeue(ADDRESS_RETRY);
        }
        Ok(plan)
    }

    /// The running pod is the desired one: move it when the scheduler finds its port taken,
    /// delete it when idle too long, else report it.
    fn report(
        &self,
        pod: &Pod,
        obs: &PodObservation,
        bound_node: Option<&str>,
        public_address: Option<String>,
    ) -> Result<Plan, Unfinished> {
        let (session, config, port) = (self.session, self.config, self.port);
        if let Scheduling::Unschedulable { message, .. } = &obs.scheduling
            && status::port_conflict(message)
        {
            return match &self.lookups.other_port {
                Some(OtherPort {
                    taken,
                    port: Some(to),
                }) if *taken == port => {
                    let moved = Observed {
                        port: *to,
                        ..self.clone()
                    };
                    let situation = Situation::PortMove {
                        pod: obs,
                        from: port,
                    };
                    let delete = delete(pod, DeleteReason::PortConflict);
                    Ok(moved.plan_for(
                        delete,
                        &situation,
                        None,
                        None,
                        Action::requeue(REPLACING_RECHECK),
                    ))
                }
                Some(OtherPort { taken, port: None }) if *taken == port => {
                    let mut plan = self.plan_for(
                        PodChange::Keep,
                        &Situation::Running(obs),
                        None,
                        None,
                        Action::await_change(),
                    );
                    plan.port_wait = PortWait::Waiting;
                    Ok(plan)
                }
                _ => Err(Unfinished::Lookup(Lookup::OtherPort { taken: port })),
            };
        }
        let timeout = session
            .spec
            .idle_timeout
            .as_deref()
            .and_then(|t| parse_duration(t).ok());
        let mut last_active = None;
        let mut idle = false;
        // Polled for the idle timeout, and until the first frame for the start times.
        let polled = obs.ready && (timeout.is_some() || self.awaits_first_frame);
        if let (true, Some(host_ip)) = (polled, obs.host_ip.as_deref()) {
            match (&self.lookups.activity, timeout) {
                (None, _) => {
                    let endpoint = status::endpoint(host_ip, port);
                    return Err(Unfinished::Lookup(Lookup::Activity { endpoint }));
                }
                (Some(Polled::NoAnswer), _) | (Some(Polled::Answer(_)), None) => {}
                (Some(Polled::Answer(report)), Some(timeout)) => {
                    last_active = if report.camera_connected {
                        Some(self.now)
                    } else {
                        report.last_active
                    };
                    let known = last_active.or(self.prev.last_active_time.as_ref().map(|t| t.0));
                    let ready_since = status::ready_since(self.prev);
                    idle = status::idle_expired(
                        self.now,
                        timeout,
                        report.camera_connected,
                        known,
                        ready_since,
                    );
                }
            }
        }
        let (change, situation, then) = if idle {
            (
                delete(pod, DeleteReason::IdleTimeout),
                Situation::Idle,
                Action::await_change(),
            )
        } else if polled {
            (
                PodChange::Keep,
                Situation::Running(obs),
                Action::requeue(idle_poll_interval(config)),
            )
        } else {
            (
                PodChange::Keep,
                Situation::Running(obs),
                Action::requeue(RESYNC),
            )
        };
        let mut plan = self.plan_for(
            change,
            &situation,
            public_address.as_deref(),
            last_active,
            then,
        );
        if bound_node.is_some() {
            plan.port_wait = PortWait::Over;
        }
        let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if let Some(left) = status::settling(self.prev, &plan.status, created, self.now) {
            plan.status = self.prev.clone();
            plan.then = Action::requeue(left);
        }
        Ok(plan)
    }
}

/// The pod's `p2pcamera.io/pod-hash`.
pub fn pod_hash(pod: &Pod) -> Option<&str> {
    desired::pod_annotation(pod, ANNOTATION_POD_HASH)
}

fn delete(pod: &Pod, reason: DeleteReason) -> PodChange {
    PodChange::Delete {
        name: pod.name_any(),
        uid: pod.metadata.uid.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        HOST_IP, NODE, PORT, PUBLIC_IP, PodFixture, Snapshot, camera_pod, config, session, ts,
    };
    use crate::status::{
        HEALTHY, IDLE, POD_READY, REASON_CRASH_LOOP, REASON_IDLE_TIMEOUT, REASON_POD_REJECTED,
        SPEC_VALID,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use serde_json::json;

    fn condition<'a>(status: &'a CameraSessionStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} in {status:?}"))
    }

    fn applied(plan: &Plan) -> &Pod {
        match &plan.pod {
            PodChange::Apply(pod) => pod,
            other => panic!("expected an apply, got {other:?}"),
        }
    }

    fn deleted(plan: &Plan) -> DeleteReason {
        match &plan.pod {
            PodChange::Delete { name, uid, reason } => {
                assert_eq!(
                    (name.as_str(), uid.as_deref()),
                    ("cam1-p2pcamera", Some("pod-uid-1")),
                    "the observed pod"
                );
                *reason
            }
            other => panic!("expected a delete, got {other:?}"),
        }
    }

    fn node_lookup() -> Decision {
        Decision::Lookup(Lookup::NodeAddress { node: NODE.into() })
    }

    fn activity_lookup() -> Decision {
        Decision::Lookup(Lookup::Activity {
            endpoint: format!("https://{HOST_IP}:{PORT}"),
        })
    }

    // Branch 0: the session does not fit its class.

    #[test]
    fn a_session_that_does_not_fit_its_class_gets_no_pod_and_loses_a_running_one() {
        let misfit = NotAccepted::FilterNotAllowed {
            class: "blur-only".into(),
            filter: "style",
        };
        let new = Snapshot::new(session(json!({}))).not_accepted(misfit.clone());
        let plan = new.plan();
        assert_eq!(plan.pod, PodChange::Keep, "nothing is created");
        assert_eq!(plan.status.phase, Some(Phase::Failed));
        assert_eq!(plan.status.reason.as_deref(), Some("FilterNotAllowed"));
        let accepted = condition(&plan.status, status::ACCEPTED);
        assert_eq!(
            (accepted.status.as_str(), accepted.message.as_str()),
            ("False", misfit.to_string().as_str())
        );
        assert_eq!(plan.then, Action::await_change());
        let pod = camera_pod(&session(json!({}))).bound(NODE, HOST_IP).ready();
        let running = new.with_pod(pod).plan();
        assert_eq!(deleted(&running), DeleteReason::NotAccepted);
        // Fitting again: Accepted turns True and the pod comes back.
        let fits = Snapshot::new(session(json!({})))
            .with_prev(plan.status.clone())
            .plan();
        assert!(matches!(fits.pod, PodChange::Apply(_)));
        assert_eq!(condition(&fits.status, status::ACCEPTED).status, "True");
    }

    // Branch 4: no pod.

    #[test]
    fn a_new_session_gets_its_pod_without_any_lookup() {
        let plan = Snapshot::new(session(json!({}))).plan();
        let pod = applied(&plan);
        assert_eq!(
            pod,
            &desired::build_pod(
                &session(json!({})),
                &ResolvedClass::built_in(),
                PORT,
                &config(),
            )
            .unwrap()
        );
        assert_eq!(pod.spec.as_ref().unwrap().node_name, None, "not pinned");
        assert_eq!(
            plan.status,
            CameraSessionStatus::default(),
            "the first status waits for the pod"
        );
        assert_eq!(plan.then, Action::requeue(RESYNC));
        assert!(!plan.clear_wake);
        // A session that had a pod before (deleted by someone) says it gets a new one.
        let ready = CameraSessionStatus::ready_since(ts(900));
        let plan = Snapshot::new(session(json!({}))).with_prev(ready).plan();
        assert!(matches!(plan.pod, PodChange::Apply(_)));
        assert_eq!(plan.status.phase, Some(Phase::Pending));
        assert_eq!(plan.status.udp_port, Some(PORT));
        assert_eq!(plan.status.observed_generation, Some(1));
    }

    #[test]
    fn a_pod_applied_moments_ago_is_not_applied_again_before_the_cache_shows_it() {
        let new = Snapshot::new(session(json!({})));
        let first = new.plan();
        let hash = pod_hash(applied(&first)).unwrap().to_owned();
        let again = new.clone().with_applied_pod(&hash).plan();
        assert_eq!(again.pod, PodChange::Keep);
        assert_eq!(again.status, first.status);
        assert_eq!(
            again.then,
            Action::requeue(APPLIED_POD_MEMORY),
            "looks again"
        );
        // A pod that is not the one applied (the spec changed meanwhile) is applied.
        let changed = Snapshot::new(session(json!({"filter": {"name": "passthrough"}})))
            .with_applied_pod(&hash);
        assert!(matches!(changed.plan().pod, PodChange::Apply(_)));
    }

    #[test]
    fn host_addresses_never_look_nodes_up_nor_hand_an_address_over() {
        let host = crate::config::Config {
            public_ip_source: PublicIpSource::Host,
            ..config()
        };
        let new = Snapshot::new(session(json!({}))).with_config(host.clone());
        let env = applied(&new.plan()).spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap_or_default();
        assert!(
            env.iter()
                .all(|v| v.name != p2pcamera_api::pod_env::AWAIT_PUBLIC_IP),
            "the pod does not wait for an address: {env:?}"
        );
        let pod = camera_pod(&session(json!({})))
            .bound(NODE, HOST_IP)
            .running();
        let plan = Snapshot::new(session(json!({})))
            .with_config(host)
            .with_pod(pod)
            .plan();
        assert_eq!(plan.pod, PodChange::Keep);
        assert_eq!(plan.status.public_address.as_deref(), Some(HOST_IP));
    }

    #[test]
    fn a_pod_refused_as_invalid_fails_the_session_until_its_spec_changes() {
        let snapshot = Snapshot::new(session(json!({"nodeSelector": {"bad key!": "x"}})));
        assert!(matches!(snapshot.plan().pod, PodChange::Apply(_)));
        let message =
            "Pod \"cam1-p2pcamera\" is invalid: spec.nodeSelector: Invalid value".to_string();
        let plan = rejected(&snapshot.observed(), message.clone());
        assert_eq!(plan.pod, PodChange::Keep);
        assert_eq!(plan.then, Action::await_change());
        assert_eq!(plan.status.phase, Some(Phase::Failed));
        let valid = condition(&plan.status, SPEC_VALID);
        assert_eq!(
            (
                valid.status.as_str(),
                valid.reason.as_str(),
                valid.message.as_str()
            ),
            ("False", REASON_POD_REJECTED, message.as_str())
        );
        // Reconciled again unchanged (e.g. after a restart): the same pod, refused the same way,
        // writes nothing new.
        let again = rejected(
            &snapshot
                .with_prev(plan.status.clone())
                .at(ts(2000))
                .observed(),
            message,
        );
        assert_eq!(again.status, plan.status);
    }

    // Branch 1: idle.

    #[test]
    fn an_idle_session_stays_without_a_pod_and_waits_for_a_change() {
        let idle = CameraSessionStatus::idle();
        let plan = Snapshot::new(session(json!({})))
            .with_prev(idle.clone())
            .plan();
        assert_eq!(
            (plan.pod, plan.then),
            (PodChange::Keep, Action::await_change())
        );
        assert_eq!(plan.status.phase, Some(Phase::Idle));
        assert_eq!(condition(&plan.status, IDLE).reason, REASON_IDLE_TIMEOUT);
        // A pod that is still there (e.g. created by a lagging replica) goes.
        let pod = camera_pod(&session(json!({}))).bound(NODE, HOST_IP).ready();
        let plan = Snapshot::new(session(json!({})))
            .with_prev(idle)
            .with_pod(pod)
            .plan();
        assert_eq!(deleted(&plan), DeleteReason::Idle);
        assert_eq!(plan.status.phase, Some(Phase::Idle));
    }

    #[test]
    fn the_wake_annotation_or_a_spec_change_brings_the_pod_back() {
        let idle = CameraSessionStatus::idle();
        let woken = Snapshot::new(session(json!({})).woken())
            .with_prev(idle.clone())
            .plan();
        assert!(matches!(woken.pod, PodChange::Apply(_)));
        assert_eq!(woken.status.phase, Some(Phase::Pending));
        assert_eq!(condition(&woken.status, IDLE).status, "False");
        assert!(woken.clear_wake, "the annotation is removed once acted on");
        let changed = Snapshot::new(session(json!({})).changed())
            .with_prev(idle)
            .plan();
        assert!(matches!(changed.pod, PodChange::Apply(_)));
        assert_eq!(changed.status.observed_generation, Some(2));
        assert!(!changed.clear_wake);
    }

    // Branches 2 and 3: crash loop and its backoff.

    #[test]
    fn a_crash_looping_pod_is_deleted_and_the_session_fails() {
        let pod = camera_pod(&session(json!({})))
            .bound(NODE, HOST_IP)
            .restarted(5);
        let plan = Snapshot::new(session(json!({}))).with_pod(pod).plan();
        assert_eq!(deleted(&plan), DeleteReason::CrashLoop);
        assert_eq!(plan.then, Action::requeue(config().crash_backoff));
        assert_eq!(plan.status.phase, Some(Phase::Failed));
        let healthy = condition(&plan.status, HEALTHY);
        assert_eq!(
            (healthy.status.as_str(), healthy.reason.as_str()),
            ("False", REASON_CRASH_LOOP)
        );
        assert!(
            plan.status
                .message
                .as_deref()
                .unwrap()
                .contains("restarted 5 times"),
            "{:?}",
            plan.status.message
        );
        // Fewer restarts than the limit: still running.
        let pod = camera_pod(&session(json!({})))
            .bound(NODE, HOST_IP)
            .restarted(4);
        let plan = Snapshot::new(session(json!({})))
            .with_pod(pod)
            .with_node_address(NODE, Some(HOST_IP))
            .plan();
        assert_eq!(plan.pod, PodChange::Keep);
        assert_eq!(plan.status.phase, Some(Phase::Starting));
    }

    #[test]
    fn a_failed_pod_counts_as_a_crash_and_an_idle_session_ignores_it() {
        let pod = camera_pod(&session(json!({})))
            .bound(NODE, HOST_IP)
            .failed("evicted");
        let plan = Snapshot::new(session(json!({})))
            .with_pod(pod.clone())
            .plan();
        assert_eq!(deleted(&plan), DeleteReason::CrashLoop);
        assert_eq!(plan.status.message.as_deref(), Some("pod failed: evicted"));
        let plan = Snapshot::new(session(json!({})))
            .with_prev(CameraSessionStatus::idle())
            .with_pod(pod)
            .plan();
        assert_eq!(
            (deleted(&plan), plan.status.phase),
            (DeleteReason::Idle, Some(Phase::Idle))
        );
    }

    #[test]
    fn within_the_crash_backoff_the_session_stays_failed_then_gets_a_new_pod() {
        let crashed =
            CameraSessionStatus::crash_looped_at(ts(1000), "camera container restarted 5 times");
        let waiting = Snapshot::new(session(json!({})))
            .with_prev(crashed.clone())
            .at(ts(1010));
        let plan = waiting.plan();
        assert_eq!(plan.pod, PodChange::Keep);
        assert_eq!(plan.then, Action::requeue(Duration::from_secs(50)));
        assert_eq!(plan.status, crashed, "nothing new to write");
        // The crashed pod still terminating: the same.
        let going = camera_pod(&session(json!({})))
            .bound(NODE, HOST_IP)
            .restarted(5)
            .terminating();
        assert_eq!(waiting.clone().with_pod(going).plan(), plan);
        // After the backoff: a new pod.
        let plan = waiting.at(ts(1060)).plan();
        assert!(matches!(plan.pod, PodChange::Apply(_)));
        assert_eq!(plan.status.phase, Some(Phase::Pending));
    }

    #[test]
    fn a_live_pod_ends_the_crash_backoff() {
        // The backoff is over for the session once a live pod exists (e.g. recreated by hand).
        let crashed = CameraSessionStatus::crash_looped_at(ts(1000), "crashed");
        let pod = camera_pod(&session(json!({}))).bound(NODE, HOST_IP);
        let plan = Snapshot::new(session(json!({})))
            .with_prev(crashed)
            .with_pod(pod)
            .with_node_address(NODE, Some(HOST_IP))
            .at(ts(1010))
            .plan();
        assert_eq!(
            (plan.pod, plan.status.phase),
            (PodChange::Keep, Some(Phase::Starting))
        );
    }

    // Branches 5 and 6: replacement.

    #[test]
    fn a_terminating_pod_is_waited_for() {
        let pod = camera_pod(&session(json!({})))
            .bound(NODE, HOST_IP)
            .terminating();
        let plan = Snapshot::new(session(json!({}))).with_pod(pod).plan();
        assert_eq!(
            (plan.pod, plan.then),
            (PodChange::Keep, Action::requeue(REPLACING_RECHECK))
        );
        assert_eq!(plan.status.phase, Some(Phase::Terminating));
        assert_eq!(plan.status.pod_name.as_deref(), Some("cam1-p2pcamera"));
    }

    #[test]
    fn a_spec_change_replaces_the_pod() {
        let old = camera_pod(&session(json!({"filter": {"name": "passthrough"}})))
            .bound(NODE, HOST_IP)
            .ready();
        let snapshot = Snapshot::new(session(json!({}))).with_pod(old);
        assert_eq!(
            snapshot.decide(),
            node_lookup(),
            "the status names the node's address"
        );
        let plan = snapshot.with_node_address(NODE, Some(PUBLIC_IP)).plan();
        assert_eq!(deleted(&plan), DeleteReason::Replace);
        assert_eq!(plan.then, Action::requeue(REPLACING_RECHECK));
        assert_eq!(plan.status.phase, Some(Phase::Terminating));
        assert_eq!(
            (&plan.status.public_address, &plan.status.endpoint),
            (&None, &None)
        );
        let ready = condition(&plan.status, POD_READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "PodReplaced")
        );
    }

    #[test]
    fn a_running_pod_is_handed_its_nodes_public_address_instead_of_being_replaced() {
        let handed = |address: &str| {
            Decision::Lookup(Lookup::PublicAddress {
                endpoint: format!("https://{HOST_IP}:{PORT}"),
                address: address.into(),
            })
        };
        let starting = Snapshot::new(session(json!({}))).with_pod(
            camera_pod(&session(json!({})))
                .bound(NODE, HOST_IP)
                .running(),
        );
        assert_eq!(starting.decide(), node_lookup());
        let known = starting.with_node_address(NODE, Some(PUBLIC_IP));
        assert_eq!(known.decide(), handed(PUBLIC_IP));
        let accepted = known
            .clone()
            .with_handed_address(HandedAddress::Accepted)
            .plan();
        assert_eq!(accepted.pod, PodChange::Keep, "the pod starts once");
        assert_eq!(accepted.status.phase, Some(Phase::Starting));
        assert_ne!(accepted.then, Action::requeue(ADDRESS_RETRY));
        let failed = known
            .with_handed_address(HandedAddress::Failed("connection refused".into()))
            .plan();
        assert_eq!(failed.pod, PodChange::Keep);
        assert_eq!(
            failed.then,
            Action::requeue(ADDRESS_RETRY),
            "tried again soon"
        );
        // A node that names no address: the pod's host IP is what it advertises.
        let nameless = Snapshot::new(session(json!({})))
            .with_pod(
                camera_pod(&session(json!({})))
                    .bound(NODE, HOST_IP)
                    .running(),
            )
            .with_node_address(NODE, None);
        assert_eq!(nameless.decide(), handed(HOST_IP));
        // Not before the container runs, and never to a ready pod: it has its address; a later
        // change of the node's address does not replace it either.
        let bound = Snapshot::new(session(json!({})))
            .with_pod(camera_pod(&session(json!({}))).bound(NODE, HOST_IP))
            .with_node_address(NODE, Some(PUBLIC_IP));
        assert_eq!(bound.plan().pod, PodChange::Keep);
        for address in [Some(PUBLIC_IP), Some("203.0.113.200"), None] {
            let plan = Snapshot::new(session(json!({})))
                .with_pod(camera_pod(&session(json!({}))).bound(NODE, HOST_IP).ready())
                .with_node_address(NODE, address)
                .plan();
            assert_eq!(plan.pod, PodChange::Keep, "{address:?}");
            assert_eq!(plan.status.phase, Some(Phase::Ready));
            assert_eq!(
                plan.status.endpoint,
                Some(format!("https://{HOST_IP}:{PORT}"))
            );
        }
        // Once Ready with that address in its status, the pod's node is not read again.
        let ready = Snapshot::new(session(json!({})))
            .with_pod(camera_pod(&session(json!({}))).bound(NODE, HOST_IP).ready())
            .with_node_address(NODE, Some(PUBLIC_IP));
        let reported = ready.plan().status;
        let settled = Snapshot {
            lookups: Lookups::default(),
            ..ready.clone()
        }
        .with_prev(reported.clone());
        let plan = settled.clone().plan();
        assert_eq!(plan.status.public_address.as_deref(), Some(PUBLIC_IP));
        assert_eq!(plan.status.phase, Some(Phase::Ready));
        // Not for another pod, or a status that is not Ready.
        let starting = CameraSessionStatus {
            phase: Some(Phase::Starting),
            ..reported.clone()
        };
        assert_eq!(settled.clone().with_prev(starting).decide(), node_lookup());
        let other_pod = CameraSessionStatus {
            pod_name: Some("another-pod".into()),
            ..reported
        };
        assert_eq!(settled.with_prev(other_pod).decide(), node_lookup());
        // Its pod starts with the operator token and without a node of its own.
        let pod = applied(&Snapshot::new(session(json!({}))).plan()).clone();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name, None);
        assert!(
            spec.containers[0]
                .env
                .iter()
                .flatten()
                .any(|v| v.name == p2pcamera_api::pod_env::AWAIT_PUBLIC_IP),
            "{:?}",
            spec.containers[0].env
        );
    }

    // Branch 7: the port is taken on the nodes that fit.

    const PORTS_TAKEN: &str = "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 node(s) didn't have free ports for the requested pod ports.";

    #[test]
    fn a_port_taken_on_the_nodes_that_fit_moves_the_session_to_another_port() {
        let pod = camera_pod(&session(json!({}))).unschedulable(PORTS_TAKEN);
        let snapshot = Snapshot::new(session(json!({}))).with_pod(pod);
        assert_eq!(
            snapshot.decide(),
            Decision::Lookup(Lookup::OtherPort { taken: PORT })
        );
        let plan = snapshot.with_other_port(Some(PORT + 7)).plan();
        assert_eq!(deleted(&plan), DeleteReason::PortConflict);
        assert_eq!(plan.then, Action::requeue(REPLACING_RECHECK));
        assert_eq!(plan.port_wait, PortWait::Unchanged);
        assert_eq!(
            (
                plan.status.phase,
                plan.status.reason.as_deref(),
                plan.status.udp_port
            ),
            (
                Some(Phase::Scheduling),
                Some(status::REASON_PORT_CONFLICT),
                Some(PORT + 7)
            ),
            "the new port is recorded at once"
        );
        // The pod on the new port comes once the old one is gone.
        let moved = Snapshot::new(session(json!({}))).with_prev(plan.status.clone());
        let next = moved.plan();
        assert!(matches!(next.pod, PodChange::Apply(_)));
    }

    #[test]
    fn with_no_other_port_to_try_the_session_waits_and_says_why() {
        let pod = camera_pod(&session(json!({}))).unschedulable(PORTS_TAKEN);
        let plan = Snapshot::new(session(json!({})))
            .with_pod(pod)
            .with_other_port(None)
            .plan();
        assert_eq!(plan.pod, PodChange::Keep);
        assert_eq!(plan.port_wait, PortWait::Waiting);
        assert_eq!(
            plan.then,
            Action::await_change(),
            "a freed port triggers it"
        );
        assert_eq!(
            (plan.status.phase, plan.status.reason.as_deref()),
            (Some(Phase::Scheduling), Some(status::REASON_NO_FREE_PORT))
        );
        let scheduled = condition(&plan.status, status::SCHEDULED);
        assert_eq!(
            (scheduled.status.as_str(), scheduled.message.as_str()),
            ("False", PORTS_TAKEN)
        );
        // Nodes without a free GPU counted too: the GPU is the reason given.
        let both = "0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't have free ports for the requested pod ports.";
        let pod = camera_pod(&session(json!({}))).unschedulable(both);
        let plan = Snapshot::new(session(json!({})))
            .with_pod(pod)
            .with_other_port(None)
            .plan();
        assert_eq!(
            plan.status.reason.as_deref(),
            Some(status::REASON_NO_FREE_GPU)
        );
        assert_eq!(plan.port_wait, PortWait::Waiting);
    }

    #[test]
    fn a_bound_pod_ends_the_wait_for_a_port() {
        let pod = camera_pod(&session(json!({}))).bound(NODE, HOST_IP);
        let plan = Snapshot::new(session(json!({})))
            .with_pod(pod)
            .with_node_address(NODE, Some(HOST_IP))
            .plan();
        assert_eq!(plan.port_wait, PortWait::Over);
        let pod = camera_pod(&session(json!({})))
            .unschedulable("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.");
        let plan = Snapshot::new(session(json!({}))).with_pod(pod).plan();
        assert_eq!(plan.port_wait, PortWait::Unchanged);
        assert_eq!(
            plan.status.reason.as_deref(),
            Some(status::REASON_NO_FREE_GPU)
        );
    }

    // Branch 9: running.

    #[test]
    fn a_pod_not_yet_bound_is_reported_without_lookups() {
        let pod = camera_pod(&session(json!({})))
            .unschedulable("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.");
        let plan = Snapshot::new(session(json!({}))).with_pod(pod).plan();
        assert_eq!(
            (plan.pod, plan.then),
            (PodChange::Keep, Action::requeue(RESYNC))
        );
        assert_eq!(plan.status.phase, Some(Phase::Scheduling));
        assert_eq!(
            plan.status.message.as_deref(),
            Some("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
        );
    }

    #[test]
    fn a_new_pods_normal_progress_is_written_only_once_it_takes_a_while() {
        let new = || camera_pod(&session(json!({}))).created(ts(1000));
        let waiting = Snapshot::new(session(json!({})))
            .with_pod(new())
            .at(ts(1003));
        let plan = waiting.plan();
        assert_eq!(plan.status, CameraSessionStatus::default(), "nothing yet");
        assert_eq!(
            plan.then,
            Action::requeue(status::STATUS_SETTLE - Duration::from_secs(3))
        );
        let starting = Snapshot::new(session(json!({})))
            .with_pod(new().bound(NODE, HOST_IP))
            .with_node_address(NODE, Some(HOST_IP))
            .at(ts(1003));
        assert_eq!(starting.plan().status, CameraSessionStatus::default());
        assert_eq!(starting.plan().port_wait, PortWait::Over);
        // Taking a while: where the pod stands is written.
        let late = waiting.at(ts(1000) + status::STATUS_SETTLE);
        assert_eq!(late.plan().status.phase, Some(Phase::Scheduling));
        // Ready and waiting for a GPU are written at once.
        let ready = starting
            .clone()
            .with_pod(new().bound(NODE, HOST_IP).ready());
        assert_eq!(ready.plan().status.phase, Some(Phase::Ready));
        let no_gpu = Snapshot::new(session(json!({})))
            .with_pod(
                new().unschedulable("0/2 nodes are available: 2 Insufficient nvidia.com/gpu."),
            )
            .at(ts(1001));
        assert_eq!(no_gpu.plan().status.phase, Some(Phase::Scheduling));
    }

    #[test]
    fn a_ready_pod_without_idle_timeout_is_never_polled() {
        let pod = camera_pod(&session(json!({}))).bound(NODE, HOST_IP).ready();
        let plan = Snapshot::new(session(json!({})))
            .with_pod(pod)
            .with_node_address(NODE, Some(HOST_IP))
            .plan();
        assert_eq!(
            (plan.pod, plan.then),
            (PodChange::Keep, Action::requeue(RESYNC))
        );
        assert_eq!(plan.status.phase, Some(Phase::Ready));
        assert_eq!(plan.status.last_active_time, None);
    }

    #[test]
    fn an_unchanged_running_session_writes_no_new_status() {
        let pod = camera_pod(&session(json!({}))).bound(NODE, HOST_IP).ready();
        let snapshot = Snapshot::new(session(json!({})))
            .with_pod(pod)
            .with_node_address(NODE, Some(HOST_IP));
        let first = snapshot.plan();
        let second = snapshot.with_prev(first.status.clone()).at(ts(5000)).plan();
        assert_eq!(second.status, first.status, "no flapping");
    }

    // Branch 7: idle polling.

    fn ready_with_idle_timeout() -> Snapshot {
        let session = session(json!({"idleTimeout": "60s"}));
        let pod = camera_pod(&session).bound(NODE, HOST_IP).ready();
        Snapshot::new(session)
            .with_pod(pod)
            .with_prev(CameraSessionStatus::ready_since(ts(1000)))
            .with_node_address(NODE, Some(HOST_IP))
    }

    #[test]
    fn a_ready_pod_with_idle_timeout_is_polled_after_the_node_lookup() {
        let snapshot = ready_with_idle_timeout();
        assert_eq!(snapshot.decide(), activity_lookup());
        let mut unanswered = snapshot.clone();
        unanswered.lookups.node_address = None;
        // The Ready status recorded the address the pod serves: its node is not read again.
        assert_eq!(unanswered.decide(), activity_lookup());
        unanswered.prev.public_address = None;
        assert_eq!(
            unanswered.decide(),
            node_lookup(),
            "a pod to be replaced is not polled"
        );
        let plan = snapshot.with_activity(Polled::NoAnswer).plan();
        assert_eq!(
            (plan.pod, plan.then),
            (PodChange::Keep, Action::requeue(Duration::from_secs(15)))
        );
        assert_eq!(plan.status.phase, Some(Phase::Ready));
    }

    #[test]
    fn the_poll_interval_is_at_least_a_second() {
        let fast = crate::config::Config {
            idle_poll_interval: Duration::from_millis(10),
            ..config()
        };
        let plan = ready_with_idle_timeout()
            .with_config(fast)
            .with_activity(Polled::NoAnswer)
            .plan();
        assert_eq!(plan.then, Action::requeue(MIN_IDLE_POLL_INTERVAL));
    }

    #[test]
    fn a_ready_pod_is_polled_for_its_first_frame_while_the_start_times_wait_for_it() {
        let ready = || {
            Snapshot::new(session(json!({})))
                .with_prev(CameraSessionStatus::ready_since(ts(900)))
                .with_pod(camera_pod(&session(json!({}))).bound(NODE, HOST_IP).ready())
                .with_node_address(NODE, Some(HOST_IP))
        };
        let plan = ready().plan();
        assert_eq!(plan.then, Action::requeue(RESYNC), "nothing to poll for");
        let mut waiting = ready();
        waiting.awaits_first_frame = true;
        assert_eq!(waiting.decide(), activity_lookup());
        let streamed = Activity {
            camera_connected: true,
            first_answer_ms: Some(1),
            first_frame_ms: Some(2),
            ..Activity::default()
        };
        let plan = waiting.with_activity(Polled::Answer(streamed)).plan();
        assert_eq!(plan.pod, PodChange::Keep, "no idle timeout to act on");
        assert_eq!(plan.then, Action::requeue(idle_poll_interval(&config())));
    }

    #[test]
    fn the_polled_connection_goes_into_the_status_once_and_is_not_written_again() {
        use p2pcamera_api::relay::CandidateType;
        let mut waiting = Snapshot::new(session(json!({})))
            .with_prev(CameraSessionStatus::ready_since(ts(900)))
            .with_pod(camera_pod(&session(json!({}))).bound(NODE, HOST_IP).ready())
            .with_node_address(NODE, Some(HOST_IP))
            .at(ts(1000));
        waiting.awaits_first_frame = true;
        let relayed = Activity {
            camera_connected: true,
            first_frame_ms: Some(2),
            connection: Some(ConnectionPath::of_pair(
                CandidateType::Relay,
                CandidateType::Host,
            )),
            ..Activity::default()
        };
        let plan = waiting
            .clone()
            .with_activity(Polled::Answer(relayed.clone()))
            .plan();
        let connection = plan.status.connection.clone().expect("written");
        assert_eq!(
            serde_json::to_value(&connection).ok(),
            Some(json!({
                "path": "Relay", "transport": "udp", "podCandidate": "relay",
                "cameraCandidate": "host", "observedTime": "1970-01-01T00:16:40Z"
            }))
        );
        // The next poll reports the same: the status stays as written (no request).
        let again = waiting
            .with_prev(plan.status.clone())
            .at(ts(1015))
            .with_activity(Polled::Answer(relayed))
            .plan();
        assert_eq!(again.status, plan.status);
    }

    #[test]
    fn a_connected_camera_keeps_the_pod_and_records_the_time() {
        let connected = Activity {
            camera_connected: true,
            last_active: Some(ts(1010)),
            ..Activity::default()
        };
        let plan = ready_with_idle_timeout()
            .at(ts(5000))
            .with_activity(Polled::Answer(connected))
            .plan();
        assert_eq!(plan.pod, PodChange::Keep);
        assert_eq!(plan.status.last_active_time.map(|t| t.0), Some(ts(5000)));
    }

    #[test]
    fn no_camera_within_the_idle_timeout_removes_the_pod() {
        let gone = |last_active| {
            Polled::Answer(Activity {
                camera_connected: false,
                last_active: Some(ts(last_active)),
                ..Activity::default()
            })
        };
        // Last camera 30 s ago: not idle yet.
        let plan = ready_with_idle_timeout()
            .at(ts(1090))
            .with_activity(gone(1060))
            .plan();
        assert_eq!(plan.pod, PodChange::Keep);
        assert_eq!(
            plan.status.last_active_time.as_ref().map(|t| t.0),
            Some(ts(1060))
        );
        // Last camera 60 s ago: idle.
        let plan = ready_with_idle_timeout()
            .at(ts(1120))
            .with_activity(gone(1060))
            .plan();
        assert_eq!(deleted(&plan), DeleteReason::IdleTimeout);
        assert_eq!(plan.then, Action::await_change());
        assert_eq!(plan.status.phase, Some(Phase::Idle));
        assert_eq!(plan.status.last_active_time.map(|t| t.0), Some(ts(1060)));
        // A camera that never came: the clock starts when the pod became ready.
        let never = Polled::Answer(Activity {
            camera_connected: false,
            last_active: None,
            ..Activity::default()
        });
        let plan = ready_with_idle_timeout()
            .at(ts(1059))
            .with_activity(never.clone())
            .plan();
        assert_eq!(plan.pod, PodChange::Keep);
        let plan = ready_with_idle_timeout()
            .at(ts(1060))
            .with_activity(never)
            .plan();
        assert_eq!(deleted(&plan), DeleteReason::IdleTimeout);
    }

    #[test]
    fn every_branch_ends_in_a_plan_once_its_lookups_are_answered() {
        let s = || session(json!({"idleTimeout": "60s"}));
        let pods = [
            None,
            Some(camera_pod(&s())),
            Some(camera_pod(&s()).bound(NODE, HOST_IP)),
            Some(camera_pod(&s()).bound(NODE, HOST_IP).running()),
            Some(camera_pod(&s()).bound(NODE, HOST_IP).ready()),
            Some(camera_pod(&s()).bound(NODE, HOST_IP).terminating()),
            Some(camera_pod(&s()).bound(NODE, HOST_IP).restarted(9)),
            Some(camera_pod(&s()).unschedulable(PORTS_TAKEN)),
        ];
        let statuses = [
            CameraSessionStatus::default(),
            CameraSessionStatus::idle(),
            CameraSessionStatus::crash_looped_at(ts(990), "crashed"),
            CameraSessionStatus::ready_since(ts(900)),
        ];
        for pod in &pods {
            for prev in &statuses {
                let mut snapshot = Snapshot::new(s()).with_prev(prev.clone());
                snapshot.pod = pod.clone();
                let mut asked = Vec::new();
                let plan = loop {
                    match snapshot.decide() {
                        Decision::Plan(plan) => break *plan,
                        Decision::Lookup(lookup) => {
                            assert!(!asked.contains(&lookup), "asked twice for {lookup:?}");
                            snapshot = match &lookup {
                                Lookup::NodeAddress { node } => {
                                    snapshot.with_node_address(node, Some(PUBLIC_IP))
                                }
                                Lookup::Activity { .. } => snapshot.with_activity(Polled::NoAnswer),
                                Lookup::PublicAddress { .. } => {
                                    snapshot.with_handed_address(HandedAddress::Accepted)
                                }
                                Lookup::OtherPort { .. } => {
                                    snapshot.with_other_port(Some(PORT + 1))
                                }
                                Lookup::WarmPod { .. } => {
                                    panic!("the built-in class has no warm pool: {lookup:?}")
                                }
                            };
                            asked.push(lookup);
                        }
                    }
                };
                assert!(asked.len() <= 2, "{asked:?}");
                if *prev == CameraSessionStatus::default() && pod.is_none() {
                    assert_eq!(
                        plan.status, *prev,
                        "a new session's first status waits for its pod"
                    );
                } else {
                    let moved = asked.iter().any(|l| matches!(l, Lookup::OtherPort { .. }));
                    let port = if moved { PORT + 1 } else { PORT };
                    assert_eq!(plan.status.udp_port, Some(port));
                    assert!(plan.status.phase.is_some());
                }
            }
        }
    }

    /// A class `gpu` with a warm pool, the operator serving namespace `team`.
    fn pooled(snapshot: Snapshot) -> Snapshot {
        let mut config = config();
        config.namespace = Some("team".into());
        let mut snapshot = snapshot.with_config(config);
        snapshot.class = Ok(ResolvedClass {
            name: Some("gpu".into()),
            spec: serde_json::from_value(json!({"warmPool": {"minIdle": 2}})).unwrap(),
        });
        snapshot
    }

    /// Pool pod `gpu-warm-a` on `port`, bound and warm, as the claim write returns it.
    fn claimed_pool_pod(snapshot: &Snapshot, port: u16) -> Pod {
        let Ok(class) = &snapshot.class else {
            panic!("a class")
        };
        let hash = desired::claimed_pod_hash(&snapshot.session, class, port).unwrap();
        let mut pod = camera_pod(&snapshot.session).bound(NODE, HOST_IP).ready();
        pod.metadata.name = Some("gpu-warm-a".into());
        pod.metadata.annotations = Some(
            [
                (ANNOTATION_POD_HASH.to_string(), hash),
                (
                    p2pcamera_api::objects::ANNOTATION_CLAIMED_BY.to_string(),
                    "team/cam1".to_string(),
                ),
            ]
            .into(),
        );
        pod
    }

    #[test]
    fn a_new_session_of_a_pooled_class_claims_a_warm_pod_first() {
        let snapshot = pooled(Snapshot::new(session(json!({}))));
        assert_eq!(
            snapshot.decide(),
            Decision::Lookup(Lookup::WarmPod {
                pool: PoolTarget {
                    class: "gpu".into(),
                    namespace: "team".into()
                }
            })
        );
        // Not for a session in another namespace.
        let mut elsewhere = pooled(Snapshot::new(session(json!({}))));
        elsewhere.config.namespace = Some("other".into());
        assert!(matches!(elsewhere.plan().pod, PodChange::Apply(_)));
    }

    #[test]
    fn a_claimed_warm_pod_makes_the_session_ready_on_its_port() {
        let mut snapshot = pooled(Snapshot::new(session(json!({}))));
        let pod = claimed_pool_pod(&snapshot, 40123);
        snapshot.lookups.warm_claim = Some(WarmClaim::Claimed {
            pod: Box::new(pod),
            port: 40123,
            warm_filter: true,
        });
        // The node's public address is looked up for the status, as for any running pod.
        let plan = snapshot.with_node_address(NODE, Some(PUBLIC_IP)).plan();
        assert_eq!(plan.pod, PodChange::Keep);
        assert_eq!(plan.status.phase, Some(Phase::Ready));
        assert_eq!(plan.status.pod_name.as_deref(), Some("gpu-warm-a"));
        assert_eq!(plan.status.udp_port, Some(40123));
        assert_eq!(plan.status.public_address.as_deref(), Some(PUBLIC_IP));
        let warm = condition(&plan.status, claim::WARM_START);
        assert_eq!(
            (warm.status.as_str(), warm.reason.as_str()),
            ("True", claim::REASON_WARM_POD_CLAIMED)
        );
    }

    #[test]
    fn a_claim_never_reads_the_pools_idle_time_as_the_sessions() {
        let mut snapshot = pooled(Snapshot::new(session(json!({"idleTimeout": "1m"}))));
        let pod = claimed_pool_pod(&snapshot, 40123);
        snapshot.lookups.warm_claim = Some(WarmClaim::Claimed {
            pod: Box::new(pod),
            port: 40123,
            warm_filter: true,
        });
        let plan = snapshot.with_node_address(NODE, Some(PUBLIC_IP)).plan();
        assert_eq!(
            plan.pod,
            PodChange::Keep,
            "no activity poll, no idle deletion"
        );
        assert_eq!(plan.status.phase, Some(Phase::Ready));
    }

    #[test]
    fn an_empty_pool_starts_the_session_cold_and_says_so_at_once() {
        let mut snapshot = pooled(Snapshot::new(session(json!({}))));
        snapshot.lookups.warm_claim = Some(WarmClaim::Missed {
            reason: claim::REASON_WARM_POOL_EMPTY,
            message: "no idle warm pod".into(),
        });
        let plan = snapshot.plan();
        assert!(matches!(plan.pod, PodChange::Apply(_)));
        let warm = condition(&plan.status, claim::WARM_START);
        assert_eq!(
            (warm.status.as_str(), warm.reason.as_str()),
            ("False", claim::REASON_WARM_POOL_EMPTY)
        );
    }

    #[test]
    fn a_claimed_pod_is_replaced_only_when_the_spec_changes() {
        let snapshot = pooled(Snapshot::new(session(json!({}))));
        let pod = claimed_pool_pod(&snapshot, PORT);
        // HOST_IP differs from the node's PUBLIC_IP: the claim handed it the address.
        let running = snapshot
            .clone()
            .with_prev(CameraSessionStatus::ready_since(ts(900)))
            .with_pod(pod.clone())
            .with_node_address(NODE, Some(PUBLIC_IP));
        assert_eq!(running.plan().pod, PodChange::Keep);
        let mut changed = running.clone();
        changed.session = session(json!({"filter": {"name": "passthrough"}})).changed();
        assert!(matches!(
            changed.plan().pod,
            PodChange::Delete {
                reason: DeleteReason::Replace,
                ..
            }
        ));
    }
}
