//! How many warm-pool pods a class should have, decided without a client.
//!
//! [`observe`] sorts the cached pods of a class's pool into idle ones (no session yet: ready, or
//! still starting) and claimed ones; [`plan`] decides what to create and delete and what the
//! class's status says:
//! - sessions of the class wait for a GPU (their pods are unschedulable with reason `NoFreeGpu`):
//!   the pool yields, creates nothing and deletes as many idle pods as sessions wait (starting ones
//!   first), so admitted sessions are never starved by pods nobody uses yet;
//! - else fewer idle pods than `minIdle`: create the difference; more than `maxIdle`: delete the
//!   surplus, starting ones first, then the newest;
//! - a pool pod the scheduler cannot place says why in `status.warmPool.message`, and no further
//!   pod is created while one waits (they would wait for the same reason);
//! - a pool pod that crash-loops or failed is deleted and does not count (a new one replaces it).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use p2pcamera_api::objects::{LABEL_POOL, LABEL_SESSION};

use crate::crd::{WarmPool, WarmPoolStatus};
use crate::status::{self, Scheduling};

/// An idle pod of a pool, as far as sizing the pool goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdlePod {
    /// Pod name.
    pub name: String,
    /// Warm: ready to be claimed.
    pub ready: bool,
    /// The scheduler's message when it cannot place the pod.
    pub unschedulable: Option<String>,
    /// When it was created.
    pub created: Option<Timestamp>,
    /// It crash-loops or failed: it will never be warm (deleted and replaced).
    pub broken: bool,
}

/// The pods of one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolObservation {
    /// Pods no session claimed, not being deleted.
    pub idle: Vec<IdlePod>,
    /// Pods claimed by a session, not being deleted.
    pub claimed: u32,
}

/// What to do with a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolPlan {
    /// New idle pods to create.
    pub create: u32,
    /// Idle pods to delete, by name.
    pub delete: Vec<String>,
    /// The class's `status.warmPool`.
    pub status: WarmPoolStatus,
}

/// Whether `pod` belongs to the pool of class `class` in `namespace`.
pub fn in_pool(pod: &Pod, class: &str, namespace: &str) -> bool {
    pod.namespace().as_deref() == Some(namespace)
        && pod.labels().get(LABEL_POOL).map(String::as_str) == Some(class)
}

/// Sorts the pods of the pool of `class` in `namespace` (pods of other pools are skipped); a pod
/// whose container restarted `restart_limit` times in a crash loop, or that failed, is broken.
pub fn observe<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    class: &str,
    namespace: &str,
    restart_limit: i32,
) -> PoolObservation {
    let mut observed = PoolObservation::default();
    for pod in pods {
        if !in_pool(pod, class, namespace) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if pod.labels().contains_key(LABEL_SESSION) {
            observed.claimed += 1;
            continue;
        }
        let seen = status::observe_pod(pod);
        let broken = status::crash_loop(&seen, restart_limit).is_some();
        observed.idle.push(IdlePod {
            broken,
            name: seen.name,
            ready: seen.ready,
            unschedulable: match seen.scheduling {
                Scheduling::Unschedulable { message, .. } => Some(message),
                _ => None,
            },
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
        });
    }
    observed
}

/// The plan for `pool` given its pods and how many sessions of the class wait for a GPU.
pub fn plan(
    pool: &WarmPool,
    observed: &PoolObservation,
    sessions_waiting_for_gpu: u32,
) -> PoolPlan {
    let (broken, working): (Vec<_>, Vec<_>) = observed.idle.iter().cloned().partition(|p| p.broken);
    let working = PoolObservation {
        idle: working,
        claimed: observed.claimed,
    };
    let mut plan = plan_working(pool, &working, sessions_waiting_for_gpu);
    let mut delete: Vec<String> = broken.into_iter().map(|p| p.name).collect();
    delete.append(&mut plan.delete);
    plan.delete = delete;
    plan
}

