//! The fleet over HTTP (docs/operations.md#stuck): an operator lists connections with filters
//! and pages, each with its stuck reasons, and reads the summary; bad filters are problems;
//! other roles are refused.

use api::auth::Role;
use chrono::{DateTime, TimeDelta, Utc};
use engine::testing::TestDb;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement, Value as SqlValue};
use serde_json::{Value, json};

use crate::helpers::{TestApp, test_config};

engine::backend_tests!(
    an_operator_lists_and_pages_the_fleet_with_filters,
    bad_filters_are_problems_and_other_roles_are_refused,
);

async fn set(app: &TestApp, id: &str, assignments: &str, at: DateTime<Utc>) {
    let store = app.workflows.store();
    let backend = store.db().get_database_backend();
    let values: Vec<SqlValue> = vec![at.into(), id.to_owned().into()];
    store
        .db()
        .execute_raw(Statement::from_sql_and_values(
            backend,
            format!("UPDATE connections SET {assignments} WHERE id = $2"),
            values,
        ))
        .await
        .unwrap();
}

/// The ids of a page, in order.
fn ids(page: &Value) -> Vec<String> {
    page["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn an_operator_lists_and_pages_the_fleet_with_filters(db: &TestDb) {
    let mut config = test_config(db);
    // Nothing runs behind the test's back.
    config.workers.enabled = false;
    let app = TestApp::spawn_with(config).await;
    let ops = app.token(Role::Ops, "carol");

    // Overdue: its transfer was due 20 minutes ago.
    let overdue = app.connect_fully("alice", "sandbox-cgm").await;
    let overdue = overdue["id"].as_str().unwrap().to_owned();
    set(
        &app,
        &overdue,
        "next_sync_at = $1",
        Utc::now() - TimeDelta::minutes(20),
    )
    .await;
    // Left at the consent page half an hour ago.
    let (status, started) = app.connect("bob", "sandbox-cgm").await;
    assert!(status.is_success(), "{started}");
    let abandoned = started["id"].as_str().unwrap().to_owned();
    set(
        &app,
        &abandoned,
        "updated_at = $1",
        Utc::now() - TimeDelta::minutes(30),
    )
    .await;
    // Healthy, with an old error on record.
    let fine = app.connect_fully("dana", "sandbox-cgm").await;
    let fine = fine["id"].as_str().unwrap().to_owned();
    set(
        &app,
        &fine,
        "next_sync_at = $1, last_error_code = 'partner_unavailable'",
        Utc::now() + TimeDelta::hours(1),
    )
    .await;

    let (status, page) = app.get("/v1/ops/connections", &ops).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        ids(&page),
        sorted(vec![overdue.clone(), abandoned.clone(), fine.clone()])
    );
    assert_eq!(page["nextCursor"], Value::Null);
    for c in page["connections"].as_array().unwrap() {
        let expected = match c["id"].as_str().unwrap() {
            id if id == overdue => json!(["transfer_overdue"]),
            id if id == abandoned => json!(["authorization_expired"]),
            _ => json!([]),
        };
        assert_eq!(c["stuckReasons"], expected, "{c}");
        // The connection as every other endpoint shows it.
        assert!(c["state"].is_string() && c["paused"] == false, "{c}");
    }

    for (query, expected) in [
        ("state=authorizing", vec![abandoned.clone()]),
        ("state=active&user=alice", vec![overdue.clone()]),
        ("partner=sandbox-cgm&user=dana", vec![fine.clone()]),
        ("partner=sandbox-pump", vec![]),
        (
            "stuck=true",
            sorted(vec![overdue.clone(), abandoned.clone()]),
        ),
        ("stuck=false", vec![fine.clone()]),
        ("reason=transfer_overdue", vec![overdue.clone()]),
        (
            "reason=authorization_expired&stuck=true",
            vec![abandoned.clone()],
        ),
        ("reason=data_not_advancing", vec![]),
        ("error=partner_unavailable", vec![fine.clone()]),
        ("paused=true", vec![]),
        ("paused=false&stuck=false", vec![fine.clone()]),
    ] {
        let (status, page) = app.get(&format!("/v1/ops/connections?{query}"), &ops).await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        assert_eq!(ids(&page), expected, "{query}");
    }

    // Pages of two: the cursor leads to the rest, the last page has none.
    let all = sorted(vec![overdue.clone(), abandoned.clone(), fine.clone()]);
    let (_, first) = app.get("/v1/ops/connections?limit=2", &ops).await;
    assert_eq!(ids(&first), all[..2]);
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    assert!(!cursor.contains(&all[1]), "opaque: {cursor}");
    let (status, second) = app
        .get(
            &format!("/v1/ops/connections?limit=2&cursor={cursor}"),
            &ops,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(ids(&second), all[2..]);
    assert_eq!(second["nextCursor"], Value::Null);

    let (status, summary) = app.get("/v1/ops/summary", &ops).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(summary["total"], 3);
    assert_eq!(
        summary["byPartnerState"],
        json!([
            {"partner": "sandbox-cgm", "state": "active", "count": 2},
            {"partner": "sandbox-cgm", "state": "authorizing", "count": 1},
        ])
    );
    assert_eq!(
        (&summary["dueNow"], &summary["overdue"]),
        (&json!(1), &json!(1))
    );
    let late = summary["oldestDueSecs"].as_u64().unwrap();
    assert!((1200..1300).contains(&late), "{late}");
    assert_eq!(
        summary["errors"],
        json!([{"code": "partner_unavailable", "count": 1}])
    );
    assert_eq!(summary["stuckConnections"], 2);
    let stuck = summary["stuck"].as_array().unwrap();
    assert_eq!(stuck.len(), 7, "every reason, zeros included");
    for entry in stuck {
        let expected = match entry["reason"].as_str().unwrap() {
            "transfer_overdue" | "authorization_expired" => 1,
            _ => 0,
        };
        assert_eq!(entry["count"], expected, "{entry}");
    }
    let steps: Vec<&str> = summary["queue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["fetch", "refresh", "revoke", "deliver"]);
    assert_eq!(summary["lastHour"].as_array().unwrap().len(), 4);
    app.stop().await;
}

async fn bad_filters_are_problems_and_other_roles_are_refused(db: &TestDb) {
    let mut config = test_config(db);
    config.workers.enabled = false;
    let app = TestApp::spawn_with(config).await;
    let ops = app.token(Role::Ops, "carol");
    app.connect_fully("alice", "sandbox-cgm").await;

    for (query, code) in [
        ("state=sleeping", "invalid_parameter"),
        ("reason=bored", "invalid_parameter"),
        ("stuck=maybe", "invalid_parameter"),
        ("paused=1x", "invalid_parameter"),
        ("stuck=false&reason=transfer_overdue", "invalid_parameter"),
        ("partner=Not_A_Partner", "invalid_parameter"),
        ("user=a%20b", "invalid_parameter"),
        ("error=a%20b", "invalid_parameter"),
        ("limit=0", "invalid_parameter"),
        ("limit=1001", "invalid_parameter"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("cursor=bm90LWFuLWlk", "invalid_cursor"),
    ] {
        let response = app
            .http
            .get(format!("{}/v1/ops/connections?{query}", app.base))
            .bearer_auth(&ops)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
        let (status, problem) = crate::helpers::read(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        assert_eq!(problem["code"], code, "{query}: {problem}");
    }

    for path in ["/v1/ops/connections", "/v1/ops/summary"] {
        for role in [Role::User, Role::Service, Role::Clinician] {
            let (status, problem) = app.get(path, &app.token(role, "someone")).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
            assert_eq!(problem["code"], "forbidden");
        }
        let (status, problem) = app.get(path, "not-a-token").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(problem["code"], "unauthenticated");
    }
    app.stop().await;
}
