//! The pump data API: cursor paging, validation, scopes.

use std::collections::HashSet;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use sandbox::{DataContext, Flavor, config::default_history_start, data};
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, location_params, t0};

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn page(app: &TestApp, token: &str, kind: &str, query: &[(&str, &str)]) -> reqwest::Response {
    app.get_data(&format!("/pump/v1/users/self/{kind}"), token, query)
        .await
}

/// Follows `nextCursor` to the end; returns every record and the number of pages.
async fn walk(
    app: &TestApp,
    token: &str,
    kind: &str,
    start: &str,
    end: &str,
    limit: &str,
) -> (Vec<Value>, usize) {
    let mut records = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = vec![("start", start), ("end", end), ("limit", limit)];
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let resp = page(app, token, kind, &q).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        records.extend(body["records"].as_array().unwrap().iter().cloned());
        pages += 1;
        match body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (records, pages),
        }
    }
}

#[tokio::test]
async fn paging_covers_exactly_the_expected_set() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Pump, "pat").await;
    let ctx = DataContext::immediate(default_history_start());
    let (start, end) = (t0() - Duration::days(30), t0());
    let (s, e) = (rfc(start), rfc(end));

    let (basal, pages) = walk(&app, &t.access, "basal", &s, &e, "37").await;
    assert_eq!(basal.len(), 30 * 48);
    assert_eq!(pages, (30 * 48usize).div_ceil(37));
    let ids: HashSet<&str> = basal.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), basal.len(), "no duplicates");
    assert_eq!(
        Value::Array(basal.clone()),
        serde_json::to_value(data::expected_basal(&ctx, "pat", start, end)).unwrap()
    );
    let kinds: HashSet<&str> = basal
        .iter()
        .map(|r| r["deliveryType"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        HashSet::from(["scheduled", "temp", "automated", "suspend"])
    );
    let temp = basal.iter().find(|r| r["deliveryType"] == "temp").unwrap();
    assert!(temp["percent"].is_number() && temp["rate"].is_number());
    for field in [
        "time",
        "deviceId",
        "serialNumber",
        "deviceModel",
        "deviceManufacturer",
        "duration",
    ] {
        assert!(!basal[0][field].is_null(), "{field}");
    }

    let (bolus, _) = walk(&app, &t.access, "bolus", &s, &e, "5").await;
    assert_eq!(
        Value::Array(bolus.clone()),
        serde_json::to_value(data::expected_bolus(&ctx, "pat", start, end)).unwrap()
    );
    let subtypes: HashSet<&str> = bolus
        .iter()
        .map(|r| r["subType"].as_str().unwrap())
        .collect();
    assert_eq!(subtypes, HashSet::from(["normal", "square", "dual/square"]));
}

#[tokio::test]
async fn cursors_are_stable_and_snapshot_the_first_page() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Pump, "pat").await;
    let (s, e) = (
        rfc(t0() - Duration::hours(5)),
        rfc(t0() + Duration::hours(5)),
    );
    let first: Value = page(
        &app,
        &t.access,
        "basal",
        &[("start", &s), ("end", &e), ("limit", "4")],
    )
    .await
    .json()
    .await
    .unwrap();
    let cursor = first["nextCursor"].as_str().unwrap().to_owned();
    let q = [
        ("start", s.as_str()),
        ("end", e.as_str()),
        ("limit", "4"),
        ("cursor", cursor.as_str()),
    ];
    let a: Value = page(&app, &t.access, "basal", &q)
        .await
        .json()
        .await
        .unwrap();
    // Time passes and more segments are published; the same cursor still gives the same page,
    // and the run ends where the snapshot ended.
    app.sandbox.advance(Duration::hours(1));
    let b: Value = page(&app, &t.access, "basal", &q)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a, b);
    let (run, _) = walk(&app, &t.access, "basal", &s, &e, "4").await;
    assert_eq!(
        run.len(),
        11 + 2,
        "a new run sees the newly published segments"
    );
    let mut c = cursor.clone();
    let mut total = first["records"].as_array().unwrap().len();
    loop {
        let q = [
            ("start", s.as_str()),
            ("end", e.as_str()),
            ("limit", "4"),
            ("cursor", c.as_str()),
        ];
        let body: Value = page(&app, &t.access, "basal", &q)
            .await
            .json()
            .await
            .unwrap();
        total += body["records"].as_array().unwrap().len();
        match body["nextCursor"].as_str() {
            Some(next) => c = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(total, 11, "the old run is pinned to its snapshot");
}

#[tokio::test]
async fn query_validation() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Pump, "pat").await;
    let (s, e) = (rfc(t0() - Duration::days(1)), rfc(t0()));
    let over = rfc(t0() - Duration::days(30) - Duration::seconds(1));
    let bad: Vec<Vec<(&str, &str)>> = vec![
        vec![("start", &s)],
        vec![("start", "2026-02-09T12:00:00"), ("end", &e)],
        vec![("start", &e), ("end", &s)],
        vec![("start", &over), ("end", &e)],
        vec![("start", &s), ("end", &e), ("limit", "0")],
        vec![("start", &s), ("end", &e), ("limit", "501")],
        vec![("start", &s), ("end", &e), ("limit", "ten")],
    ];
    for q in bad {
        let resp = page(&app, &t.access, "basal", &q).await;
        assert_eq!(resp.status(), 400, "{q:?}");
        assert_eq!(error_code(resp).await, "invalid_request");
    }
    let body: Value = page(
        &app,
        &t.access,
        "basal",
        &[("start", &s), ("end", &e), ("limit", "500")],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["records"].as_array().unwrap().len(), 48);
    assert!(body["nextCursor"].is_null());
    let long = rfc(t0() - Duration::days(3));
    let body: Value = page(&app, &t.access, "basal", &[("start", &long), ("end", &e)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["records"].as_array().unwrap().len(),
        100,
        "default limit"
    );
    let cursor = body["nextCursor"].as_str().unwrap();

    // A cursor only works with its own query, and cannot be edited.
    let other = page(
        &app,
        &t.access,
        "bolus",
        &[("start", &long), ("end", &e), ("cursor", cursor)],
    )
    .await;
    assert_eq!(error_code(other).await, "invalid_cursor");
    let moved = page(
        &app,
        &t.access,
        "basal",
        &[("start", &s), ("end", &e), ("cursor", cursor)],
    )
    .await;
    assert_eq!(moved.status(), 400);
    let edited = format!("{}A", cursor);
    let tampered = page(
        &app,
        &t.access,
        "basal",
        &[("start", &long), ("end", &e), ("cursor", &edited)],
    )
    .await;
    assert_eq!(tampered.status(), 400);
    let someone_else = app.connect(Flavor::Pump, "someone").await;
    let foreign = page(
        &app,
        &someone_else.access,
        "basal",
        &[("start", &long), ("end", &e), ("cursor", cursor)],
    )
    .await;
    assert_eq!(foreign.status(), 400, "cursors are bound to the user");
}

