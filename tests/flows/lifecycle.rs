//! After connecting: refresh with rotation, partner-side revocation, disconnect with RFC 7009
//! revocation at the partner (and its background retry while the partner is down).

use std::sync::Arc;

use api::auth::Role;
use chrono::{TimeDelta, Utc};
use engine::{clock::ManualClock, model::Actor, testing::TestDb};
use reqwest::StatusCode;
use sandbox::Flavor;
use serde_json::Value;
use tributary::serve::Application;
use workflows::RefreshOutcome;

use crate::helpers::{TestApp, eventually, test_config};

engine::backend_tests!(
    expiring_access_token_is_refreshed_with_rotation,
    partner_side_revocation_is_detected,
    disconnect_revokes_at_partner,
    disconnect_while_partner_down_retries_in_background,
    concurrent_refreshes_make_one_token_request,
);

fn has_event(events: &[Value], name: &str) -> bool {
    events.iter().any(|e| e["event"] == name)
}

async fn expiring_access_token_is_refreshed_with_rotation(db: &TestDb) {
    // No transfers run, so the refresh can only come from the refresh dispatcher's jobs (a
    // transfer would refresh inline, as `system:fetch`).
    let app = TestApp::from_app(
        Application::build(test_config(db))
            .await
            .unwrap()
            .without_dispatch(),
    );
    // The partner issues access tokens that live two seconds: due for a refresh 1.5 s after
    // they are stored.
    app.sandbox
        .faults()
        .update(|f| f.access_token_ttl_secs = Some(2));
    let connection = app.connect_fully("frank", "sandbox-cgm").await;
    let id = TestApp::id(&connection);
    let before = app.workflows.store().tokens(id).await.unwrap().unwrap();

    eventually(
        "the refresh dispatcher refreshes the expiring token",
        || async { has_event(&app.events(&id.to_string()).await, "refreshed") },
    )
    .await;
    app.sandbox
        .faults()
        .update(|f| f.access_token_ttl_secs = None);

    let events = app.events(&id.to_string()).await;
    let refreshed = events.iter().find(|e| e["event"] == "refreshed").unwrap();
    assert_eq!(refreshed["from"], "refreshing");
    assert_eq!(refreshed["to"], "active");
    assert_eq!(refreshed["details"]["rotated"], true);
    assert_eq!(
        refreshed["actor"], "system:refresher",
        "a refresh job, not a transfer"
    );
    assert!(has_event(&events, "refresh_started"));
    let after = app.workflows.store().tokens(id).await.unwrap().unwrap();
    assert_ne!(
        after.refresh_token, before.refresh_token,
        "rotated refresh token stored"
    );
    assert_ne!(after.access_token, before.access_token);
    assert!(app.sandbox.stats().cgm.rotations >= 1);
    let connection = app.connection(&id.to_string()).await;
    assert_eq!(connection["state"], "active");
    assert_eq!(connection["failureCount"], 0);
    app.stop().await;
}