/// [`plan`] for the pool's pods that are not broken.
fn plan_working(
    pool: &WarmPool,
    observed: &PoolObservation,
    sessions_waiting_for_gpu: u32,
) -> PoolPlan {
    let ready = observed.idle.iter().filter(|p| p.ready).count();
    let idle = observed.idle.len();
    let mut status = WarmPoolStatus {
        idle: count(ready),
        starting: count(idle - ready),
        claimed: observed.claimed,
        message: None,
    };
    // Deletion order: starting pods first (they serve nobody yet), then the newest.
    let mut by_use = observed.idle.clone();
    by_use.sort_by(|a, b| a.ready.cmp(&b.ready).then(b.created.cmp(&a.created)));
    let min_idle = usize::try_from(pool.min_idle).unwrap_or(usize::MAX);
    let max_idle = usize::try_from(pool.max_idle()).unwrap_or(usize::MAX);
    if sessions_waiting_for_gpu > 0 {
        let yield_count = usize::try_from(sessions_waiting_for_gpu).unwrap_or(usize::MAX);
        status.message = Some(format!(
            "{sessions_waiting_for_gpu} session(s) of the class wait for a GPU: the pool yields its GPUs to them and refills once they are placed"
        ));
        return PoolPlan {
            create: 0,
            delete: by_use
                .into_iter()
                .take(yield_count)
                .map(|p| p.name)
                .collect(),
            status,
        };
    }
    let waiting = observed.idle.iter().find_map(|p| p.unschedulable.clone());
    let create = if waiting.is_some() {
        0
    } else {
        count(min_idle.saturating_sub(idle))
    };
    let delete = by_use
        .into_iter()
        .take(idle.saturating_sub(max_idle))
        .map(|p| p.name)
        .collect();
    if ready < min_idle {
        status.message = Some(match waiting {
            Some(scheduler) => format!("pool pods cannot be placed: {scheduler}"),
            None => format!(
                "{ready} of {min_idle} idle pods warm; {} starting",
                idle - ready
            ),
        });
    }
    PoolPlan {
        create,
        delete,
        status,
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(min_idle: u32, max_idle: Option<u32>) -> WarmPool {
        WarmPool {
            min_idle,
            max_idle,
            ..WarmPool::default()
        }
    }

    fn idle(name: &str, ready: bool, created: i64) -> IdlePod {
        IdlePod {
            name: name.into(),
            ready,
            unschedulable: None,
            created: Timestamp::from_second(created).ok(),
            broken: false,
        }
    }

    #[test]
    fn a_broken_pod_is_replaced() {
        let mut crashing = idle("crashing", false, 1);
        crashing.broken = true;
        let p = plan(
            &pool(2, None),
            &observed(vec![crashing, idle("ok", true, 2)], 0),
            0,
        );
        assert_eq!(p.delete, vec!["crashing".to_string()]);
        assert_eq!(p.create, 1, "the broken pod does not count");
        assert_eq!((p.status.idle, p.status.starting), (1, 0));
    }

    fn observed(idle: Vec<IdlePod>, claimed: u32) -> PoolObservation {
        PoolObservation { idle, claimed }
    }

    #[test]
    fn fills_up_to_min_idle_counting_starting_pods() {
        let p = plan(&pool(3, None), &observed(vec![idle("a", true, 1)], 5), 0);
        assert_eq!((p.create, p.delete.len()), (2, 0));
        assert_eq!(
            (p.status.idle, p.status.starting, p.status.claimed),
            (1, 0, 5)
        );
        assert!(p.status.message.unwrap().contains("1 of 3"));
        let p = plan(
            &pool(3, None),
            &observed(
                vec![idle("a", true, 1), idle("b", false, 2), idle("c", false, 3)],
                0,
            ),
            0,
        );
        assert_eq!(p.create, 0, "starting pods count towards minIdle");
        assert_eq!(p.status.starting, 2);
    }

    #[test]
    fn min_idle_zero_runs_no_pods() {
        let p = plan(&pool(0, None), &observed(vec![idle("a", true, 1)], 0), 0);
        assert_eq!((p.create, p.delete), (0, vec!["a".to_string()]));
        assert_eq!(p.status.message, None);
        let p = plan(&pool(0, None), &PoolObservation::default(), 0);
        assert_eq!(p, PoolPlan::default());
    }

    #[test]
    fn surplus_above_max_idle_goes_starting_first_then_newest() {
        let pods = vec![
            idle("old", true, 1),
            idle("new", true, 5),
            idle("starting", false, 2),
            idle("mid", true, 3),
        ];
        let p = plan(&pool(1, Some(2)), &observed(pods, 0), 0);
        assert_eq!(p.create, 0);
        assert_eq!(p.delete, vec!["starting".to_string(), "new".to_string()]);
        assert_eq!(p.status.message, None, "3 warm >= minIdle 1");
    }

    #[test]
    fn sessions_waiting_for_a_gpu_make_the_pool_yield() {
        let pods = vec![
            idle("warm", true, 1),
            idle("starting", false, 2),
            idle("warm2", true, 3),
        ];
        let p = plan(&pool(5, None), &observed(pods, 0), 2);
        assert_eq!(p.create, 0);
        assert_eq!(p.delete, vec!["starting".to_string(), "warm2".to_string()]);
        assert!(p.status.message.unwrap().contains("2 session(s)"));
    }

    #[test]
    fn an_unplaceable_pool_pod_says_why_and_stops_creation() {
        let mut stuck = idle("stuck", false, 1);
        stuck.unschedulable =
            Some("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.".into());
        let p = plan(&pool(3, None), &observed(vec![stuck], 0), 0);
        assert_eq!(p.create, 0);
        let message = p.status.message.unwrap();
        assert!(message.contains("Insufficient nvidia.com/gpu"), "{message}");
    }
}
