//! Leader election on a real Lease: candidates racing for it, hand-over on release, take-over
//! only after a silent leader's Lease expired, and `run` never letting two replicas lead.

use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use p2pcamera_operator::runtime::lease::{LEASE_DURATION, LeaderElector, RETRY_EVERY};
use p2pcamera_tests::{ControlPlane, eventually};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const LEASE: &str = "p2pcamera-operator";

async fn holder(plane: &ControlPlane, ns: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(plane.client().unwrap(), ns)
        .get(LEASE)
        .await
        .unwrap();
    lease.spec.and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn racing_candidates_never_both_hold_the_lease() {
    let plane = ControlPlane::shared().await.unwrap();
    let ns = plane.namespace("leader-race").await.unwrap();
    let candidates: Vec<_> = (0..5)
        .map(|i| LeaderElector::new(plane.client().unwrap(), &ns, LEASE, &format!("replica-{i}")))
        .collect();
    let mut leader = None;
    for round in 0..8 {
        let results = join_all(candidates.iter().map(|c| c.try_acquire_or_renew())).await;
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| *r.as_ref().unwrap())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: holders {winners:?}");
        // The first winner keeps renewing; nobody takes a live Lease over.
        assert_eq!(
            *leader.get_or_insert(winners[0]),
            winners[0],
            "round {round}: leadership moved"
        );
        assert_eq!(
            holder(plane, &ns).await,
            Some(format!("replica-{}", winners[0]))
        );
    }
}

#[tokio::test]
async fn release_hands_the_lease_over_at_once() {
    let plane = ControlPlane::shared().await.unwrap();
    let ns = plane.namespace("leader-release").await.unwrap();
    let a = LeaderElector::new(plane.client().unwrap(), &ns, LEASE, "a");
    let b = LeaderElector::new(plane.client().unwrap(), &ns, LEASE, "b");
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    a.release().await.unwrap();
    assert_eq!(holder(plane, &ns).await, None);
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "standby did not take the released Lease"
    );
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "old leader took the Lease back"
    );
    // Releasing a Lease someone else holds changes nothing.
    a.release().await.unwrap();
    assert_eq!(holder(plane, &ns).await.as_deref(), Some("b"));
}

#[tokio::test]
async fn silent_leader_is_replaced_only_after_its_lease_expires() {
    let plane = ControlPlane::shared().await.unwrap();
    let ns = plane.namespace("leader-expiry").await.unwrap();
    let a = LeaderElector::new(plane.client().unwrap(), &ns, LEASE, "a");
    let b = LeaderElector::new(plane.client().unwrap(), &ns, LEASE, "b");
    assert!(a.try_acquire_or_renew().await.unwrap());
    let renewed = Instant::now();
    // `a` goes silent (crashed without releasing).
    let took_over = loop {
        if b.try_acquire_or_renew().await.unwrap() {
            break renewed.elapsed();
        }
        assert!(
            renewed.elapsed() < LEASE_DURATION + Duration::from_secs(10),
            "standby never took over"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Lease times have second precision on the server side; allow one second of rounding.
    assert!(
        took_over + Duration::from_secs(1) >= LEASE_DURATION,
        "took over after {took_over:?}"
    );
    assert_eq!(holder(plane, &ns).await.as_deref(), Some("b"));
}

type Replica = (
    &'static str,
    watch::Receiver<bool>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
);

fn leading(replicas: &[Replica]) -> Vec<&'static str> {
    replicas
        .iter()
        .filter(|r| *r.1.borrow())
        .map(|r| r.0)
        .collect()
}

#[tokio::test]
async fn run_lets_exactly_one_replica_lead_and_hands_over_on_shutdown() {
    let plane = ControlPlane::shared().await.unwrap();
    let ns = plane.namespace("leader-run").await.unwrap();
    let mut replicas: Vec<Replica> = Vec::new();
    for name in ["first", "second"] {
        let (tx, rx) = watch::channel(false);
        let shutdown = CancellationToken::new();
        let elector = LeaderElector::new(plane.client().unwrap(), &ns, LEASE, name);
        let task = tokio::spawn(elector.run(tx, shutdown.clone()));
        replicas.push((name, rx, shutdown, task));
    }
    let leader = eventually("one replica leading", Duration::from_secs(30), || {
        let now = leading(&replicas);
        async move {
            if now.len() == 1 {
                Ok(now[0])
            } else {
                Err(format!("leading: {now:?}"))
            }
        }
    })
    .await
    .unwrap();
    // Across several renewals, never two leaders and never a change.
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        assert_eq!(leading(&replicas), [leader]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(holder(plane, &ns).await.as_deref(), Some(leader));

    let index = replicas.iter().position(|r| r.0 == leader).unwrap();
    let (_, rx, shutdown, task) = replicas.remove(index);
    shutdown.cancel();
    task.await.unwrap();
    assert!(!*rx.borrow(), "stopped replica still claims to lead");
    let stopped = Instant::now();
    let other = replicas[0].0;
    eventually(
        "standby leading after the leader shut down",
        Duration::from_secs(20),
        || {
            let now = leading(&replicas);
            async move {
                if now == [other] {
                    Ok(())
                } else {
                    Err(format!("leading: {now:?}"))
                }
            }
        },
    )
    .await
    .unwrap();
    // Released, not expired: the standby's next retry takes it.
    assert!(
        stopped.elapsed() < RETRY_EVERY + Duration::from_secs(3),
        "hand-over took {:?}",
        stopped.elapsed()
    );
    assert_eq!(holder(plane, &ns).await.as_deref(), Some(other));
    replicas[0].2.cancel();
}