async fn partner_side_revocation_is_detected(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let connection = app.connect_fully("gina", "sandbox-cgm").await;
    let id = connection["id"].as_str().unwrap().to_owned();
    assert_eq!(app.sandbox.revoke_user(Flavor::Cgm, "gina-at-partner"), 1);

    // An operator forces a refresh (the transfer worker does the same on a 401).
    let (status, body) = app
        .post(
            &format!("/v1/connections/{id}/refresh"),
            &app.token(Role::Ops, "ops"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let connection = app.connection(&id).await;
    assert_eq!(connection["state"], "revoked");
    assert_eq!(connection["lastError"]["code"], "invalid_grant");
    assert!(
        app.workflows
            .store()
            .tokens(id.parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let events = app.events(&id).await;
    let last = events.last().unwrap();
    assert_eq!(last["event"], "partner_revoked");
    assert_eq!(last["from"], "refreshing");
    assert_eq!(last["actor"], "ops:ops");
    // Temporary errors never revoke (docs/oauth.md#token-endpoint-errors): 5xx from the token
    // endpoint after reconnecting.
    let (_, again) = app.connect("gina", "sandbox-cgm").await;
    let callback = app
        .consent(again["authorizeUrl"].as_str().unwrap(), "gina2", true)
        .await;
    assert_eq!(app.follow_callback(&callback).await.0, StatusCode::OK);
    app.sandbox.faults().update(|f| f.token_down = true);
    let outcome = app
        .workflows
        .refresh(id.parse().unwrap(), Actor::system("test"))
        .await
        .unwrap();
    assert!(
        matches!(outcome, RefreshOutcome::Deferred { .. }),
        "{outcome:?}"
    );
    let connection = app.connection(&id).await;
    assert_eq!(connection["state"], "active");
    assert_eq!(connection["refreshFailures"], 1);
    assert_eq!(
        connection["failureCount"], 0,
        "the transfer streak is the transfer's own"
    );
    assert_eq!(connection["lastError"]["code"], "partner_unavailable");
    app.sandbox.faults().update(|f| f.token_down = false);
    app.stop().await;
}

async fn disconnect_revokes_at_partner(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let connection = app.connect_fully("hank", "sandbox-pump").await;
    let id = connection["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post(
            &format!("/v1/connections/{id}/disconnect"),
            &app.user_token("hank"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "revoked");
    assert!(
        app.workflows
            .store()
            .tokens(id.parse().unwrap())
            .await
            .unwrap()
            .is_none(),
        "unusable at once"
    );

    eventually("the partner confirms the revocation", || async {
        has_event(&app.events(&id).await, "partner_revocation_confirmed")
    })
    .await;
    let stats = app.sandbox.stats();
    assert_eq!(stats.pump.revocations, 1);
    let call = stats.pump.recent_revocations.back().unwrap();
    assert_eq!(call.token_type_hint.as_deref(), Some("refresh_token"));
    assert!(call.revoked_grant);
    assert_eq!(stats.pump.live_grants, 0);

    let (status, problem) = app
        .post(
            &format!("/v1/connections/{id}/disconnect"),
            &app.user_token("hank"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["code"], "invalid_transition");
    app.stop().await;
}

async fn disconnect_while_partner_down_retries_in_background(db: &TestDb) {
    let clock = ManualClock::new(Utc::now());
    let app = Application::build_with_clock(test_config(db), Arc::new(clock.clone()))
        .await
        .unwrap()
        .without_dispatch();
    let app = TestApp::from_app(app);
    let connection = app.connect_fully("ivy", "sandbox-cgm").await;
    let id = connection["id"].as_str().unwrap().to_owned();
    app.sandbox.faults().update(|f| f.revoke_down = true);
    let (status, body) = app
        .post(
            &format!("/v1/connections/{id}/disconnect"),
            &app.user_token("ivy"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        app.workflows
            .store()
            .tokens(id.parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );

    let revocations = |app: &TestApp| {
        let id = id.clone();
        let store = app.workflows.store().clone();
        async move { store.revocations(id.parse().unwrap()).await.unwrap() }
    };
    eventually("a failed attempt is recorded", || async {
        revocations(&app)
            .await
            .first()
            .is_some_and(|r| r.attempts >= 1)
    })
    .await;
    let pending = revocations(&app).await;
    assert!(pending[0].completed_at.is_none());
    assert!(pending[0].last_error.is_some());
    assert_eq!(
        app.sandbox.stats().cgm.live_grants,
        1,
        "not revoked at the partner yet"
    );

    app.sandbox.faults().update(|f| f.revoke_down = false);
    clock.advance(TimeDelta::hours(1));
    eventually("the retry succeeds", || async {
        revocations(&app).await[0].outcome.as_deref() == Some("revoked")
    })
    .await;
    assert_eq!(app.sandbox.stats().cgm.live_grants, 0);
    assert!(has_event(
        &app.events(&id).await,
        "partner_revocation_confirmed"
    ));
    app.stop().await;
}

async fn concurrent_refreshes_make_one_token_request(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let connection = app.connect_fully("jack", "sandbox-cgm").await;
    let id = TestApp::id(&connection);
    app.sandbox.faults().update(|f| f.latency_ms = 300);
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let workflows = app.workflows.clone();
            tokio::spawn(
                async move { workflows.refresh(id, Actor::system(&format!("w{i}"))).await },
            )
        })
        .collect();
    let mut refreshed = 0;
    for call in calls {
        match call.await.unwrap().unwrap() {
            RefreshOutcome::Refreshed { .. } => refreshed += 1,
            RefreshOutcome::Busy => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    app.sandbox.faults().update(|f| f.latency_ms = 0);
    assert_eq!(refreshed, 1, "one refresh at a time per connection");
    let stats = app.sandbox.stats();
    assert_eq!(stats.cgm.refreshes, 1);
    assert_eq!(stats.cgm.reuse_detections, 0);
    assert_eq!(app.connection(&id.to_string()).await["state"], "active");
    app.stop().await;
}
