//! Token endpoint: client authentication, errors, rotation, revocation, expiry.

use chrono::Duration;
use sandbox::{
    DEFAULT_CGM_CLIENT_ID, DEFAULT_CGM_CLIENT_SECRET, DEFAULT_PUMP_CLIENT_ID,
    DEFAULT_PUMP_CLIENT_SECRET, Flavor,
};
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, tokens};

const EGVS: &str = "/cgm/v3/users/self/egvs";
const WINDOW: [(&str, &str); 2] = [
    ("startDate", "2026-02-10T00:00:00"),
    ("endDate", "2026-02-10T01:00:00"),
];

#[tokio::test]
async fn client_authentication_uses_only_the_registered_method() {
    let app = TestApp::spawn().await;
    let token_url = |f| app.url(&TestApp::oauth_path(f, "token"));
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", "unknown"),
    ];
    // Both registered methods work (the grant itself is bad, so invalid_grant proves auth passed).
    let ok = app.post_authenticated(Flavor::Cgm, "token", &form).await;
    assert_eq!(error_code(ok).await, "invalid_grant");
    let ok = app.post_authenticated(Flavor::Pump, "token", &form).await;
    assert_eq!(error_code(ok).await, "invalid_grant");

    let send = |req: reqwest::RequestBuilder| async move { req.send().await.unwrap() };
    // CGM is registered for client_secret_post: Basic is refused.
    let basic = send(
        app.http
            .post(token_url(Flavor::Cgm))
            .basic_auth(DEFAULT_CGM_CLIENT_ID, Some(DEFAULT_CGM_CLIENT_SECRET))
            .form(&form),
    )
    .await;
    assert_eq!(basic.status(), 401);
    assert!(basic.headers().contains_key("www-authenticate"));
    assert_eq!(error_code(basic).await, "invalid_client");
    let mut wrong = form.to_vec();
    wrong.extend([
        ("client_id", DEFAULT_CGM_CLIENT_ID),
        ("client_secret", "nope"),
    ]);
    let resp = send(app.http.post(token_url(Flavor::Cgm)).form(&wrong)).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(error_code(resp).await, "invalid_client");
    let resp = send(app.http.post(token_url(Flavor::Cgm)).form(&form)).await;
    assert_eq!(resp.status(), 401, "no credentials at all");

    // Pump is registered for client_secret_basic: body credentials are refused.
    let mut post = form.to_vec();
    post.extend([
        ("client_id", DEFAULT_PUMP_CLIENT_ID),
        ("client_secret", DEFAULT_PUMP_CLIENT_SECRET),
    ]);
    let resp = send(app.http.post(token_url(Flavor::Pump)).form(&post)).await;
    assert_eq!(resp.status(), 401);
    let resp = send(
        app.http
            .post(token_url(Flavor::Pump))
            .basic_auth(DEFAULT_PUMP_CLIENT_ID, Some("wrong"))
            .form(&form),
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Basic realm=\"sandbox\""
    );
    // Two methods at once is a malformed request.
    let resp = send(
        app.http
            .post(token_url(Flavor::Pump))
            .basic_auth(DEFAULT_PUMP_CLIENT_ID, Some(DEFAULT_PUMP_CLIENT_SECRET))
            .form(&post),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "invalid_request");
}

