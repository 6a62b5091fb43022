//! The Dexcom-shaped data API: window rules, exact record sets, publication delay, backfill.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use sandbox::{
    DataContext, Flavor,
    config::default_history_start,
    data::{self, Display},
};
use serde_json::{Value, json};

use crate::helpers::{TestApp, dexcom, error_code, t0};

async fn list(
    app: &TestApp,
    token: &str,
    kind: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Value {
    let (s, e) = (dexcom(start), dexcom(end));
    let path = format!("/cgm/v3/users/self/{kind}");
    let resp = app
        .get_data(&path, token, &[("startDate", &s), ("endDate", &e)])
        .await;
    assert_eq!(resp.status(), 200, "{kind} {s}..{e}");
    resp.json().await.unwrap()
}

/// Every record of `kind` from history start to now, walking 10-day windows, keyed by recordId.
async fn transfer(app: &TestApp, token: &str, kind: &str) -> BTreeMap<String, Value> {
    let mut all = BTreeMap::new();
    let mut start = default_history_start();
    while start < app.sandbox.now() {
        let end = (start + Duration::days(10)).min(app.sandbox.now());
        for r in list(app, token, kind, start, end).await["records"]
            .as_array()
            .unwrap()
        {
            all.insert(r["recordId"].as_str().unwrap().to_owned(), r.clone());
        }
        start = end;
    }
    all
}

fn keyed<T: serde::Serialize>(records: Vec<T>) -> BTreeMap<String, Value> {
    records
        .into_iter()
        .map(|r| {
            let v = serde_json::to_value(r).unwrap();
            (v["recordId"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

#[tokio::test]
async fn window_and_date_format_rules() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Cgm, "alice").await;
    let egvs = "/cgm/v3/users/self/egvs";
    let ok_end = dexcom(t0());
    let thirty = dexcom(t0() - Duration::days(30));
    let over = dexcom(t0() - Duration::days(30) - Duration::seconds(1));
    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (vec![("startDate", &thirty), ("endDate", &ok_end)], 200),
        (vec![("startDate", &over), ("endDate", &ok_end)], 400),
        (vec![("startDate", &ok_end), ("endDate", &ok_end)], 400),
        (vec![("startDate", &ok_end), ("endDate", &thirty)], 400),
        (
            vec![("startDate", "2026-02-01T00:00:00Z"), ("endDate", &ok_end)],
            400,
        ),
        (vec![("startDate", "2026-02-01"), ("endDate", &ok_end)], 400),
        (
            vec![("startDate", "2026-02-01T00:00"), ("endDate", &ok_end)],
            400,
        ),
        (
            vec![
                ("startDate", "2026-02-01T00:00:00.000"),
                ("endDate", &ok_end),
            ],
            400,
        ),
        (
            vec![
                ("startDate", "2026-02-01T00:00:00+00:00"),
                ("endDate", &ok_end),
            ],
            400,
        ),
        (vec![("startDate", &thirty)], 400),
    ];
    for (query, status) in cases {
        let resp = app.get_data(egvs, &t.access, &query).await;
        assert_eq!(resp.status().as_u16(), status, "{query:?}");
        if status == 400 {
            assert_eq!(error_code(resp).await, "invalid_request");
        }
    }
    let q = [("startDate", thirty.as_str()), ("endDate", ok_end.as_str())];
    assert_eq!(
        app.get_data("/cgm/v3/users/self/sensors", &t.access, &q)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn a_full_transfer_holds_exactly_the_expected_records() {
    let app = TestApp::spawn().await;
    let user = "alice";
    let t = app.connect(Flavor::Cgm, user).await;
    let ctx = DataContext::immediate(default_history_start());
    let (hs, now) = (default_history_start(), t0());

    let egvs = transfer(&app, &t.access, "egvs").await;
    assert_eq!(
        egvs.len(),
        40 * 288 + 12 * 12 + 1,
        "every 5 minutes, both ends inclusive"
    );
    assert_eq!(egvs, keyed(data::expected_egvs(&ctx, user, hs, now)));
    assert_eq!(
        transfer(&app, &t.access, "calibrations").await,
        keyed(data::expected_calibrations(&ctx, user, hs, now))
    );
    assert_eq!(
        transfer(&app, &t.access, "alerts").await,
        keyed(data::expected_alerts(&ctx, user, hs, now))
    );
    let events = transfer(&app, &t.access, "events").await;
    assert_eq!(events, keyed(data::events(&ctx, user, hs, now, now)));
    let statuses: HashSet<&str> = events
        .values()
        .map(|e| e["eventStatus"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, HashSet::from(["created", "updated", "deleted"]));
    let types: HashSet<&str> = events
        .values()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 6, "{types:?}");
    assert!(
        events.values().any(|e| e["value"].is_number()),
        "some values are numbers"
    );
    assert!(events.values().any(|e| e["value"].is_string()));
}

#[tokio::test]
async fn records_have_the_dexcom_shape_and_quirks() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Cgm, "alice").await;
    let body = list(&app, &t.access, "egvs", t0() - Duration::days(30), t0()).await;
    assert_eq!(body["recordType"], "egv");
    assert_eq!(body["recordVersion"], "3.0");
    assert_eq!(body["userId"], data::user_id("alice"));
    let records = body["records"].as_array().unwrap();
    assert_eq!(records[0]["systemTime"], dexcom(t0()), "newest first");
    let fields = [
        "recordId",
        "systemTime",
        "displayTime",
        "transmitterId",
        "transmitterTicks",
        "value",
        "status",
        "trend",
        "trendRate",
        "unit",
        "rateUnit",
        "displayDevice",
        "transmitterGeneration",
    ];
    for f in fields {
        assert!(records[0].get(f).is_some(), "missing {f}");
    }
    assert!(
        records[0].get("backfilled").is_none(),
        "only backfilled records carry the flag"
    );
    let values: Vec<i64> = records
        .iter()
        .map(|r| r["value"].as_i64().unwrap())
        .collect();
    let in_range = values.iter().filter(|v| (70..=250).contains(*v)).count();
    assert!(in_range * 10 > values.len() * 8, "mostly 70-250");
    assert!(
        values.iter().any(|v| *v < 40) && values.iter().any(|v| *v > 400),
        "rare extremes"
    );
    let gens: HashSet<&str> = records
        .iter()
        .map(|r| r["transmitterGeneration"].as_str().unwrap())
        .collect();
    assert!(
        gens.contains("g7") && gens.contains("g6 pro") && gens.contains("g715day"),
        "{gens:?}"
    );
    let trends: HashSet<&str> = records.iter().filter_map(|r| r["trend"].as_str()).collect();
    assert!(trends.len() >= 6, "{trends:?}");
    for r in records {
        let (Some(rate), Some(trend)) = (r["trendRate"].as_f64(), r["trend"].as_str()) else {
            continue;
        };
        match trend {
            "flat" => assert!(rate.abs() <= 1.0),
            "singleUp" | "doubleUp" => assert!(rate > 2.0),
            "singleDown" | "doubleDown" => assert!(rate < -2.0),
            _ => {}
        }
    }
    // App users' display times carry an offset, receivers' do not.
    let (mut app_users, mut receivers) = (0, 0);
    for i in 0..12 {
        let user = format!("user{i}");
        let has_offset = matches!(data::profile(&user).display, Display::App { .. });
        let t = app.connect(Flavor::Cgm, &user).await;
        let body = list(&app, &t.access, "egvs", t0() - Duration::hours(1), t0()).await;
        let display = body["records"][0]["displayTime"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(display.len() > 19, has_offset, "{user}: {display}");
        if has_offset {
            app_users += 1
        } else {
            receivers += 1
        }
    }
    assert!(app_users > 0 && receivers > 0);
}

#[tokio::test]
async fn devices_and_data_range() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Cgm, "alice").await;
    let devices = list(&app, &t.access, "devices", t0() - Duration::days(1), t0()).await;
    assert_eq!(devices["recordType"], "device");
    let ctx = DataContext::immediate(default_history_start());
    assert_eq!(
        devices["records"],
        serde_json::to_value(data::devices(&ctx, "alice", t0())).unwrap()
    );

    let range: Value = app
        .get_data("/cgm/v3/users/self/dataRange", &t.access, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(range["recordType"], "dataRange");
    assert_eq!(range["egvs"]["start"]["systemTime"], "2026-01-01T00:00:00");
    assert_eq!(range["egvs"]["end"]["systemTime"], dexcom(t0()));
    assert!(range["calibrations"]["end"]["displayTime"].is_string());
    assert!(range["events"]["start"]["systemTime"].is_string());
    let bad = app
        .get_data(
            "/cgm/v3/users/self/dataRange",
            &t.access,
            &[("lastSyncTime", "yesterday")],
        )
        .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn publication_delay_hides_recent_records() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Cgm, "alice").await;
    app.put_faults(json!({"publication_delay_secs": 3600}))
        .await;
    let body = list(&app, &t.access, "egvs", t0() - Duration::hours(3), t0()).await;
    assert_eq!(
        body["records"][0]["systemTime"],
        dexcom(t0() - Duration::hours(1))
    );
    assert_eq!(body["records"].as_array().unwrap().len(), 25);
    app.sandbox.advance(Duration::minutes(10));
    let body = list(&app, &t.access, "egvs", t0() - Duration::hours(3), t0()).await;
    assert_eq!(
        body["records"][0]["systemTime"],
        dexcom(t0() - Duration::minutes(50))
    );
}

#[tokio::test]
async fn backfilled_gap_appears_late_and_flagged() {
    let app = TestApp::spawn().await;
    let user = "bob";
    app.put_faults(json!({"backfill": true, "backfill_delay_secs": 3600}))
        .await;
    let (gap_start, gap_end) = data::gap_on(user, t0().date_naive());
    let first_sync = gap_end + Duration::minutes(30);
    app.sandbox.set_now(Some(first_sync));
    let t = app.connect(Flavor::Cgm, user).await;
    let window = (gap_start - Duration::hours(1), gap_end + Duration::hours(1));
    let in_gap = |r: &Value| {
        let st = r["systemTime"].as_str().unwrap();
        dexcom(gap_start).as_str() <= st && st < dexcom(gap_end).as_str()
    };

    let before = list(&app, &t.access, "egvs", window.0, window.1).await;
    let records = before["records"].as_array().unwrap();
    assert_eq!(
        records[0]["systemTime"],
        dexcom(first_sync),
        "newer data are served"
    );
    assert!(!records.iter().any(in_gap), "the gap is withheld");

    app.sandbox.set_now(Some(gap_end + Duration::hours(1)));
    let after = list(&app, &t.access, "egvs", window.0, window.1).await;
    let gap: Vec<&Value> = after["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| in_gap(r))
        .collect();
    assert_eq!(gap.len(), 24);
    assert!(gap.iter().all(|r| r["backfilled"] == true));
    let ctx = app.sandbox.data_context();
    assert_eq!(
        keyed(data::expected_egvs(&ctx, user, window.0, window.1)),
        keyed(after["records"].as_array().unwrap().clone())
    );

    // dataRange with the previous sync time points back at the gap.
    let last = first_sync.to_rfc3339();
    let range: Value = app
        .get_data(
            "/cgm/v3/users/self/dataRange",
            &t.access,
            &[("lastSyncTime", &last)],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(range["egvs"]["start"]["systemTime"], dexcom(gap_start));
}
