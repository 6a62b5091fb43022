//! Connect, reuse, restart authorization, disconnect, journal.

use std::collections::HashMap;

use api::auth::Role;
use poem::http::StatusCode;
use url::Url;

use crate::helpers::{CGM, PUMP, TestApi, state_of};

#[tokio::test]
async fn partners_are_listed() {
    let app = TestApi::spawn().await;
    let reply = app.get("/v1/partners", &app.user("alice")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let partners = reply.json();
    let cgm = partners
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == CGM)
        .unwrap();
    assert_eq!(cgm["displayName"], "Test sandbox-cgm");
    assert_eq!(cgm["kind"], "dexcom");
    assert_eq!(cgm["scopes"], serde_json::json!(["offline_access"]));
    assert!(
        partners
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == PUMP && p["kind"] == "pump")
    );
    assert!(!reply.text.contains("client-secret") && !reply.text.contains("clientId"));
}

#[tokio::test]
async fn create_then_reuse() {
    let app = TestApi::spawn().await;
    let created = app.connect("alice", CGM).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert!(created.content_type().starts_with("application/json"));
    let body = created.json();
    assert_eq!(body["state"], "authorizing");
    assert_eq!(body["userId"], "alice");
    assert_eq!(body["partner"], CGM);
    assert_eq!(body["version"], 1);
    assert_eq!(body["failureCount"], 0);
    assert_eq!(body["paused"], false);
    assert!(body["lastError"].is_null() && body["createdAt"].is_string());
    for field in [
        "id",
        "userId",
        "partner",
        "state",
        "version",
        "createdAt",
        "updatedAt",
        "stateChangedAt",
        "lastError",
        "failureCount",
        "paused",
        "tokenExpiresAt",
        "scope",
        "earliestDataTime",
        "latestDataTime",
        "lastSyncAt",
        "nextSyncAt",
        "fetchedThrough",
        "failingSince",
        "authorizeUrl",
    ] {
        assert!(body.get(field).is_some(), "{field} missing: {body}");
    }
    let url = Url::parse(body["authorizeUrl"].as_str().unwrap()).unwrap();
    let query: HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["response_type"], "code");
    assert!(query["state"].len() >= 32);
    assert!(query["redirect_uri"].ends_with("/v1/oauth/sandbox-cgm/callback"));

    // Again: the same row is reused (restarted authorization), with a new state.
    let again = app.connect("alice", CGM).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let again = again.json();
    assert_eq!(again["id"], body["id"]);
    assert_ne!(state_of(&again), state_of(&body));

    // A different partner is a different connection.
    let pump = app.connect("alice", PUMP).await;
    assert_eq!(pump.status, StatusCode::CREATED);
    let list = app
        .get("/v1/users/alice/connections", &app.user("alice"))
        .await
        .json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(
        app.get("/v1/users/nobody/connections", &app.ops())
            .await
            .json(),
        serde_json::json!([])
    );
}

