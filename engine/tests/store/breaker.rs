//! The partners' circuit breakers (docs/operations.md#partner-incidents), with two stores on
//! one database as two worker processes: one user's failures never trip it, many at once trip
//! it once (one alert) and not below the failure ratio; while open only one probe is claimed,
//! a failed probe reopens it later, a probe that transferred closes it and clears the streaks
//! the incident caused.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    clock::{Clock, ManualClock},
    model::{Connection, ErrorInfo},
    store::{
        BreakerPolicy, BreakerSettings, BreakerState, BreakerTransition, Store, SyncEnd, SyncLease,
    },
    testing::TestDb,
};

use crate::{LEASE, actions::set, active};

engine::backend_tests!(
    many_failing_at_once_trip_it_once_one_user_never,
    an_open_breaker_probes_alone_and_closes_after_a_transfer,
);

fn settings() -> BreakerSettings {
    BreakerSettings {
        default: BreakerPolicy {
            window_secs: 3600,
            min_failures: 3,
            failure_ratio: 0.5,
            probe_base_secs: 60,
            probe_cap_secs: 1800,
        },
        partners: Default::default(),
        resume_spread: Duration::from_secs(300),
    }
}

/// Two processes sharing the database and a clock.
async fn two(db: &TestDb) -> (Store, Store, ManualClock) {
    let clock = ManualClock::new(Utc::now());
    let open = || async {
        db.store()
            .await
            .with_clock(Arc::new(clock.clone()))
            .with_breakers(settings())
    };
    (open().await, open().await, clock)
}

/// Starts `c`'s transfer: claimed (with whatever else is due) and started by `store`.
async fn start(store: &Store, c: &Connection) -> SyncLease {
    let claimed = store.claim_due(100, LEASE).await.unwrap();
    let k = claimed.iter().find(|k| k.id == c.id).expect("due");
    store
        .start_sync(k.id, k.version, LEASE)
        .await
        .unwrap()
        .unwrap()
}

/// Ends a transfer as failed by the partner's outage: counted in its streak and in the
/// breaker's window. Returns the breaker transition it made.
async fn outage(store: &Store, lease: &SyncLease) -> Option<BreakerTransition> {
    let trip = store
        .record_outage_failure("sandbox-cgm", lease.connection.id)
        .await
        .unwrap();
    let end = SyncEnd::Failed {
        next_sync_at: store.clock().now() + TimeDelta::minutes(5),
        error: ErrorInfo::new("partner_unavailable", "HTTP 503"),
        count_failure: true,
    };
    store.finish_sync(lease, end).await.unwrap().unwrap();
    trip
}

async fn fail(store: &Store, c: &Connection) -> Option<BreakerTransition> {
    let lease = start(store, c).await;
    outage(store, &lease).await
}

async fn state(store: &Store) -> Option<BreakerState> {
    store.breaker("sandbox-cgm").await.unwrap().map(|b| b.state)
}

async fn many_failing_at_once_trip_it_once_one_user_never(db: &TestDb) {
    let (a, b, clock) = two(db).await;
    let alone = active(&a, "alone", "a", "r").await;
    for _ in 0..5 {
        assert_eq!(fail(&a, &alone).await, None);
        clock.advance(TimeDelta::minutes(6));
    }
    assert_eq!(state(&a).await, None, "one user's failures are that user's");

    // Four connections that transferred within the window: 3 failing of 7 is below the ratio.
    let mut healthy = Vec::new();
    for i in 0..4 {
        let c = active(&a, &format!("ok{i}"), "a", "r").await;
        let claimed = a.claim_due(100, LEASE).await.unwrap();
        let k = claimed.iter().find(|k| k.id == c.id).unwrap();
        let lease = a.start_sync(k.id, k.version, LEASE).await.unwrap().unwrap();
        let next = clock.now() + TimeDelta::hours(1);
        a.finish_sync(&lease, SyncEnd::Yielded { next_sync_at: next })
            .await
            .unwrap()
            .unwrap();
        healthy.push(c);
    }
    let second = active(&b, "second", "a", "r").await;
    assert_eq!(fail(&b, &second).await, None);
    clock.advance(TimeDelta::minutes(6));
    assert_eq!(fail(&a, &alone).await, None, "2 of 6 failing");
    let third = active(&a, "third", "a", "r").await;
    assert_eq!(fail(&a, &third).await, None, "3 of 7: below half");
    assert_eq!(state(&a).await, None);

    // Two more failing, one in each process at the same time: 5 of 9 trips it, once.
    let (d, e) = (
        active(&a, "fourth", "a", "r").await,
        active(&b, "fifth", "a", "r").await,
    );
    let claimed = a.claim_due(100, LEASE).await.unwrap();
    let mut leases = Vec::new();
    for c in [&d, &e] {
        let k = claimed.iter().find(|k| k.id == c.id).expect("due");
        leases.push(b.start_sync(k.id, k.version, LEASE).await.unwrap().unwrap());
    }
    let (x, y) = tokio::join!(outage(&a, &leases[0]), outage(&b, &leases[1]));
    let trips: Vec<_> = [x, y].into_iter().flatten().collect();
    assert_eq!(trips, vec![BreakerTransition::Tripped]);
    assert_eq!(state(&b).await, Some(BreakerState::Open));
    // More failures while open trip nothing more and alert no more.
    let more = b
        .record_outage_failure("sandbox-cgm", healthy[0].id)
        .await
        .unwrap();
    assert_eq!(more, None);
    let alerts = a.alerts(10).await.unwrap();
    let outage: Vec<_> = alerts
        .iter()
        .filter(|a| a.code == "partner_outage")
        .collect();
    assert_eq!(outage.len(), 1, "{alerts:?}");
    assert_eq!(outage[0].count, 1);
    assert!(a.breaker_holds("sandbox-cgm").await.unwrap());
}

