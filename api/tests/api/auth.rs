//! Authentication (401) and authorization (403, and 404 for others' connections).

use std::time::Duration;

use api::auth::{JwtKeys, Role};
use chrono::Utc;
use poem::http::{Method, StatusCode};

use crate::helpers::{CGM, TestApi};

#[tokio::test]
async fn missing_or_invalid_tokens_are_401_problems() {
    let app = TestApi::spawn().await;
    let stranger = JwtKeys::new(
        b"another-secret-another-secret-xx",
        "tributary",
        "tributary",
    )
    .mint(Role::Ops, "mallory", Duration::from_secs(60));
    let expired = app.jwt.mint_at(
        Role::Ops,
        "op",
        Duration::from_secs(60),
        Utc::now() - chrono::Duration::hours(2),
    );
    let paths = [
        (Method::GET, "/v1/partners"),
        (Method::GET, "/v1/users/alice/connections"),
        (
            Method::GET,
            "/v1/connections/0190f5e2-7b1c-7d3e-8f00-0123456789ab",
        ),
        (Method::POST, "/v1/connections/not-a-uuid/disconnect"),
        (Method::GET, "/v1/ops/alerts"),
    ];
    for (method, path) in paths {
        for token in [
            None,
            Some("garbage"),
            Some(stranger.as_str()),
            Some(expired.as_str()),
        ] {
            let reply = app.send(method.clone(), path, token, None).await;
            reply.assert_problem(401, "unauthenticated");
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{path}");
        }
    }
    // Any scheme but Bearer is no token at all.
    let reply = app
        .client
        .get("/v1/partners")
        .header("authorization", "Basic YWxpY2U6cHc=")
        .send()
        .await;
    assert_eq!(reply.0.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn users_see_only_their_own_connections() {
    let app = TestApi::spawn().await;
    let (id, _) = app.start("alice", CGM).await;
    let bob = app.user("bob");

    for (method, path) in [
        (Method::GET, format!("/v1/connections/{id}")),
        (Method::GET, format!("/v1/connections/{id}/events")),
        (Method::POST, format!("/v1/connections/{id}/authorize")),
        (Method::POST, format!("/v1/connections/{id}/disconnect")),
    ] {
        app.send(method, &path, Some(&bob), None)
            .await
            .assert_problem(404, "not_found");
    }
    // Exactly the answer for a connection that does not exist.
    let missing = app
        .get("/v1/connections/0190f5e2-7b1c-7d3e-8f00-0123456789ab", &bob)
        .await
        .assert_problem(404, "not_found");
    let foreign = app
        .get(&format!("/v1/connections/{id}"), &bob)
        .await
        .assert_problem(404, "not_found");
    assert_eq!(missing["detail"], foreign["detail"]);

    // Another user's id in the path.
    app.get("/v1/users/alice/connections", &bob)
        .await
        .assert_problem(403, "forbidden");
    app.post_json(
        "/v1/users/alice/connections",
        &bob,
        r#"{"partner":"sandbox-cgm"}"#,
    )
    .await
    .assert_problem(403, "forbidden");

    // Alice herself, the service and operators see it.
    for token in [
        app.user("alice"),
        app.token(Role::Service, "tidepool-web"),
        app.ops(),
    ] {
        let reply = app.get(&format!("/v1/connections/{id}"), &token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json()["userId"], "alice");
    }
    let list = app
        .get("/v1/users/alice/connections", &app.user("alice"))
        .await;
    assert_eq!(list.json().as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_service_acts_for_any_user_and_is_journaled() {
    let app = TestApi::spawn().await;
    let service = app.token(Role::Service, "tidepool-web");
    let reply = app
        .post_json(
            "/v1/users/carol/connections",
            &service,
            r#"{"partner":"sandbox-cgm"}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    let events = app
        .get(&format!("/v1/connections/{id}/events"), &service)
        .await
        .json();
    assert_eq!(events[0]["actor"], "service:tidepool-web");
}

#[tokio::test]
async fn clinicians_are_forbidden_for_now() {
    let app = TestApi::spawn().await;
    let (id, _) = app.start("alice", CGM).await;
    let clinician = app.token(Role::Clinician, "dr-who");
    for (method, path) in [
        (Method::GET, "/v1/users/alice/connections".to_owned()),
        (Method::GET, format!("/v1/connections/{id}")),
        (Method::GET, format!("/v1/connections/{id}/events")),
        (Method::POST, format!("/v1/connections/{id}/authorize")),
        (Method::POST, format!("/v1/connections/{id}/disconnect")),
        (Method::POST, format!("/v1/connections/{id}/refresh")),
        (Method::GET, format!("/v1/connections/{id}/revocations")),
        (Method::GET, "/v1/ops/alerts".to_owned()),
    ] {
        app.send(method, &path, Some(&clinician), None)
            .await
            .assert_problem(403, "forbidden");
    }
    app.post_json(
        "/v1/users/alice/connections",
        &clinician,
        r#"{"partner":"sandbox-cgm"}"#,
    )
    .await
    .assert_problem(403, "forbidden");
    // The partner list is for every authenticated role.
    let partners = app.get("/v1/partners", &clinician).await;
    assert_eq!(partners.status, StatusCode::OK);
}

/// A token signed with the test secret, with exactly these time claims.
fn signed(exp: i64, iat: Option<i64>, nbf: Option<i64>) -> String {
    let mut claims = serde_json::json!({
        "sub": "op", "role": "ops", "iss": "tributary", "aud": "tributary", "exp": exp,
    });
    if let Some(iat) = iat {
        claims["iat"] = iat.into();
    }
    if let Some(nbf) = nbf {
        claims["nbf"] = nbf.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(crate::helpers::SECRET),
    )
    .unwrap()
}

#[tokio::test]
async fn tokens_not_valid_yet_or_living_too_long_are_401_problems() {
    let app = TestApi::spawn().await;
    let now = Utc::now().timestamp();
    let day = 24 * 3600;
    for (token, why) in [
        (
            signed(now + 3600, Some(now), Some(now + 600)),
            "nbf in the future",
        ),
        (
            signed(now + day + 60, Some(now), None),
            "lifetime over 24 h",
        ),
        (
            signed(now + 3600, Some(now - day), None),
            "issued over 24 h before expiry",
        ),
        (
            signed(now + day + 60, None, None),
            "no iat, expiry over 24 h away",
        ),
    ] {
        let reply = app.get("/v1/partners", &token).await;
        let problem = reply.assert_problem(401, "unauthenticated");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{why}");
        assert_eq!(
            problem["detail"], "a valid bearer token is required",
            "{why}"
        );
    }
    // Within the limits, with and without the optional claims.
    for token in [
        signed(now + 3600, Some(now), Some(now - 60)),
        signed(now + day - 60, Some(now), None),
        signed(now + 3600, None, None),
        app.jwt
            .mint(Role::Ops, "op", Duration::from_secs(day as u64)),
    ] {
        let reply = app.get("/v1/partners", &token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
}