#[tokio::test]
async fn malformed_token_requests() {
    let app = TestApp::spawn().await;
    let resp = app
        .post_authenticated(Flavor::Pump, "token", &[("grant_type", "password")])
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "unsupported_grant_type");
    let resp = app
        .post_authenticated(Flavor::Pump, "token", &[("code", "x")])
        .await;
    assert_eq!(error_code(resp).await, "invalid_request", "no grant_type");
    let resp = app
        .post_authenticated(
            Flavor::Pump,
            "token",
            &[("grant_type", "authorization_code")],
        )
        .await;
    assert_eq!(error_code(resp).await, "invalid_request", "no code");
    let resp = app
        .post_authenticated(Flavor::Pump, "token", &[("grant_type", "refresh_token")])
        .await;
    assert_eq!(
        error_code(resp).await,
        "invalid_request",
        "no refresh_token"
    );
    let dup = [
        ("grant_type", "refresh_token"),
        ("refresh_token", "a"),
        ("refresh_token", "b"),
    ];
    let resp = app.post_authenticated(Flavor::Pump, "token", &dup).await;
    assert_eq!(
        error_code(resp).await,
        "invalid_request",
        "repeated parameter"
    );
    let resp = app
        .http
        .post(app.url("/pump/oauth/token"))
        .basic_auth(DEFAULT_PUMP_CLIENT_ID, Some(DEFAULT_PUMP_CLIENT_SECRET))
        .json(&json!({"grant_type": "refresh_token", "refresh_token": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "invalid_request", "JSON body");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_grant() {
    let app = TestApp::spawn().await;
    let first = app.connect(Flavor::Cgm, "alice").await;
    let resp = app.refresh(Flavor::Cgm, &first.refresh).await;
    assert_eq!(resp.status(), 200);
    let second = tokens(resp.json().await.unwrap());
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert_eq!(
        app.get_data(EGVS, &second.access, &WINDOW).await.status(),
        200
    );

    let reuse = app.refresh(Flavor::Cgm, &first.refresh).await;
    assert_eq!(reuse.status(), 400);
    assert_eq!(error_code(reuse).await, "invalid_grant");
    // Reuse detection killed the whole grant: the current refresh token fails too.
    assert_eq!(
        error_code(app.refresh(Flavor::Cgm, &second.refresh).await).await,
        "invalid_grant"
    );
    assert_eq!(
        app.get_data(EGVS, &second.access, &WINDOW).await.status(),
        401
    );
    let s = app.sandbox.stats().cgm;
    assert_eq!(
        (s.refreshes, s.rotations, s.reuse_detections, s.live_grants),
        (1, 1, 1, 0)
    );
}

#[tokio::test]
async fn refresh_token_of_one_client_fails_for_the_other_partner() {
    let app = TestApp::spawn().await;
    let cgm = app.connect(Flavor::Cgm, "alice").await;
    assert_eq!(
        error_code(app.refresh(Flavor::Pump, &cgm.refresh).await).await,
        "invalid_grant"
    );
    let pump_path = "/pump/v1/users/self/basal";
    let q = [
        ("start", "2026-02-10T00:00:00Z"),
        ("end", "2026-02-10T01:00:00Z"),
    ];
    assert_eq!(app.get_data(pump_path, &cgm.access, &q).await.status(), 401);
}

#[tokio::test]
async fn revocation_endpoint() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Pump, "pat").await;
    let garbage = app
        .post_authenticated(Flavor::Pump, "revoke", &[("token", "garbage")])
        .await;
    assert_eq!(garbage.status(), 200, "unknown tokens are fine (RFC 7009)");
    let unauth = app
        .http
        .post(app.url("/pump/oauth/revoke"))
        .form(&[("token", t.refresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
    let missing = app.post_authenticated(Flavor::Pump, "revoke", &[]).await;
    assert_eq!(error_code(missing).await, "invalid_request");
    // Still alive: none of the above revoked anything.
    assert_eq!(app.sandbox.stats().pump.live_grants, 1);

    let form = [
        ("token", t.refresh.as_str()),
        ("token_type_hint", "refresh_token"),
    ];
    assert_eq!(
        app.post_authenticated(Flavor::Pump, "revoke", &form)
            .await
            .status(),
        200
    );
    assert_eq!(
        error_code(app.refresh(Flavor::Pump, &t.refresh).await).await,
        "invalid_grant"
    );
    let q = [
        ("start", "2026-02-10T00:00:00Z"),
        ("end", "2026-02-10T01:00:00Z"),
    ];
    assert_eq!(
        app.get_data("/pump/v1/users/self/basal", &t.access, &q)
            .await
            .status(),
        401
    );
    let s = app.sandbox.stats().pump;
    assert_eq!(
        (s.revocations, s.revoked_grants, s.live_grants),
        (2, 1, 0),
        "rejected calls do not count"
    );
    let last = s.recent_revocations.back().unwrap();
    assert_eq!(last.token_type_hint.as_deref(), Some("refresh_token"));
    assert!(last.revoked_grant);
}

#[tokio::test]
async fn revoking_an_access_token_revokes_its_grant() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Cgm, "alice").await;
    let resp = app
        .post_authenticated(Flavor::Cgm, "revoke", &[("token", t.access.as_str())])
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        error_code(app.refresh(Flavor::Cgm, &t.refresh).await).await,
        "invalid_grant"
    );
    assert_eq!(
        app.sandbox.stats().cgm.recent_revocations[0]
            .token_kind
            .as_deref(),
        Some("access_token")
    );
}

