//! Authorization endpoint, consent page and code exchange.

use chrono::Duration;
use sandbox::{Flavor, s256};
use serde_json::Value;

use crate::helpers::{
    APP, TestApp, VERIFIER, error_code, location_base, location_params, redirect_uri,
};

#[tokio::test]
async fn full_cgm_code_flow_with_consent_page() {
    let app = TestApp::spawn().await;
    let params = TestApp::auth_params(Flavor::Cgm, "xyz");
    let page = app.authorize(Flavor::Cgm, &params).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!("action=\"{}/cgm/v2/oauth2/consent\"", app.base)),
        "{html}"
    );
    assert!(html.contains("name=\"user\""));
    assert!(html.contains("value=\"allow\"") && html.contains("value=\"deny\""));
    assert!(html.contains(&format!(
        "name=\"code_challenge\" value=\"{}\"",
        s256(VERIFIER)
    )));

    let mut form = params.clone();
    form.push(("user".into(), "alice".into()));
    form.push(("decision".into(), "allow".into()));
    let resp = app.consent(Flavor::Cgm, &form).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(location_base(&resp), redirect_uri(Flavor::Cgm));
    let q = location_params(&resp);
    assert_eq!(q["state"], "xyz");
    assert!(!q.contains_key("iss"), "Dexcom sends no iss");

    let resp = app.exchange(Flavor::Cgm, &q["code"]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(body["scope"], "offline_access");
    for field in [
        "access_token",
        "refresh_token",
        "refresh_expires_in",
        "not-before-policy",
        "session_state",
    ] {
        assert!(!body[field].is_null(), "missing {field}");
    }
    let access = body["access_token"].as_str().unwrap();
    let (start, end) = ("2026-02-10T00:00:00", "2026-02-10T01:00:00");
    let data = app
        .get_data(
            "/cgm/v3/users/self/egvs",
            access,
            &[("startDate", start), ("endDate", end)],
        )
        .await;
    assert_eq!(data.status(), 200);
    let stats = app.sandbox.stats();
    assert_eq!(
        (
            stats.cgm.authorizations,
            stats.cgm.code_exchanges,
            stats.cgm.live_grants
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn pump_auto_consent_redirects_at_once_with_iss() {
    let app = TestApp::spawn_with(|c| c.auto_consent_user = Some("pat".into())).await;
    let resp = app
        .authorize(Flavor::Pump, &TestApp::auth_params(Flavor::Pump, "s1"))
        .await;
    assert_eq!(resp.status(), 302);
    let q = location_params(&resp);
    assert_eq!(q["iss"], format!("{}/pump", app.base));
    assert_eq!(q["state"], "s1");
    let body: Value = app
        .exchange(Flavor::Pump, &q["code"])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["scope"], "pump.read offline_access");
    assert!(
        body.get("session_state").is_none(),
        "Dexcom extras are CGM only"
    );
    assert!(body["refresh_token"].is_string());
}

#[tokio::test]
async fn consent_denied_redirects_access_denied() {
    let app = TestApp::spawn().await;
    let mut form = TestApp::auth_params(Flavor::Pump, "keep-me");
    form.push(("user".into(), "pat".into()));
    form.push(("decision".into(), "deny".into()));
    let resp = app.consent(Flavor::Pump, &form).await;
    assert_eq!(resp.status(), 302);
    let q = location_params(&resp);
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "keep-me");
    assert!(!q.contains_key("code"));
    assert_eq!(q["iss"], format!("{}/pump", app.base));
    assert_eq!(app.sandbox.stats().pump.denials, 1);
}

#[tokio::test]
async fn consent_without_user_name_shows_the_page_again() {
    let app = TestApp::spawn().await;
    let mut form = TestApp::auth_params(Flavor::Cgm, "s");
    form.push(("decision".into(), "allow".into()));
    let resp = app.consent(Flavor::Cgm, &form).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
    assert!(resp.text().await.unwrap().contains("name=\"user\""));
}

#[tokio::test]
async fn unknown_client_or_unregistered_redirect_is_a_page_not_a_redirect() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, String)> = vec![
        ("client_id", "nobody".into()),
        ("client_id", sandbox::DEFAULT_PUMP_CLIENT_ID.into()), // the other partner's client
        ("redirect_uri", format!("{}/", redirect_uri(Flavor::Cgm))), // trailing slash
        ("redirect_uri", format!("{APP}/v1/oauth/evil/callback")),
        ("redirect_uri", redirect_uri(Flavor::Cgm).to_uppercase()),
    ];
    for (name, value) in cases {
        let mut params = TestApp::auth_params(Flavor::Cgm, "s");
        params.iter_mut().find(|(k, _)| k == name).unwrap().1 = value.clone();
        let resp = app.authorize(Flavor::Cgm, &params).await;
        assert_eq!(resp.status(), 400, "{name}={value}");
        assert!(resp.headers().get("location").is_none());
    }
    let mut params = TestApp::auth_params(Flavor::Cgm, "s");
    params.retain(|(k, _)| k != "redirect_uri");
    assert_eq!(app.authorize(Flavor::Cgm, &params).await.status(), 400);
}

