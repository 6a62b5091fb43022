//! Every rejected callback changes nothing it should not (docs/oauth.md#callback): bad, replayed, expired or
//! foreign state; replayed code; wrong partner; wrong issuer; declined consent.

use std::{collections::HashMap, sync::Arc};

use chrono::{TimeDelta, Utc};
use engine::{clock::ManualClock, testing::TestDb};
use reqwest::StatusCode;
use serde_json::Value;
use tributary::serve::Application;
use url::Url;

use crate::helpers::{TestApp, test_config};

engine::backend_tests!(
    unknown_or_missing_state_is_rejected,
    replayed_callback_exchanges_the_code_once,
    restarted_authorization_invalidates_old_state,
    state_for_another_partner_is_rejected_and_not_spent,
    issuer_mismatch_is_rejected_and_not_spent,
    declined_consent_fails_the_connection,
    partner_error_keeps_authorizing,
    expired_state_is_rejected,
);

/// What must not change: the row and its journal length, and no token request at the partner.
async fn snapshot(app: &TestApp, id: &str) -> (Value, usize, u64) {
    let connection = app.connection(id).await;
    let stats = app.sandbox.stats();
    (
        connection,
        app.events(id).await.len(),
        stats.cgm.code_exchanges + stats.pump.code_exchanges,
    )
}

fn with_query(callback: &Url, change: impl FnOnce(&mut HashMap<String, String>)) -> Url {
    let mut pairs: HashMap<String, String> = callback.query_pairs().into_owned().collect();
    change(&mut pairs);
    let mut url = callback.clone();
    url.query_pairs_mut().clear().extend_pairs(pairs.iter());
    url
}

async fn started(app: &TestApp, user: &str, partner: &str) -> (String, Url) {
    let (status, body) = app.connect(user, partner).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let callback = app
        .consent(
            body["authorizeUrl"].as_str().unwrap(),
            &format!("{user}-p"),
            true,
        )
        .await;
    (body["id"].as_str().unwrap().to_owned(), callback)
}

