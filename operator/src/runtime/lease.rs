//! Leader election with a `coordination.k8s.io/v1` Lease, so two replicas never both reconcile.
//!
//! The leader renews every [`RENEW_EVERY`]; the Lease says it holds for [`LEASE_DURATION`].
//! A candidate takes the Lease over only after it expired. Writes use the Lease's
//! `resourceVersion` (optimistic concurrency), so two candidates racing for an expired Lease
//! cannot both win. A leader that fails to renew for [`RENEW_DEADLINE`] steps down before its
//! Lease can expire elsewhere. On shutdown the leader releases the Lease (clears the holder) so a
//! standby takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a Lease holds without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How long the leader keeps acting without a successful renewal.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often a standby retries.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);

/// What to do with the Lease as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No Lease exists: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// It is free or expired: take it over.
    Acquire,
    /// Someone else holds it.
    Follow {
        /// The holder.
        holder: String,
    },
}

/// Decides from the observed Lease spec (pure).
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return LeaseDecision::Renew;
    }
    if holder.is_empty() {
        return LeaseDecision::Acquire;
    }
    let duration = i64::from(
        spec.lease_duration_seconds
            .unwrap_or(LEASE_DURATION.as_secs() as i32),
    );
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    if now.duration_since(renewed).as_secs() >= duration {
        LeaseDecision::Acquire
    } else {
        LeaseDecision::Follow {
            holder: holder.to_string(),
        }
    }
}

/// The Lease spec after `decision` by `identity` (pure). `None` for `Follow`.
pub fn next_spec(
    old: Option<&LeaseSpec>,
    decision: &LeaseDecision,
    identity: &str,
    now: Timestamp,
) -> Option<LeaseSpec> {
    let old = old.cloned().unwrap_or_default();
    let base = LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        renew_time: Some(MicroTime(now)),
        ..old.clone()
    };
    match decision {
        LeaseDecision::Follow { .. } => None,
        LeaseDecision::Renew => Some(base),
        LeaseDecision::Create => Some(LeaseSpec {
            acquire_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..base
        }),
        LeaseDecision::Acquire => Some(LeaseSpec {
            acquire_time: Some(MicroTime(now)),
            lease_transitions: Some(old.lease_transitions.unwrap_or(0) + 1),
            ..base
        }),
    }
}

/// Errors of the elector.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The API server refused or failed a Lease request.
    #[error("lease request failed: {0}")]
    Api(#[from] kube::Error),
}

/// A candidate for one Lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl LeaderElector {
    /// A candidate `identity` for Lease `namespace/name`.
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
        }
    }

    /// One round: acquire or renew. `Ok(true)` when we hold the Lease afterwards. A lost race
    /// (conflict) is `Ok(false)`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let Some(spec) = next_spec(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &decision,
            &self.identity,
            now,
        ) else {
            return Ok(false);
        };
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                lease.spec = Some(spec);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Clears the holder if we hold the Lease.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }

    /// Campaigns until `shutdown`, publishing whether we lead on `leading`. Releases the Lease
    /// on shutdown when leading.
    pub async fn run(self, leading: watch::Sender<bool>, shutdown: CancellationToken) {
        let mut last_renewed: Option<tokio::time::Instant> = None;
        loop {
            let held = match self.try_acquire_or_renew().await {
                Ok(held) => held,
                Err(error) => {
                    tracing::warn!(%error, lease = %self.name, "lease round failed");
                    false
                }
            };
            let now = tokio::time::Instant::now();
            if held {
                last_renewed = Some(now);
            }
            let is_leader = last_renewed.is_some_and(|t| now.duration_since(t) < RENEW_DEADLINE);
            if !is_leader {
                last_renewed = None;
            }
            leading.send_if_modified(|old| {
                let changed = *old != is_leader;
                if changed {
                    tracing::info!(identity = %self.identity, leader = is_leader, "leadership changed");
                }
                *old = is_leader;
                changed
            });
            let wait = if is_leader { RENEW_EVERY } else { RETRY_EVERY };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if *leading.borrow() {
            leading.send_replace(false);
            if let Err(error) = self.release().await {
                tracing::warn!(%error, "releasing the lease failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(ts(renewed))),
            lease_transitions: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", ts(100)), LeaseDecision::Create);
        assert_eq!(
            decide(Some(&held_by("a", 99)), "a", ts(100)),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide(Some(&held_by("b", 90)), "a", ts(100)),
            LeaseDecision::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&held_by("b", 85)), "a", ts(100)),
            LeaseDecision::Acquire
        );
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", ts(100)),
            LeaseDecision::Acquire
        );
    }

    #[test]
    fn takeover_counts_transitions_and_renew_keeps_acquire_time() {
        let old = held_by("b", 10);
        let taken = next_spec(Some(&old), &LeaseDecision::Acquire, "a", ts(100)).unwrap();
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.acquire_time, Some(MicroTime(ts(100))));
        let renewed = next_spec(Some(&taken), &LeaseDecision::Renew, "a", ts(105)).unwrap();
        assert_eq!(renewed.acquire_time, Some(MicroTime(ts(100))));
        assert_eq!(renewed.renew_time, Some(MicroTime(ts(105))));
        assert_eq!(renewed.lease_duration_seconds, Some(15));
        assert!(
            next_spec(
                Some(&old),
                &LeaseDecision::Follow { holder: "b".into() },
                "a",
                ts(1)
            )
            .is_none()
        );
    }
}
