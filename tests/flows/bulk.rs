//! Bulk actions over HTTP (docs/actions.md#bulk-actions): a bulk pause with a dry run
//! touches exactly the connections it showed, however many match the filter by the time it is
//! confirmed; confirming again answers the same; wrong, mismatched and expired tokens, bad
//! bodies and other roles are problems that change nothing.

use api::auth::Role;
use chrono::{TimeDelta, Utc};
use engine::testing::TestDb;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::helpers::{TestApp, test_config};

engine::backend_tests!(
    a_bulk_pause_with_a_dry_run_touches_exactly_what_it_showed,
    bad_bulk_calls_are_problems_that_change_nothing,
    the_configured_cap_and_lifetime_hold,
);

const PAUSE: &str = "/v1/ops/bulk/pause";

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn ids_of(rows: &Value) -> Vec<String> {
    sorted(
        rows.as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect(),
    )
}

async fn connected(app: &TestApp, user: &str, partner: &str) -> String {
    let connection = app.connect_fully(user, partner).await;
    TestApp::id(&connection).to_string()
}

fn dry_run(filter: Value) -> Value {
    json!({ "filter": filter, "reason": "partner maintenance tonight", "dryRun": true })
}

async fn paused(app: &TestApp, ops: &str) -> Vec<String> {
    let (status, page) = app.get("/v1/ops/connections?paused=true", ops).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    ids_of(&page["connections"])
}

async fn a_bulk_pause_with_a_dry_run_touches_exactly_what_it_showed(db: &TestDb) {
    let mut config = test_config(db);
    config.workers.enabled = false;
    let app = TestApp::spawn_with(config).await;
    let ops = app.token(Role::Ops, "carol");
    let mut shown = Vec::new();
    for user in ["ann", "ben", "cid"] {
        shown.push(connected(&app, user, "sandbox-cgm").await);
    }
    let pump = connected(&app, "dan", "sandbox-pump").await;

    let (status, plan) = app
        .post_json(
            PAUSE,
            &ops,
            dry_run(json!({ "partner": "sandbox-cgm", "paused": false })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["action"], "pause");
    assert_eq!(plan["count"], 3);
    assert_eq!(ids_of(&plan["sample"]), sorted(shown.clone()));
    assert_eq!(plan["sample"][0]["partner"], "sandbox-cgm");
    assert_eq!(plan["sample"][0]["state"], "active");
    let token = plan["confirmationToken"].as_str().unwrap().to_owned();
    let expires: chrono::DateTime<Utc> = plan["expiresAt"].as_str().unwrap().parse().unwrap();
    assert!(expires > Utc::now() + TimeDelta::minutes(14));
    assert!(
        paused(&app, &ops).await.is_empty(),
        "a dry run acts on nothing"
    );

    // Between the dry run and the confirmation, two more connections match the filter.
    let late = [
        connected(&app, "eve", "sandbox-cgm").await,
        connected(&app, "fay", "sandbox-cgm").await,
    ];
    let (_, now) = app
        .post_json(
            PAUSE,
            &ops,
            dry_run(json!({ "partner": "sandbox-cgm", "paused": false })),
        )
        .await;
    assert_eq!(now["count"], 5, "the filter matches more by now");

    let confirm = json!({ "confirmationToken": token });
    let (status, result) = app.post_json(PAUSE, &ops, confirm.clone()).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(
        result,
        json!({ "acted": 3, "already": 0, "refused": 0, "gone": 0, "refusals": [] })
    );
    assert_eq!(paused(&app, &ops).await, sorted(shown.clone()));
    for id in &shown {
        let events = app.events(id).await;
        let pauses: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "ops_pause")
            .collect();
        assert_eq!(pauses.len(), 1, "{id} journaled once");
        assert_eq!(pauses[0]["actor"], "ops:carol");
        assert_eq!(pauses[0]["reason"], "partner maintenance tonight");
    }
    for id in late.iter().chain([&pump]) {
        let connection = app.connection(id).await;
        assert_eq!(connection["paused"], false, "{id} was not shown");
        let events = app.events(id).await;
        assert!(events.iter().all(|e| e["event"] != "ops_pause"), "{id}");
    }

    // Confirming again answers the same and writes nothing.
    let journals: Vec<usize> = journal_lens(&app, &shown).await;
    let (status, again) = app.post_json(PAUSE, &ops, confirm).await;
    assert_eq!((status, &again), (StatusCode::OK, &result));
    assert_eq!(journal_lens(&app, &shown).await, journals);

    // A bulk resume of what is paused, with a reason of its own at the confirmation.
    let (_, plan) = app
        .post_json(
            "/v1/ops/bulk/resume",
            &ops,
            dry_run(json!({ "paused": true })),
        )
        .await;
    assert_eq!(plan["count"], 3);
    let (status, result) = app
        .post_json(
            "/v1/ops/bulk/resume",
            &ops,
            json!({ "confirmationToken": plan["confirmationToken"], "reason": "maintenance over" }),
        )
        .await;
    assert_eq!((status, &result["acted"]), (StatusCode::OK, &3.into()));
    assert!(paused(&app, &ops).await.is_empty());
    let resumed = app.events(&shown[0]).await;
    assert_eq!(resumed.last().unwrap()["reason"], "maintenance over");
    app.stop().await;
}

