//! Transfers against partner faults and over time: faults end in the right states, late
//! deletions are applied by the late-change horizon, long transfers yield and resume, the
//! first sync starts within seconds.

use std::collections::BTreeSet;

use chrono::TimeDelta;
use engine::{ids::ConnectionId, state::State, testing::TestDb};
use sandbox::data;
use tributary::serve::Application;
use workflows::fetch::FetchReport;

use crate::{
    harness::{Harness, assert_same, expected, user_at_partner},
    helpers::{TestApp, test_config},
};

engine::backend_tests!(
    partner_faults_end_in_the_right_states,
    workers_start_the_first_sync_within_seconds,
    late_deletions_are_applied_by_the_late_change_horizon,
    a_long_transfer_yields_and_resumes_to_the_same_set,
);

async fn partner_faults_end_in_the_right_states(db: &TestDb) {
    let mut config = test_config(db);
    // Short enough to test a slow partner, long enough for a loaded test machine.
    config.sandbox.request_timeout_secs = 3;
    let h = Harness::with_config(config).await;
    let connection = h.app.connect_fully("eve", "sandbox-cgm").await;
    let id = TestApp::id(&connection);
    h.cycle().await;
    let store = h.app.workflows.store().clone();

    // 5xx: retried later with backoff, counted, still active.
    h.app.sandbox.faults().update(|f| f.fail_next.data = 1);
    let reports = h.next_cycle(id).await;
    assert!(
        matches!(&reports[..], [FetchReport::Failed { code }] if code == "partner_unavailable"),
        "{reports:?}"
    );
    let c = store.get(id).await.unwrap();
    assert_eq!((c.state, c.failure_count), (State::Active, 1));
    assert!(c.next_sync_at.unwrap() > h.now() + TimeDelta::minutes(2));
    // A success resets the count.
    h.next_cycle(id).await;
    assert_eq!(store.get(id).await.unwrap().failure_count, 0);

    // 429: waits as Retry-After says, not counted.
    h.app.sandbox.faults().update(|f| {
        f.rate_limit_next.data = 1;
        f.retry_after_secs = 600;
    });
    h.next_cycle(id).await;
    let c = store.get(id).await.unwrap();
    assert_eq!(c.failure_count, 0);
    assert_eq!(c.last_error.unwrap().code, "rate_limited");
    let wait = c.next_sync_at.unwrap() - h.now();
    assert!(wait >= TimeDelta::seconds(600), "{wait}");

    // Malformed body: transient.
    h.app.sandbox.faults().update(|f| f.malformed_next.data = 1);
    h.next_cycle(id).await;
    assert_eq!(store.get(id).await.unwrap().failure_count, 1);

    // A partner slower than the request timeout (3 s here): transient, counted, retried later.
    h.app.sandbox.faults().update(|f| f.latency_ms = 4000);
    let reports = h.next_cycle(id).await;
    h.app.sandbox.faults().update(|f| f.latency_ms = 0);
    assert!(
        matches!(&reports[..], [FetchReport::Failed { .. }]),
        "{reports:?}"
    );
    // The clock moved past the token's refresh time: the background refresh may be running.
    crate::helpers::eventually("the background refresh ends", || async {
        store.get(id).await.unwrap().state != State::Refreshing
    })
    .await;
    let c = store.get(id).await.unwrap();
    assert_eq!((c.state, c.failure_count), (State::Active, 2));
    let error = c.last_error.unwrap();
    assert!(error.message.contains("timed out after 3s"), "{error:?}");
    assert!(c.next_sync_at.unwrap() > h.now() + TimeDelta::minutes(2));

    // An expired access token is refreshed inline and the transfer succeeds.
    h.next_cycle(id).await;
    h.set_now(h.now() + TimeDelta::hours(3));
    let reports = h.cycle().await;
    assert!(
        matches!(&reports[..], [FetchReport::Completed { .. }]),
        "{reports:?}"
    );
    assert!(
        h.app
            .events(&id.to_string())
            .await
            .iter()
            .any(|e| e["event"] == "refreshed")
    );

    // Failures beyond the budget (30 h) fail the connection.
    h.app.sandbox.faults().update(|f| f.maintenance_now = true);
    let started = h.now();
    while store.get(id).await.unwrap().state == State::Active
        && h.now() - started < TimeDelta::hours(40)
    {
        h.next_cycle(id).await;
    }
    let c = store.get(id).await.unwrap();
    assert_eq!(c.state, State::Failed, "{c:?}");
    assert!(h.now() - started >= TimeDelta::hours(30));
    h.app.sandbox.faults().update(|f| f.maintenance_now = false);

    // A partner-side revocation ends in `revoked`.
    let (_, again) = h.app.connect("eve", "sandbox-cgm").await;
    let callback = h
        .app
        .consent(
            again["authorizeUrl"].as_str().unwrap(),
            "eve-at-partner",
            true,
        )
        .await;
    h.app.follow_callback(&callback).await;
    h.app
        .sandbox
        .revoke_user(sandbox::Flavor::Cgm, "eve-at-partner");
    h.set_now(h.now() + TimeDelta::seconds(5));
    h.cycle().await;
    let c = store.get(id).await.unwrap();
    assert_eq!(c.state, State::Revoked);
    assert_eq!(c.last_error.unwrap().code, "invalid_grant");
    h.app.stop().await;
}