#[tokio::test]
async fn access_tokens_expire() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Cgm, "alice").await;
    app.sandbox.advance(Duration::seconds(7199));
    assert_eq!(app.get_data(EGVS, &t.access, &WINDOW).await.status(), 200);
    app.sandbox.advance(Duration::seconds(1));
    let expired = app.get_data(EGVS, &t.access, &WINDOW).await;
    assert_eq!(expired.status(), 401);
    assert_eq!(
        expired.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(error_code(expired).await, "invalid_token");
    // The refresh token still works and yields a fresh access token.
    let fresh = tokens(
        app.refresh(Flavor::Cgm, &t.refresh)
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(
        app.get_data(EGVS, &fresh.access, &WINDOW).await.status(),
        200
    );
    // Unknown and missing tokens are 401 too.
    assert_eq!(app.get_data(EGVS, "nope", &WINDOW).await.status(), 401);
    let bare = app
        .http
        .get(app.url(EGVS))
        .query(&WINDOW)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
}

#[tokio::test]
async fn early_expiry_fault_shortens_new_tokens() {
    let app = TestApp::spawn().await;
    app.put_faults(json!({"access_token_ttl_secs": 30})).await;
    let code = app.obtain_code(Flavor::Cgm, "alice").await;
    let body: Value = app.exchange(Flavor::Cgm, &code).await.json().await.unwrap();
    assert_eq!(body["expires_in"], 30);
    let access = body["access_token"].as_str().unwrap();
    app.sandbox.advance(Duration::seconds(30));
    assert_eq!(app.get_data(EGVS, access, &WINDOW).await.status(), 401);
}

#[tokio::test]
async fn partner_side_revocation_via_admin() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Cgm, "carol smith").await;
    let other = app.connect(Flavor::Cgm, "dave").await;
    let resp = app
        .http
        .post(app.url("/admin/users/cgm/carol%20smith/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["revoked_grants"], 1);
    assert_eq!(
        error_code(app.refresh(Flavor::Cgm, &t.refresh).await).await,
        "invalid_grant"
    );
    assert_eq!(app.get_data(EGVS, &t.access, &WINDOW).await.status(), 401);
    assert_eq!(
        app.get_data(EGVS, &other.access, &WINDOW).await.status(),
        200,
        "other users unaffected"
    );
    assert_eq!(app.sandbox.stats().cgm.partner_revocations, 1);
    let bad = app
        .http
        .post(app.url("/admin/users/meter/x/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 404);
}

#[tokio::test]
async fn tokens_are_opaque_and_vary_in_length() {
    let app = TestApp::spawn().await;
    let mut lengths = std::collections::HashSet::new();
    for i in 0..8 {
        let t = app.connect(Flavor::Pump, &format!("user{i}")).await;
        lengths.insert(t.access.len());
        lengths.insert(t.refresh.len());
    }
    assert!(lengths.len() > 4, "{lengths:?}");
}