async fn journal_lens(app: &TestApp, ids: &[String]) -> Vec<usize> {
    let mut lens = Vec::new();
    for id in ids {
        lens.push(app.events(id).await.len());
    }
    lens
}

async fn bad_bulk_calls_are_problems_that_change_nothing(db: &TestDb) {
    let mut config = test_config(db);
    config.workers.enabled = false;
    let app = TestApp::spawn_with(config).await;
    let ops = app.token(Role::Ops, "carol");
    let id = connected(&app, "ola", "sandbox-cgm").await;
    let store = app.workflows.store();
    let connection_id = id.parse().unwrap();
    let untouched = store.get(connection_id).await.unwrap();

    let (_, plan) = app.post_json(PAUSE, &ops, dry_run(json!({}))).await;
    let token = plan["confirmationToken"].as_str().unwrap().to_owned();
    let jwt = app.token(Role::Ops, "leaked");
    let cases = [
        (
            "/v1/ops/bulk/resume",
            json!({ "confirmationToken": token }),
            StatusCode::CONFLICT,
            "bulk_plan_action_mismatch",
        ),
        (
            PAUSE,
            json!({ "confirmationToken": "no-such-token" }),
            StatusCode::NOT_FOUND,
            "bulk_plan_unknown",
        ),
        (
            PAUSE,
            json!({ "confirmationToken": token, "filter": {} }),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            PAUSE,
            json!({ "filter": {}, "reason": "no dry run" }),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            PAUSE,
            json!({ "filter": {}, "dryRun": true }),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            PAUSE,
            dry_run(json!({ "colour": "red" })),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            PAUSE,
            dry_run(json!({ "stuck": false, "reason": "lease_past_bound" })),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            PAUSE,
            dry_run(json!({ "partner": "Not A Partner" })),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            PAUSE,
            json!({ "filter": {}, "reason": format!("token {jwt}"), "dryRun": true }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_reason",
        ),
        (
            "/v1/ops/bulk/explode",
            dry_run(json!({})),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
    ];
    for (path, body, status, code) in cases {
        let (got, problem) = app.post_json(path, &ops, body.clone()).await;
        assert_eq!(
            (got, problem["code"].as_str()),
            (status, Some(code)),
            "{path} {body}: {problem}"
        );
        assert!(!problem["detail"].as_str().unwrap().contains(&jwt));
    }
    for role in [Role::User, Role::Service, Role::Clinician] {
        let token = app.token(role, "ola");
        let (got, problem) = app.post_json(PAUSE, &token, dry_run(json!({}))).await;
        assert_eq!(
            (got, &problem["code"]),
            (StatusCode::FORBIDDEN, &"forbidden".into())
        );
    }

    // An expired token is refused, and the plan stays unexecuted.
    let backend = store.db().get_database_backend();
    store
        .db()
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "UPDATE bulk_plans SET expires_at = $1",
            vec![(Utc::now() - TimeDelta::minutes(1)).into()],
        ))
        .await
        .unwrap();
    let (got, problem) = app
        .post_json(PAUSE, &ops, json!({ "confirmationToken": token }))
        .await;
    assert_eq!(
        (got, problem["code"].as_str()),
        (StatusCode::GONE, Some("bulk_plan_expired"))
    );
    assert_eq!(store.get(connection_id).await.unwrap(), untouched);
    app.stop().await;
}

/// `workers.bulk_max_connections` and `workers.bulk_plan_ttl_secs` are what the API enforces.
async fn the_configured_cap_and_lifetime_hold(db: &TestDb) {
    let mut config = test_config(db);
    config.workers.enabled = false;
    config.workers.bulk_max_connections = 1;
    config.workers.bulk_plan_ttl_secs = 120;
    let app = TestApp::spawn_with(config).await;
    let ops = app.token(Role::Ops, "carol");
    let one = connected(&app, "pia", "sandbox-cgm").await;
    connected(&app, "quin", "sandbox-pump").await;

    let before = Utc::now();
    let (status, plan) = app
        .post_json(PAUSE, &ops, dry_run(json!({ "partner": "sandbox-cgm" })))
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["count"], 1);
    let expires: chrono::DateTime<Utc> = plan["expiresAt"].as_str().unwrap().parse().unwrap();
    let lifetime = expires - before;
    assert!(
        lifetime > TimeDelta::seconds(110) && lifetime <= TimeDelta::seconds(125),
        "{lifetime}"
    );

    // Two match: over the cap, refused, nothing stored.
    let (status, problem) = app.post_json(PAUSE, &ops, dry_run(json!({}))).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("bulk_too_many")),
        "{problem}"
    );
    let store = app.workflows.store();
    let plans = store
        .db()
        .query_one_raw(Statement::from_string(
            store.db().get_database_backend(),
            "SELECT COUNT(*) AS n FROM bulk_plans",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(plans, 1, "only the first dry run's plan");
    assert_eq!(app.connection(&one).await["paused"], false);
    app.stop().await;
}
