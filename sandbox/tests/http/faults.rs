//! Faults on demand, each observed over HTTP.

use std::time::Instant;

use chrono::{Duration, NaiveTime};
use sandbox::{DailyWindow, Faults, Flavor, Window};
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, t0};

const EGVS: &str = "/cgm/v3/users/self/egvs";
const WINDOW: [(&str, &str); 2] = [
    ("startDate", "2026-02-10T00:00:00"),
    ("endDate", "2026-02-10T01:00:00"),
];

#[tokio::test]
async fn fail_next_answers_html_5xx_then_recovers() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Cgm, "alice").await;
    app.put_faults(json!({"fail_next": {"token": 2, "data": 1}, "fail_status": 502}))
        .await;
    for _ in 0..2 {
        let resp = app.refresh(Flavor::Cgm, &t.refresh).await;
        assert_eq!(resp.status(), 502);
        assert!(resp.json::<Value>().await.is_err(), "not a JSON body");
    }
    let data = app.get_data(EGVS, &t.access, &WINDOW).await;
    assert_eq!(data.status(), 502);
    assert_eq!(app.get_data(EGVS, &t.access, &WINDOW).await.status(), 200);
    // The failed refreshes never reached the server: the refresh token is still current.
    assert_eq!(app.refresh(Flavor::Cgm, &t.refresh).await.status(), 200);
    assert_eq!(app.sandbox.stats().faults_injected, 3);
    assert_eq!(
        app.sandbox.faults().get().fail_next.token,
        0,
        "counters are consumed"
    );
}

#[tokio::test]
async fn rate_limit_sends_retry_after() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Pump, "pat").await;
    app.sandbox.faults().update(|f| {
        f.rate_limit_next.data = 1;
        f.retry_after_secs = 7;
    });
    let q = [
        ("start", "2026-02-10T00:00:00Z"),
        ("end", "2026-02-10T01:00:00Z"),
    ];
    let resp = app
        .get_data("/pump/v1/users/self/bolus", &t.access, &q)
        .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(
        app.get_data("/pump/v1/users/self/bolus", &t.access, &q)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn latency_is_added() {
    let app = TestApp::spawn().await;
    app.put_faults(json!({"latency_ms": 300})).await;
    let started = Instant::now();
    let resp = app
        .authorize(Flavor::Cgm, &TestApp::auth_params(Flavor::Cgm, "s"))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    let started = Instant::now();
    app.http.get(app.url("/admin/stats")).send().await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_millis(300),
        "admin is never slowed"
    );
}

#[tokio::test]
async fn overlapping_data_requests_of_one_token_are_counted() {
    let app = TestApp::spawn().await;
    let alice = app.connect(Flavor::Cgm, "alice").await;
    let bob = app.connect(Flavor::Cgm, "bob").await;
    app.put_faults(json!({"latency_ms": 200})).await;
    // One token, requests one after another; and two tokens at once: never two of one token.
    for _ in 0..2 {
        assert_eq!(
            app.get_data(EGVS, &alice.access, &WINDOW).await.status(),
            200
        );
    }
    let (a, b) = tokio::join!(
        app.get_data(EGVS, &alice.access, &WINDOW),
        app.get_data(EGVS, &bob.access, &WINDOW)
    );
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_eq!(app.sandbox.stats().max_data_requests_in_flight_per_token, 1);
    // Two requests of one token at once (as two transfers of one connection would send).
    let (a, b) = tokio::join!(
        app.get_data(EGVS, &alice.access, &WINDOW),
        app.get_data(EGVS, &alice.access, &WINDOW)
    );
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_eq!(app.sandbox.stats().max_data_requests_in_flight_per_token, 2);
}

#[tokio::test]
async fn malformed_bodies_html_then_truncated() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Cgm, "alice").await;
    // With n left, an odd n truncates and an even n sends HTML: 2 gives HTML, then truncation.
    app.put_faults(json!({"malformed_next": {"data": 2}})).await;
    let first = app.get_data(EGVS, &t.access, &WINDOW).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "application/json");
    assert!(first.text().await.unwrap().starts_with("<html>"));
    let second = app
        .get_data(EGVS, &t.access, &WINDOW)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        second.starts_with("{\"") && serde_json::from_str::<Value>(&second).is_err(),
        "truncated JSON"
    );
    let third: Value = app
        .get_data(EGVS, &t.access, &WINDOW)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(third["recordType"], "egv");
}

