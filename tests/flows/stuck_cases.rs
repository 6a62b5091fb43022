//! Connections made stuck on purpose, the ways they get stuck in production
//! (docs/operations.md#stuck): a fetch job lost after its claim, a worker killed mid-transfer,
//! a partner that stops sending data. Each is listed over HTTP with the right reason, the
//! doctor finds what is a violation, and a replay over HTTP recovers it: the next transfer
//! completes. (The breaker test covers a partner outage; the console's test replays from the
//! browser; tests/cli/actions.rs from the shell.)

use api::auth::Role;
use chrono::TimeDelta;
use engine::{ids::ConnectionId, testing::TestDb};
use serde_json::{Value, json};
use std::time::Duration;

use crate::{
    harness::Harness,
    helpers::{TestApp, test_config},
};

engine::backend_tests!(stuck_on_purpose_is_listed_found_and_replayed,);

const LEASE: Duration = Duration::from_secs(120);

async fn listed(h: &Harness, ops: &str, reason: &str) -> Vec<(String, Value)> {
    let (_, page) = h
        .app
        .get(&format!("/v1/ops/connections?reason={reason}"), ops)
        .await;
    page["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["stuckReasons"].clone(),
            )
        })
        .collect()
}

async fn replay(h: &Harness, ops: &str, id: ConnectionId, why: &str) -> Value {
    let (status, body) = h
        .app
        .post_json(
            &format!("/v1/ops/connections/{id}/replay"),
            ops,
            json!({ "reason": why }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    body
}

/// Runs what is due and says whether `id` completed a transfer.
async fn recovered(h: &Harness, id: ConnectionId) -> bool {
    let before = h.app.workflows.store().get(id).await.unwrap().last_sync_at;
    h.set_now(h.now() + TimeDelta::seconds(1));
    h.cycle().await;
    h.app.workflows.store().get(id).await.unwrap().last_sync_at > before
}

async fn stuck_on_purpose_is_listed_found_and_replayed(db: &TestDb) {
    let h = Harness::with_config(test_config(db)).await;
    let ops = h.app.token(Role::Ops, "olga");
    let store = h.app.workflows.store().clone();
    let mut ids = Vec::new();
    for user in ["lost", "killed", "silent"] {
        ids.push(TestApp::id(&h.app.connect_fully(user, "sandbox-cgm").await));
    }
    assert_eq!(h.cycle().await.len(), 3);
    let (lost, killed, silent) = (ids[0], ids[1], ids[2]);

    // A job lost after its claim: the dispatcher claimed the connection, the job never came.
    store
        .request_sync(lost, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let claimed = store.claim_due(10, LEASE).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), [lost]);
    h.set_now(h.now() + TimeDelta::minutes(1));
    let found = listed(&h, &ops, "claim_without_job").await;
    assert_eq!(found, [(lost.to_string(), json!(["claim_without_job"]))]);
    assert!(!recovered(&h, lost).await, "claimed: nothing runs it");
    let done = replay(&h, &ops, lost, "fetch job lost").await;
    assert_eq!(done["leaseCleared"], true, "{done}");
    assert!(recovered(&h, lost).await);
    assert!(listed(&h, &ops, "claim_without_job").await.is_empty());

    // A worker killed mid-transfer: the transfer started (a lease token) and never ended.
    store
        .request_sync(killed, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let claimed = store.claim_due(10, LEASE).await.unwrap();
    let k = claimed.iter().find(|c| c.id == killed).unwrap();
    let fetch_lease = Duration::from_secs(300);
    assert!(
        store
            .start_sync(k.id, k.version, fetch_lease)
            .await
            .unwrap()
            .is_some()
    );
    // Past the fetch lease and the doctor's grace.
    h.set_now(h.now() + TimeDelta::minutes(16));
    let found = listed(&h, &ops, "lease_past_bound").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, killed.to_string());
    let (_, report) = h.app.get("/v1/ops/doctor", &ops).await;
    let stale = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["code"] == "sync_lease_stale")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(stale["sample"], json!([killed.to_string()]), "{report}");
    let done = replay(&h, &ops, killed, "worker killed").await;
    assert_eq!(done["leaseCleared"], true, "{done}");
    assert!(recovered(&h, killed).await);
    assert!(listed(&h, &ops, "lease_past_bound").await.is_empty());

    // A partner that stops sending data: transfers "succeed" with nothing new.
    h.app
        .sandbox
        .faults()
        .update(|f| f.publication_delay_secs = 30 * 86_400);
    for _ in 0..6 {
        h.next_cycle(silent).await;
    }
    let found = listed(&h, &ops, "data_not_advancing").await;
    assert!(
        found.iter().any(|(id, _)| *id == silent.to_string()),
        "{found:?}"
    );
    // The partner sends again; the replayed transfer brings the data and clears the reason.
    h.app
        .sandbox
        .faults()
        .update(|f| f.publication_delay_secs = 0);
    replay(&h, &ops, silent, "partner publishing again").await;
    assert!(recovered(&h, silent).await);
    let found = listed(&h, &ops, "data_not_advancing").await;
    assert!(
        found.iter().all(|(id, _)| *id != silent.to_string()),
        "{found:?}"
    );
    h.app.stop().await;
}