#[tokio::test]
async fn scopes_control_refresh_tokens_and_data_access() {
    let app = TestApp::spawn_with(|c| c.auto_consent_user = Some("pat".into())).await;
    let mut params = TestApp::auth_params(Flavor::Pump, "s");
    params.push(("scope".into(), "offline_access".into()));
    let code = location_params(&app.authorize(Flavor::Pump, &params).await)["code"].clone();
    let body: Value = app
        .exchange(Flavor::Pump, &code)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["scope"], "offline_access");
    let q = [
        ("start", "2026-02-10T00:00:00Z"),
        ("end", "2026-02-10T01:00:00Z"),
    ];
    let resp = page(&app, body["access_token"].as_str().unwrap(), "basal", &q).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(error_code(resp).await, "insufficient_scope");

    let mut params = TestApp::auth_params(Flavor::Pump, "s");
    params.push(("scope".into(), "pump.read".into()));
    let code = location_params(&app.authorize(Flavor::Pump, &params).await)["code"].clone();
    let body: Value = app
        .exchange(Flavor::Pump, &code)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        body.get("refresh_token").is_none(),
        "no offline_access, no refresh token"
    );
    assert_eq!(
        page(&app, body["access_token"].as_str().unwrap(), "basal", &q)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn pump_records_respect_publication_and_backfill() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Pump, "pat").await;
    app.put_faults(
        json!({"publication_delay_secs": 1800, "backfill": true, "backfill_delay_secs": 3600}),
    )
    .await;
    let day = t0().date_naive();
    let (gs, ge) = data::gap_on("pat", day);
    let midnight = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let (s, e) = (rfc(midnight), rfc(midnight + Duration::days(1)));
    let slots_until = |t: DateTime<Utc>| ((t - midnight).num_minutes() / 30 + 1) as usize;

    // Half an hour after the gap: published up to `ge` (30 min delay), minus the gap's 4 slots.
    app.sandbox.set_now(Some(ge + Duration::minutes(30)));
    let (served, _) = walk(&app, &t.access, "basal", &s, &e, "500").await;
    assert_eq!(served.len(), slots_until(ge) - 4);
    let in_gap = |r: &Value| {
        let t = DateTime::parse_from_rfc3339(r["time"].as_str().unwrap())
            .unwrap()
            .to_utc();
        gs <= t && t < ge
    };
    assert!(!served.iter().any(in_gap));

    // An hour after the gap it is backfilled.
    app.sandbox.set_now(Some(ge + Duration::hours(1)));
    let (served, _) = walk(&app, &t.access, "basal", &s, &e, "500").await;
    assert_eq!(served.len(), slots_until(ge + Duration::minutes(30)));
    assert_eq!(served.iter().filter(|r| in_gap(r)).count(), 4);
    let ctx = app.sandbox.data_context();
    let expected = data::basal(
        &ctx,
        "pat",
        midnight,
        midnight + Duration::days(1),
        app.sandbox.now(),
    );
    assert_eq!(
        Value::Array(served),
        serde_json::to_value(&expected).unwrap()
    );
}