#[tokio::test]
async fn token_and_revoke_endpoints_down() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Pump, "pat").await;
    app.put_faults(json!({"token_down": true, "revoke_down": true, "retry_after_secs": 120}))
        .await;
    let resp = app.refresh(Flavor::Pump, &t.refresh).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "120");
    let resp = app
        .post_authenticated(Flavor::Pump, "revoke", &[("token", &t.refresh)])
        .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        app.sandbox.stats().pump.revocations,
        0,
        "the call never reached the server"
    );
    let q = [
        ("start", "2026-02-10T00:00:00Z"),
        ("end", "2026-02-10T01:00:00Z"),
    ];
    assert_eq!(
        app.get_data("/pump/v1/users/self/basal", &t.access, &q)
            .await
            .status(),
        200
    );
    app.http
        .delete(app.url("/admin/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(app.refresh(Flavor::Pump, &t.refresh).await.status(), 200);
}

#[tokio::test]
async fn maintenance_makes_everything_but_admin_unavailable() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Cgm, "alice").await;
    app.sandbox.faults().set(Faults {
        maintenance_now: true,
        ..Faults::default()
    });
    assert_eq!(app.get_data(EGVS, &t.access, &WINDOW).await.status(), 503);
    assert_eq!(app.refresh(Flavor::Cgm, &t.refresh).await.status(), 503);
    assert_eq!(
        app.authorize(Flavor::Cgm, &TestApp::auth_params(Flavor::Cgm, "s"))
            .await
            .status(),
        503
    );
    assert_eq!(
        app.post_authenticated(Flavor::Cgm, "revoke", &[("token", "x")])
            .await
            .status(),
        503
    );
    assert_eq!(
        app.http
            .get(app.url("/admin/faults"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A window on the sandbox clock.
    let window = Window {
        start: t0() + Duration::hours(1),
        end: t0() + Duration::hours(2),
    };
    app.sandbox.faults().set(Faults {
        maintenance: Some(window),
        ..Faults::default()
    });
    assert_eq!(app.get_data(EGVS, &t.access, &WINDOW).await.status(), 200);
    app.sandbox.advance(Duration::minutes(90));
    assert_eq!(app.get_data(EGVS, &t.access, &WINDOW).await.status(), 503);
    app.sandbox.advance(Duration::minutes(30));
    assert_eq!(
        app.get_data(EGVS, &t.access, &WINDOW).await.status(),
        401,
        "open again (token expired by now)"
    );

    // A daily UTC window, e.g. Dexcom's nightly backups.
    let daily = DailyWindow {
        start: NaiveTime::from_hms_opt(10, 45, 0).unwrap(),
        end: NaiveTime::from_hms_opt(11, 45, 0).unwrap(),
    };
    app.sandbox.faults().set(Faults {
        daily_maintenance_utc: Some(daily),
        ..Faults::default()
    });
    app.sandbox.set_now(Some(t0() - Duration::minutes(30)));
    assert_eq!(app.refresh(Flavor::Cgm, &t.refresh).await.status(), 503);
}

#[tokio::test]
async fn error_rate_one_always_fails() {
    let app = TestApp::spawn().await;
    app.put_faults(json!({"error_rate": 1.0})).await;
    let resp = app
        .post_authenticated(Flavor::Cgm, "token", &[("grant_type", "refresh_token")])
        .await;
    assert_eq!(resp.status(), 500);
    let bad = app.put_faults(json!({"error_rate": 2.0})).await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn admin_faults_json_round_trip() {
    let app = TestApp::spawn().await;
    let resp = app
        .put_faults(json!({"fail_next": {"revoke": 1}, "backfill": true}))
        .await;
    assert_eq!(resp.status(), 200);
    let got: Value = app
        .http
        .get(app.url("/admin/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["fail_next"]["revoke"], 1);
    assert_eq!(got["backfill"], true);
    assert_eq!(got["fail_status"], 500, "omitted fields take defaults");
    let typo = app.put_faults(json!({"fail_nxt": {"token": 1}})).await;
    assert_eq!(typo.status(), 400);
    assert_eq!(error_code(typo).await, "invalid_faults");
    assert_eq!(
        app.sandbox.faults().get().fail_next.revoke,
        1,
        "a rejected PUT changes nothing"
    );
    let cleared: Value = app
        .http
        .delete(app.url("/admin/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared, serde_json::to_value(Faults::default()).unwrap());
    assert_eq!(app.sandbox.faults().get(), Faults::default());
}

/// The README's examples in a row: each PATCH adds to the faults already set; PUT replaces.
#[tokio::test]
async fn patch_merges_and_put_replaces() {
    let app = TestApp::spawn().await;
    let patch = |body: Value| app.http.patch(app.url("/admin/faults")).json(&body).send();
    let first = patch(json!({"token_down": true})).await.unwrap();
    assert_eq!(first.status(), 200);
    let both: Value = patch(json!({"access_token_ttl_secs": 5, "fail_next": {"data": 2}}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(both["token_down"], true, "the first PATCH is kept");
    assert_eq!(both["access_token_ttl_secs"], 5);
    let faults = app.sandbox.faults().get();
    assert!(faults.token_down);
    assert_eq!(faults.access_token_ttl_secs, Some(5));

    // Nested objects merge; null returns a field to its default.
    patch(json!({"fail_next": {"token": 1}, "access_token_ttl_secs": null}))
        .await
        .unwrap();
    let faults = app.sandbox.faults().get();
    assert_eq!((faults.fail_next.data, faults.fail_next.token), (2, 1));
    assert_eq!(faults.access_token_ttl_secs, None);

    // A bad patch changes nothing.
    for bad in [json!({"fail_nxt": {}}), json!({"error_rate": 3.0})] {
        let resp = patch(bad).await.unwrap();
        assert_eq!(resp.status(), 400);
        assert_eq!(error_code(resp).await, "invalid_faults");
    }
    assert_eq!(app.sandbox.faults().get(), faults);

    // PUT replaces the whole set.
    app.put_faults(json!({"latency_ms": 1})).await;
    let replaced = app.sandbox.faults().get();
    assert!(!replaced.token_down);
    assert_eq!(replaced.fail_next.data, 0);
    assert_eq!(replaced.latency_ms, 1);
}