async fn an_open_breaker_probes_alone_and_closes_after_a_transfer(db: &TestDb) {
    let (a, b, clock) = two(db).await;
    let mut cs = Vec::new();
    for i in 0..4 {
        cs.push(active(&a, &format!("c{i}"), "a", "r").await);
    }
    // A streak older than the incident (the user's own trouble before the partner's).
    let old: DateTime<Utc> = clock.now() - TimeDelta::days(2);
    let claimed = a.claim_due(100, LEASE).await.unwrap();
    for c in &cs[..3] {
        let k = claimed.iter().find(|k| k.id == c.id).expect("due");
        let lease = a.start_sync(k.id, k.version, LEASE).await.unwrap().unwrap();
        outage(&a, &lease).await;
    }
    set(&a, &cs[0], "failing_since = $1", vec![old.into()]).await;
    assert_eq!(state(&a).await, Some(BreakerState::Open));

    // Everyone is due again, but only one probe is claimed, by one of the two processes.
    clock.advance(TimeDelta::minutes(10));
    let (x, y) = tokio::join!(a.claim_due(100, LEASE), b.claim_due(100, LEASE));
    let probes: Vec<_> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert_eq!(state(&a).await, Some(BreakerState::HalfOpen));
    assert!(a.claim_due(100, LEASE).await.unwrap().is_empty(), "probing");

    // The probe fails: open again, the next probe later.
    let probe = a
        .start_sync(probes[0].id, probes[0].version, LEASE)
        .await
        .unwrap()
        .unwrap();
    a.record_outage_failure("sandbox-cgm", probe.connection.id)
        .await
        .unwrap();
    let end = SyncEnd::Failed {
        next_sync_at: clock.now(),
        error: ErrorInfo::new("partner_unavailable", "HTTP 503"),
        count_failure: true,
    };
    a.finish_sync(&probe, end).await.unwrap().unwrap();
    assert!(b.claim_due(100, LEASE).await.unwrap().is_empty());
    let reopened = b.breaker("sandbox-cgm").await.unwrap().unwrap();
    assert_eq!((reopened.state, reopened.probes), (BreakerState::Open, 1));
    assert!(reopened.probe_at.unwrap() > clock.now());

    // The partner is back: the next probe transfers, and the claim after it closes the
    // breaker; the incident's streaks are cleared, the older one restarts now.
    clock.advance(TimeDelta::minutes(3));
    let probes = b.claim_due(100, LEASE).await.unwrap();
    assert_eq!(probes.len(), 1, "{probes:?}");
    let probe = b
        .start_sync(probes[0].id, probes[0].version, LEASE)
        .await
        .unwrap()
        .unwrap();
    let next = clock.now() + TimeDelta::hours(1);
    b.finish_sync(&probe, SyncEnd::Yielded { next_sync_at: next })
        .await
        .unwrap()
        .unwrap();
    a.claim_due(100, LEASE).await.unwrap();
    assert_eq!(state(&a).await, Some(BreakerState::Closed));
    assert!(!a.breaker_holds("sandbox-cgm").await.unwrap());
    let closed_at = clock.now();
    for c in &cs {
        let now = a.get(c.id).await.unwrap();
        if c.id == cs[0].id {
            assert_eq!(now.failing_since, Some(closed_at), "{now:?}");
        } else {
            assert_eq!((now.failure_count, now.failing_since), (0, None), "{now:?}");
        }
    }
    // The rest is due within the resume spread: all claimable five minutes on.
    clock.advance(TimeDelta::seconds(301));
    let mut claimed: Vec<_> = a.claim_due(100, LEASE).await.unwrap();
    claimed.sort_by_key(|k| k.id);
    let mut want: Vec<_> = cs
        .iter()
        .map(|c| c.id)
        .filter(|id| *id != probe.connection.id)
        .collect();
    want.sort();
    assert_eq!(claimed.iter().map(|k| k.id).collect::<Vec<_>>(), want);
}