async fn unknown_or_missing_state_is_rejected(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let (id, callback) = started(&app, "u1", "sandbox-cgm").await;
    let before = snapshot(&app, &id).await;
    for bad in [
        with_query(&callback, |q| {
            q.insert("state".into(), "not-a-state-we-issued".into());
        }),
        with_query(&callback, |q| {
            q.remove("state");
        }),
        with_query(&callback, |q| {
            q.insert("state".into(), String::new());
        }),
        with_query(&callback, |q| {
            q.insert("state".into(), "x".repeat(10_000));
        }),
    ] {
        let (status, page) = app.follow_callback(&bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    }
    assert_eq!(snapshot(&app, &id).await, before);
    // The genuine callback still works afterwards.
    assert_eq!(app.follow_callback(&callback).await.0, StatusCode::OK);
    assert_eq!(app.connection(&id).await["state"], "active");
    app.stop().await;
}

async fn replayed_callback_exchanges_the_code_once(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let (id, callback) = started(&app, "u2", "sandbox-cgm").await;
    let (first, second) = tokio::join!(
        app.follow_callback(&callback),
        app.follow_callback(&callback)
    );
    // One exchanged the code; the other found the state spent: "already connected" if the
    // first had committed by then, else "not valid" (the connection was still authorizing).
    let pages = [first, second];
    let connected = pages
        .iter()
        .filter(|(status, page)| *status == StatusCode::OK && !page.contains("Already"))
        .count();
    assert_eq!(connected, 1, "{pages:?}");
    assert!(
        pages
            .iter()
            .any(|(status, page)| page.contains("Already connected")
                || (*status == StatusCode::BAD_REQUEST && page.contains("state_reused"))),
        "{pages:?}"
    );
    let after = snapshot(&app, &id).await;
    assert_eq!(after.2, 1, "...but the code was exchanged exactly once");
    assert_eq!(app.sandbox.stats().cgm.code_replays, 0);
    // A later replay changes nothing either, and says the user is connected.
    let (status, page) = app.follow_callback(&callback).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Already connected"), "{page}");
    assert_eq!(snapshot(&app, &id).await, after);
    assert_eq!(after.0["state"], "active");
    app.stop().await;
}

async fn restarted_authorization_invalidates_old_state(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let (id, old_callback) = started(&app, "u3", "sandbox-cgm").await;
    let (status, body) = app
        .post(
            &format!("/v1/connections/{id}/authorize"),
            &app.user_token("u3"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = snapshot(&app, &id).await;
    let (status, _) = app.follow_callback(&old_callback).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(snapshot(&app, &id).await, before);
    let callback = app
        .consent(body["authorizeUrl"].as_str().unwrap(), "u3-p", true)
        .await;
    assert_eq!(app.follow_callback(&callback).await.0, StatusCode::OK);
    app.stop().await;
}

async fn state_for_another_partner_is_rejected_and_not_spent(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let (id, callback) = started(&app, "u4", "sandbox-cgm").await;
    let before = snapshot(&app, &id).await;
    let mut foreign = callback.clone();
    foreign.set_path("/v1/oauth/sandbox-pump/callback");
    let (status, _) = app.follow_callback(&foreign).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut unknown = callback.clone();
    unknown.set_path("/v1/oauth/no-such-partner/callback");
    let (status, _) = app.follow_callback(&unknown).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(snapshot(&app, &id).await, before);
    assert_eq!(
        app.follow_callback(&callback).await.0,
        StatusCode::OK,
        "state not spent"
    );
    app.stop().await;
}

async fn issuer_mismatch_is_rejected_and_not_spent(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let (id, callback) = started(&app, "u5", "sandbox-pump").await;
    let before = snapshot(&app, &id).await;
    for bad in [
        with_query(&callback, |q| {
            q.insert("iss".into(), "https://attacker.example/".into());
        }),
        with_query(&callback, |q| {
            q.remove("iss");
        }),
    ] {
        let (status, page) = app.follow_callback(&bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    }
    assert_eq!(snapshot(&app, &id).await, before);
    assert_eq!(app.follow_callback(&callback).await.0, StatusCode::OK);
    app.stop().await;
}

async fn declined_consent_fails_the_connection(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let (status, body) = app.connect("u6", "sandbox-cgm").await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"].as_str().unwrap().to_owned();
    let callback = app
        .consent(body["authorizeUrl"].as_str().unwrap(), "u6-p", false)
        .await;
    assert!(
        callback
            .query_pairs()
            .any(|(k, v)| k == "error" && v == "access_denied")
    );
    let (status, page) = app.follow_callback(&callback).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let connection = app.connection(&id).await;
    assert_eq!(connection["state"], "failed");
    assert_eq!(connection["lastError"]["code"], "authorization_declined");
    assert_eq!(app.sandbox.stats().cgm.code_exchanges, 0);
    let events = app.events(&id).await;
    assert_eq!(events.last().unwrap()["event"], "authorization_declined");
    // No operator alert for a user's own decision.
    let (_, alerts) = app
        .get("/v1/ops/alerts", &app.token(api::auth::Role::Ops, "ops"))
        .await;
    assert!(!alerts.to_string().contains(&id), "{alerts}");
    // Replaying the decline changes nothing.
    let before = snapshot(&app, &id).await;
    assert_eq!(
        app.follow_callback(&callback).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(snapshot(&app, &id).await, before);
    app.stop().await;
}

async fn partner_error_keeps_authorizing(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let (id, callback) = started(&app, "u7", "sandbox-cgm").await;
    let errored = with_query(&callback, |q| {
        q.remove("code");
        q.insert("error".into(), "temporarily_unavailable".into());
    });
    let (status, _) = app.follow_callback(&errored).await;
    assert_eq!(status, StatusCode::OK);
    let connection = app.connection(&id).await;
    assert_eq!(connection["state"], "authorizing");
    assert_eq!(connection["lastError"]["code"], "authorization_unavailable");
    let (id2, callback2) = started(&app, "u8", "sandbox-cgm").await;
    let misconfigured = with_query(&callback2, |q| {
        q.remove("code");
        q.insert("error".into(), "invalid_scope".into());
    });
    app.follow_callback(&misconfigured).await;
    assert_eq!(app.connection(&id2).await["state"], "failed");
    let (_, alerts) = app
        .get("/v1/ops/alerts", &app.token(api::auth::Role::Ops, "ops"))
        .await;
    assert!(
        alerts.to_string().contains(&id2),
        "operators alerted: {alerts}"
    );
    app.stop().await;
}

async fn expired_state_is_rejected(db: &TestDb) {
    let clock = ManualClock::new(Utc::now());
    let app = TestApp::from_app(
        Application::build_with_clock(test_config(db), Arc::new(clock.clone()))
            .await
            .unwrap()
            .without_dispatch(),
    );
    let (id, callback) = started(&app, "u9", "sandbox-cgm").await;
    let before = snapshot(&app, &id).await;
    clock.advance(TimeDelta::minutes(11));
    let (status, page) = app.follow_callback(&callback).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert_eq!(snapshot(&app, &id).await, before);
    app.stop().await;
}