#[tokio::test]
async fn authorize_disconnect_and_journal() {
    let app = TestApi::spawn().await;
    let alice = app.user("alice");
    let (id, first_state) = app.start("alice", CGM).await;

    let authorized = app
        .post(&format!("/v1/connections/{id}/authorize"), &alice)
        .await;
    assert_eq!(authorized.status, StatusCode::OK, "{}", authorized.text);
    let authorized = authorized.json();
    assert_eq!(authorized["state"], "authorizing");
    assert_ne!(
        state_of(&authorized),
        first_state,
        "a fresh state each time"
    );

    let disconnected = app
        .post(&format!("/v1/connections/{id}/disconnect"), &alice)
        .await;
    assert_eq!(disconnected.status, StatusCode::OK, "{}", disconnected.text);
    assert_eq!(disconnected.json()["state"], "revoked");
    let problem = app
        .post(&format!("/v1/connections/{id}/disconnect"), &alice)
        .await
        .assert_problem(409, "invalid_transition");
    assert!(
        problem["detail"].as_str().unwrap().contains("revoked"),
        "{problem}"
    );

    // The earlier authorization's state no longer works.
    let page = app
        .callback(CGM, &format!("state={}&code=abc", state_of(&authorized)))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.text);

    let events = app
        .get(&format!("/v1/connections/{id}/events"), &alice)
        .await;
    assert_eq!(events.status, StatusCode::OK);
    let events = events.json();
    let events = events.as_array().unwrap();
    let summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap_or("-").to_owned(),
                e["to"].as_str().unwrap().to_owned(),
                e["event"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("-", "authorizing", "start_authorization"),
            ("authorizing", "authorizing", "start_authorization"),
            ("authorizing", "revoked", "disconnect"),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    assert!(events.iter().all(|e| e["actor"] == "user:alice"));
    assert_eq!(events[0]["seq"], 1);
    assert!(events[0]["from"].is_null());
    assert!(events[0]["at"].is_string() && events[0].get("details").is_some());

    // Reconnect reuses the revoked row.
    let again = app.connect("alice", CGM).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.json()["id"], id.as_str());
}

#[tokio::test]
async fn already_active_is_409_and_operators_can_disconnect() {
    let app = TestApi::spawn().await;
    let id = app.connect_fully("dana").await;
    let connection = app
        .get(&format!("/v1/connections/{id}"), &app.user("dana"))
        .await
        .json();
    assert_eq!(connection["state"], "active");
    assert_eq!(connection["scope"], "offline_access");
    assert!(connection["tokenExpiresAt"].is_string());

    app.connect("dana", CGM)
        .await
        .assert_problem(409, "already_active");
    app.post(
        &format!("/v1/connections/{id}/authorize"),
        &app.user("dana"),
    )
    .await
    .assert_problem(409, "already_active");

    let ops = app.token(Role::Ops, "oncall");
    let reply = app
        .post(&format!("/v1/connections/{id}/disconnect"), &ops)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let events = app
        .get(&format!("/v1/connections/{id}/events"), &ops)
        .await
        .json();
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], "disconnect");
    assert_eq!(last["actor"], "ops:oncall");
}

#[tokio::test]
async fn no_response_carries_token_material() {
    let app = TestApi::spawn().await;
    let id = app.connect_fully("erin").await;
    let ops = app.ops();
    let erin = app.user("erin");
    let refreshed = app
        .post(&format!("/v1/connections/{id}/refresh"), &ops)
        .await;
    assert_eq!(
        refreshed.json()["outcome"],
        "refreshed",
        "{}",
        refreshed.text
    );

    let mut bodies = vec![refreshed.text];
    for (path, token) in [
        (format!("/v1/connections/{id}"), &erin),
        (format!("/v1/connections/{id}/events"), &erin),
        ("/v1/users/erin/connections".to_owned(), &erin),
        (format!("/v1/connections/{id}/revocations"), &ops),
        ("/v1/ops/alerts".to_owned(), &ops),
        ("/openapi.json".to_owned(), &ops),
    ] {
        let reply = app.get(&path, token).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        bodies.push(reply.text);
    }
    let disconnected = app
        .post(&format!("/v1/connections/{id}/disconnect"), &erin)
        .await;
    bodies.push(disconnected.text);
    let revocations = app
        .get(&format!("/v1/connections/{id}/revocations"), &ops)
        .await;
    assert_eq!(
        revocations.json().as_array().unwrap().len(),
        1,
        "{}",
        revocations.text
    );
    bodies.push(revocations.text);

    let issued = app.partner.issued();
    assert_eq!(issued.len(), 4, "exchange + refresh: {issued:?}");
    for body in &bodies {
        for token in &issued {
            assert!(!body.contains(token.as_str()), "a token leaked: {body}");
        }
        assert!(
            !body.contains("access_token") && !body.contains("refresh_token"),
            "{body}"
        );
        assert!(
            !body.contains("AT-fake") && !body.contains("RT-fake"),
            "{body}"
        );
    }
}
