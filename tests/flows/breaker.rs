//! A partner outage (docs/operations.md#partner-incidents): ten connections of the sandbox CGM
//! partner, the partner down for 40 simulated hours. The circuit breaker trips once, the
//! partner is probed alone while it is down, nobody is moved to `failed` although the outage
//! is longer than the 30-hour failure budget, and after the recovery every connection is
//! `active` again with every record the partner published.

use api::auth::Role;
use chrono::TimeDelta;
use engine::{ids::ConnectionId, state::State, testing::TestDb};
use serde_json::Value;

use crate::{
    harness::{Harness, assert_same, expected, t0, user_at_partner},
    helpers::{TestApp, test_config},
};

engine::backend_tests!(a_forty_hour_outage_trips_the_breaker_and_everyone_catches_up,);

const USERS: usize = 10;

fn breaker_of(summary: &Value) -> Option<Value> {
    summary["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["partner"] == "sandbox-cgm")
        .cloned()
}

async fn a_forty_hour_outage_trips_the_breaker_and_everyone_catches_up(db: &TestDb) {
    let h = Harness::with_config(test_config(db)).await;
    let ops = h.app.token(Role::Ops, "olga");
    let store = h.app.workflows.store().clone();
    let mut ids: Vec<(String, ConnectionId)> = Vec::new();
    for i in 0..USERS {
        let user = format!("outage-{i}");
        let id = TestApp::id(&h.app.connect_fully(&user, "sandbox-cgm").await);
        ids.push((user, id));
    }
    assert_eq!(h.cycle().await.len(), USERS, "the first transfers");

    h.app.sandbox.faults().update(|f| f.maintenance_now = true);
    let outage_start = h.now();
    let mut tripped_at = None;
    let mut probes = 0;
    while h.now() - outage_start < TimeDelta::hours(40) {
        h.set_now(h.now() + TimeDelta::minutes(10));
        let reports = h.cycle().await;
        let (_, summary) = h.app.get("/v1/ops/summary", &ops).await;
        let breaker = breaker_of(&summary);
        let open = breaker.as_ref().is_some_and(|b| b["state"] != "closed");
        if open && tripped_at.is_none() {
            tripped_at = Some(h.now());
        }
        if tripped_at.is_some_and(|t| t < h.now()) {
            // Once the breaker was open for a whole cycle, only its probe transfers.
            assert!(reports.len() <= 1, "{reports:?}");
            probes += reports.len();
        }
        for (_, id) in &ids {
            // Refreshing: the background refresher is trying the token endpoint meanwhile.
            let state = store.get(*id).await.unwrap().state;
            assert!(
                matches!(state, State::Active | State::Refreshing),
                "{state:?}"
            );
        }
    }
    let tripped_at = tripped_at.expect("the breaker tripped");
    assert!(
        tripped_at - outage_start <= TimeDelta::hours(2),
        "tripped {} after the outage began",
        tripped_at - outage_start
    );
    // Probes back off to every 15–30 minutes: a few dozen in 40 hours, not one per cycle.
    assert!((20..=150).contains(&probes), "{probes} probes");
    let (_, alerts) = h.app.get("/v1/ops/alerts", &ops).await;
    let outage: Vec<&Value> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["code"] == "partner_outage")
        .collect();
    assert_eq!(outage.len(), 1, "{alerts}");
    assert_eq!(
        outage[0]["count"], 1,
        "operators are alerted once: {alerts}"
    );
    // While the partner is out, its connections are not reported as overdue.
    let (_, summary) = h.app.get("/v1/ops/summary", &ops).await;
    assert_eq!(summary["overdue"], 0, "{summary}");

    // The partner is back: the next probe closes the breaker and the missed 40 hours are
    // caught up, spread over the resume window.
    h.app.sandbox.faults().update(|f| f.maintenance_now = false);
    let recovered = h.now();
    let mut caught_up = false;
    while !caught_up && h.now() - recovered < TimeDelta::hours(2) {
        h.set_now(h.now() + TimeDelta::minutes(1));
        h.cycle().await;
        caught_up = true;
        for (_, id) in &ids {
            let c = store.get(*id).await.unwrap();
            caught_up &= c.last_sync_at.is_some_and(|t| t > recovered);
        }
    }
    assert!(
        caught_up,
        "every connection transferred within 2 h of the recovery"
    );
    let (_, summary) = h.app.get("/v1/ops/summary", &ops).await;
    assert_eq!(
        breaker_of(&summary).unwrap()["state"],
        "closed",
        "{summary}"
    );

    // All at one moment, so each has everything up to now.
    for (_, id) in &ids {
        store
            .request_sync(*id, std::time::Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(h.cycle().await.len(), USERS);
    for (user, id) in &ids {
        crate::helpers::eventually("no background refresh is running", || async {
            store.get(*id).await.unwrap().state != State::Refreshing
        })
        .await;
        let c = store.get(*id).await.unwrap();
        assert_eq!(c.state, State::Active, "{c:?}");
        assert_eq!((c.failure_count, c.failing_since), (0, None), "{c:?}");
        let journal = h.app.events(&id.to_string()).await;
        assert!(
            journal.iter().all(|e| e["to"] != "failed"),
            "{user}: {journal:?}"
        );
        let want = expected(
            &user_at_partner(user),
            t0() - TimeDelta::days(30),
            h.now(),
            &h.app,
        );
        assert_same(&h.stored(*id).await, &want);
    }
    h.app.stop().await;
}
