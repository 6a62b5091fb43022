//! Operator endpoints: forced refresh, alerts, revocations.

use api::auth::Role;
use poem::http::StatusCode;

use crate::helpers::{CGM, TestApi};

#[tokio::test]
async fn refresh_outcomes_and_roles() {
    let app = TestApi::spawn().await;
    let (pending, _) = app.start("alice", CGM).await;
    let ops = app.ops();
    let reply = app
        .post(&format!("/v1/connections/{pending}/refresh"), &ops)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["outcome"], "not_needed");
    assert_eq!(body["connection"]["state"], "authorizing");

    let active = app.connect_fully("bob").await;
    let service = app.token(Role::Service, "tidepool-web");
    let reply = app
        .post(&format!("/v1/connections/{active}/refresh"), &service)
        .await;
    assert_eq!(reply.json()["outcome"], "refreshed", "{}", reply.text);
    let events = app
        .get(&format!("/v1/connections/{active}/events"), &ops)
        .await
        .json();
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["event"].as_str(), last["actor"].as_str()),
        (Some("refreshed"), Some("service:tidepool-web"))
    );

    // Users may not force refreshes, even of their own connections.
    app.post(
        &format!("/v1/connections/{active}/refresh"),
        &app.user("bob"),
    )
    .await
    .assert_problem(403, "forbidden");
    app.post(
        "/v1/connections/0190f5e2-7b1c-7d3e-8f00-0123456789ab/refresh",
        &ops,
    )
    .await
    .assert_problem(404, "not_found");
}

#[tokio::test]
async fn alerts_are_for_operators() {
    let app = TestApi::spawn().await;
    app.workflows
        .store()
        .raise_alert(
            CGM,
            None,
            &engine::model::ErrorInfo::new(
                "partner_configuration",
                "token endpoint said invalid_client",
            ),
        )
        .await
        .unwrap();
    let reply = app.get("/v1/ops/alerts?limit=10", &app.ops()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let alerts = reply.json();
    assert_eq!(alerts[0]["partner"], CGM);
    assert_eq!(alerts[0]["code"], "partner_configuration");
    assert!(alerts[0]["createdAt"].is_string() && alerts[0]["connectionId"].is_null());

    for token in [app.user("alice"), app.token(Role::Service, "web")] {
        app.get("/v1/ops/alerts", &token)
            .await
            .assert_problem(403, "forbidden");
    }
}

#[tokio::test]
async fn revocations_are_listed_without_tokens() {
    let app = TestApi::spawn().await;
    let id = app.connect_fully("carol").await;
    let ops = app.ops();
    assert_eq!(
        app.get(&format!("/v1/connections/{id}/revocations"), &ops)
            .await
            .json(),
        serde_json::json!([])
    );
    app.post(
        &format!("/v1/connections/{id}/disconnect"),
        &app.user("carol"),
    )
    .await;
    let reply = app
        .get(&format!("/v1/connections/{id}/revocations"), &ops)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let revocation = reply.json()[0].clone();
    assert_eq!(revocation["connectionId"], id);
    assert_eq!(revocation["partner"], CGM);
    assert!(revocation["nextAttemptAt"].is_string());
    assert!(revocation.get("token").is_none() && revocation.get("refreshToken").is_none());
    app.get(
        &format!("/v1/connections/{id}/revocations"),
        &app.user("carol"),
    )
    .await
    .assert_problem(403, "forbidden");
}