#[tokio::test]
async fn pkce_state_and_response_type_are_required() {
    let app = TestApp::spawn_with(|c| c.auto_consent_user = Some("u".into())).await;
    let cases: Vec<(&str, Option<&str>, &str)> = vec![
        ("code_challenge", None, "invalid_request"),
        ("code_challenge_method", None, "invalid_request"),
        ("code_challenge_method", Some("plain"), "invalid_request"),
        ("code_challenge", Some("short"), "invalid_request"),
        ("response_type", Some("token"), "unsupported_response_type"),
        ("response_type", None, "invalid_request"),
        ("scope", Some("offline_access everything"), "invalid_scope"),
    ];
    for (name, value, expected) in cases {
        let mut params = TestApp::auth_params(Flavor::Cgm, "st8");
        params.retain(|(k, _)| k != name);
        if let Some(v) = value {
            params.push((name.into(), v.into()));
        }
        let resp = app.authorize(Flavor::Cgm, &params).await;
        assert_eq!(resp.status(), 302, "{name}");
        let q = location_params(&resp);
        assert_eq!(q["error"], expected, "{name}={value:?}");
        assert_eq!(q["state"], "st8");
        assert!(!q.contains_key("code"));
    }
    // Without state the error still goes back, without a state.
    let mut params = TestApp::auth_params(Flavor::Cgm, "x");
    params.retain(|(k, _)| k != "state");
    let q = location_params(&app.authorize(Flavor::Cgm, &params).await);
    assert_eq!(q["error"], "invalid_request");
    assert!(!q.contains_key("state"));
    // A repeated parameter is refused too.
    let mut params = TestApp::auth_params(Flavor::Cgm, "x");
    params.push(("scope".into(), "offline_access".into()));
    params.push(("scope".into(), "offline_access".into()));
    assert_eq!(
        location_params(&app.authorize(Flavor::Cgm, &params).await)["error"],
        "invalid_request"
    );
}

#[tokio::test]
async fn state_is_echoed_verbatim() {
    let app = TestApp::spawn_with(|c| c.auto_consent_user = Some("u".into())).await;
    let state = "a b+c&d=e/é%20~*";
    let resp = app
        .authorize(Flavor::Cgm, &TestApp::auth_params(Flavor::Cgm, state))
        .await;
    assert_eq!(location_params(&resp)["state"], state);
}

#[tokio::test]
async fn token_request_checks_the_pkce_verifier() {
    let app = TestApp::spawn().await;
    let code = app.obtain_code(Flavor::Cgm, "alice").await;
    let uri = redirect_uri(Flavor::Cgm);
    let wrong = "x".repeat(43);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", uri.as_str()),
        ("code_verifier", wrong.as_str()),
    ];
    let resp = app.post_authenticated(Flavor::Cgm, "token", &form).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "invalid_grant");
    let resp = app
        .post_authenticated(Flavor::Cgm, "token", &form[..3])
        .await;
    assert_eq!(
        error_code(resp).await,
        "invalid_request",
        "missing verifier"
    );
    let other_uri = format!("{uri}/");
    let form = [
        form[0],
        form[1],
        ("redirect_uri", other_uri.as_str()),
        ("code_verifier", VERIFIER),
    ];
    let resp = app.post_authenticated(Flavor::Cgm, "token", &form).await;
    assert_eq!(
        error_code(resp).await,
        "invalid_grant",
        "redirect_uri must match"
    );
    // The failed attempts did not burn the code.
    assert_eq!(app.exchange(Flavor::Cgm, &code).await.status(), 200);
}

#[tokio::test]
async fn codes_expire_after_sixty_seconds() {
    let app = TestApp::spawn().await;
    let code = app.obtain_code(Flavor::Pump, "pat").await;
    app.sandbox.advance(Duration::seconds(60));
    let resp = app.exchange(Flavor::Pump, &code).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "invalid_grant");
    let fresh = app.obtain_code(Flavor::Pump, "pat").await;
    app.sandbox.advance(Duration::seconds(59));
    assert_eq!(app.exchange(Flavor::Pump, &fresh).await.status(), 200);
}

#[tokio::test]
async fn replayed_code_fails_and_revokes_the_grant() {
    let app = TestApp::spawn().await;
    let code = app.obtain_code(Flavor::Cgm, "alice").await;
    let tokens =
        crate::helpers::tokens(app.exchange(Flavor::Cgm, &code).await.json().await.unwrap());
    let replay = app.exchange(Flavor::Cgm, &code).await;
    assert_eq!(replay.status(), 400);
    assert_eq!(error_code(replay).await, "invalid_grant");
    let q = [
        ("startDate", "2026-02-10T00:00:00"),
        ("endDate", "2026-02-10T01:00:00"),
    ];
    let data = app
        .get_data("/cgm/v3/users/self/egvs", &tokens.access, &q)
        .await;
    assert_eq!(data.status(), 401);
    let refresh = app.refresh(Flavor::Cgm, &tokens.refresh).await;
    assert_eq!(error_code(refresh).await, "invalid_grant");
    let stats = app.sandbox.stats().cgm;
    assert_eq!(
        (stats.code_replays, stats.revoked_grants, stats.live_grants),
        (1, 1, 0)
    );
}