async fn workers_start_the_first_sync_within_seconds(db: &TestDb) {
    let app = TestApp::from_app(Application::build(test_config(db)).await.unwrap());
    let connection = app.connect_fully("fay", "sandbox-pump").await;
    let id = TestApp::id(&connection);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let c = app.workflows.store().get(id).await.unwrap();
        if c.last_sync_at.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "first sync did not start: {c:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, page) = app
        .get("/v1/users/fay/data?type=bolus", &app.user_token("fay"))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(!page["data"].as_array().unwrap().is_empty(), "{page}");
    app.stop().await;
}

/// Dexcom deletes and corrects events long after their time (the sandbox deletes one 6 h after
/// it). A deletion that appears 6 h after the event lies beyond the 4 h overlap behind the
/// cursor: no regular transfer reads that time again, so before the late-change horizon these
/// deletions were never seen and the records stayed live for ever. The partner kind's horizon
/// (events, 7 days, once a day) re-reads them. Twenty users over 40 hours, cycle by cycle: every
/// event the partner deleted during the run is retired.
async fn late_deletions_are_applied_by_the_late_change_horizon(db: &TestDb) {
    let h = Harness::new(db).await;
    let mut ids = Vec::new();
    for u in 0..20 {
        ids.push(TestApp::id(
            &h.app
                .connect_fully(&format!("late{u}"), "sandbox-cgm")
                .await,
        ));
    }
    h.cycle().await;
    let started = h.now();
    while h.now() - started < TimeDelta::hours(40) {
        h.set_now(h.now() + TimeDelta::minutes(50));
        h.cycle().await;
    }
    let ctx = h.app.sandbox.data_context();
    let store = h.app.workflows.store();
    let (mut deleted_late, mut still_live) = (0, Vec::new());
    for (u, id) in ids.iter().enumerate() {
        let user = user_at_partner(&format!("late{u}"));
        let c = store.get(*id).await.unwrap();
        let reread = c.reread_at.expect("the horizon was read");
        assert!(
            reread > started + TimeDelta::hours(23),
            "and re-read a day later: {reread}"
        );
        let live: BTreeSet<String> = store
            .record_ids(*id, false)
            .await
            .unwrap()
            .into_iter()
            .collect();
        // Events whose deletion the partner published after the run began and before the last
        // re-read: the overlap never reads their time again.
        let since = started - TimeDelta::hours(6);
        for event in data::events(&ctx, &user, since, h.now(), reread) {
            if event.event_status == "deleted" {
                deleted_late += 1;
                if live.contains(&event.record_id) {
                    still_live.push(event.record_id);
                }
            }
        }
    }
    assert!(
        deleted_late > 0,
        "the partner deleted events during the run"
    );
    assert!(
        still_live.is_empty(),
        "late deletions not applied: {still_live:?} of {deleted_late}"
    );
    h.app.stop().await;
}

/// A transfer longer than `workers.max_run_secs` yields (due again at once, cursor where its last
/// window left it) and the next run resumes: the stored set is exactly the partner's.
async fn a_long_transfer_yields_and_resumes_to_the_same_set(db: &TestDb) {
    let mut config = test_config(db);
    config.sandbox.max_window_days = 1;
    config.workers.max_run_secs = 0;
    let h = Harness::with_config(config).await;
    let id: ConnectionId = TestApp::id(&h.app.connect_fully("yielder", "sandbox-cgm").await);
    let mut yields = 0;
    for _ in 0..40 {
        match h.cycle().await.as_slice() {
            [FetchReport::Yielded { windows, .. }] => {
                assert_eq!(*windows, 1, "one window per run with max_run 0");
                yields += 1;
                let c = h.app.workflows.store().get(id).await.unwrap();
                assert!(c.next_sync_at.unwrap() <= h.now(), "due again at once");
                assert!(c.fetched_through.is_some());
            }
            [FetchReport::Completed { .. }] => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        yields >= 29,
        "a 30-day backfill in one-day windows yields: {yields}"
    );
    let want = expected(
        &user_at_partner("yielder"),
        h.now() - TimeDelta::days(30),
        h.now(),
        &h.app,
    );
    assert_same(&h.stored(id).await, &want);
}
