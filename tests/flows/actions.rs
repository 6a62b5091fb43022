//! Operators' actions over HTTP (docs/actions.md#actions), with the sandbox partner and the
//! workers running: a connection made stuck on purpose (an expired lease left behind by a job
//! that never finished, its next transfer hours away) is replayed and its data flow again; a
//! paused partner is not transferred until resumed; only operators act, and a bad reason is a
//! problem that changes nothing.

use std::time::Duration;

use api::auth::Role;
use chrono::{TimeDelta, Utc};
use engine::{ids::ConnectionId, testing::TestDb};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, test_config};

engine::backend_tests!(
    a_stuck_connection_is_replayed_and_its_data_flow_again,
    a_paused_partner_is_not_transferred_until_resumed,
    only_operators_act_and_bad_reasons_change_nothing,
);

async fn last_sync(app: &TestApp, id: ConnectionId) -> Option<chrono::DateTime<Utc>> {
    app.workflows.store().get(id).await.unwrap().last_sync_at
}

async fn sql(app: &TestApp, text: &str, values: Vec<sea_orm::Value>) {
    let store = app.workflows.store();
    store
        .db()
        .execute_raw(Statement::from_sql_and_values(
            store.db().get_database_backend(),
            text,
            values,
        ))
        .await
        .unwrap();
}

/// A connected user whose first transfer by the workers has completed.
async fn transferred(app: &TestApp, user: &str) -> ConnectionId {
    let connection = app.connect_fully(user, "sandbox-cgm").await;
    let id = TestApp::id(&connection);
    eventually("the first transfer by the workers", || async {
        last_sync(app, id).await.is_some()
    })
    .await;
    id
}

fn reason(text: &str) -> Value {
    json!({ "reason": text })
}

async fn a_stuck_connection_is_replayed_and_its_data_flow_again(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let id = transferred(&app, "sam").await;
    let ops = app.token(Role::Ops, "carol");
    // Stuck on purpose: a job claimed and started, then lost (its lease expired ten minutes
    // ago and was never released), and no transfer planned for hours.
    sql(
        &app,
        "UPDATE connections SET sync_lease_until = $1, sync_lease_token = 'lost-job', \
         next_sync_at = $2 WHERE id = $3",
        vec![
            (Utc::now() - TimeDelta::minutes(10)).into(),
            (Utc::now() + TimeDelta::hours(6)).into(),
            id.to_string().into(),
        ],
    )
    .await;
    let before = last_sync(&app, id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        last_sync(&app, id).await,
        Some(before),
        "stuck: nothing runs"
    );

    let path = format!("/v1/ops/connections/{id}/replay");
    let (status, replay) = app
        .post_json(&path, &ops, reason("lost job after the worker restart"))
        .await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["step"], "transfer");
    assert_eq!(replay["changed"], true);
    assert_eq!(replay["leaseCleared"], true);
    assert_eq!(replay["connection"]["id"], id.to_string());

    eventually("the replayed transfer completes", || async {
        last_sync(&app, id).await.is_some_and(|t| t > before)
    })
    .await;
    let c = app.workflows.store().get(id).await.unwrap();
    assert!(
        c.next_sync_at.unwrap() > Utc::now(),
        "the next run is planned"
    );
    let events = app.events(&id.to_string()).await;
    let replayed = events
        .iter()
        .find(|e| e["event"] == "ops_replay")
        .expect("journaled");
    assert_eq!(replayed["actor"], "ops:carol");
    assert_eq!(replayed["reason"], "lost job after the worker restart");
    assert_eq!(replayed["details"]["leaseCleared"], true);
    app.stop().await;
}

async fn a_paused_partner_is_not_transferred_until_resumed(db: &TestDb) {
    let mut config = test_config(db);
    config.workers.resume_spread_secs = 1;
    let app = TestApp::spawn_with(config).await;
    let id = transferred(&app, "pia").await;
    let ops = app.token(Role::Ops, "carol");

    let (status, paused) = app
        .post_json(
            "/v1/ops/partners/sandbox-cgm/pause",
            &ops,
            reason("partner incident"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["changed"], true);
    assert_eq!(paused["pause"]["scope"], "partner:sandbox-cgm");
    assert_eq!(paused["pause"]["partner"], "sandbox-cgm");
    let (_, again) = app
        .post_json(
            "/v1/ops/partners/sandbox-cgm/pause",
            &ops,
            reason("partner incident"),
        )
        .await;
    assert_eq!(again["changed"], false);
    assert_eq!(again["pause"]["id"], paused["pause"]["id"]);
    let (status, pauses) = app.get("/v1/ops/pauses", &ops).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pauses["pauses"].as_array().unwrap().len(), 1, "{pauses}");
    assert_eq!(pauses["pauses"][0]["actor"], "ops:carol");
    assert_eq!(pauses["pausedConnections"], 0);

    // Due now, but paused: not transferred, and not replayed.
    let before = last_sync(&app, id).await.unwrap();
    let (status, _) = app
        .post(
            &format!("/v1/connections/{id}/sync"),
            &app.user_token("pia"),
        )
        .await;
    assert!(status.is_success(), "{status}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        last_sync(&app, id).await,
        Some(before),
        "paused: not claimed"
    );
    let (status, problem) = app
        .post_json(
            &format!("/v1/ops/connections/{id}/replay"),
            &ops,
            reason("try"),
        )
        .await;
    assert_eq!(
        (status, &problem["code"]),
        (StatusCode::CONFLICT, &"paused".into())
    );

    let (status, resumed) = app
        .post_json(
            "/v1/ops/partners/sandbox-cgm/resume",
            &ops,
            reason("incident over"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["changed"], true);
    assert_eq!(resumed["rescheduled"], 1);
    eventually("the transfer after the resume", || async {
        last_sync(&app, id).await.is_some_and(|t| t > before)
    })
    .await;
    let (_, pauses) = app.get("/v1/ops/pauses", &ops).await;
    assert_eq!(pauses["pauses"], json!([]));
    let (status, problem) = app
        .post_json("/v1/ops/partners/nope/pause", &ops, reason("x"))
        .await;
    assert_eq!(
        (status, &problem["code"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &"unknown_partner".into())
    );
    app.stop().await;
}

async fn only_operators_act_and_bad_reasons_change_nothing(db: &TestDb) {
    let mut config = test_config(db);
    // Nothing runs behind the test's back.
    config.workers.enabled = false;
    let app = TestApp::spawn_with(config).await;
    let connection = app.connect_fully("ola", "sandbox-cgm").await;
    let id = TestApp::id(&connection);
    let store = app.workflows.store();
    let untouched = store.get(id).await.unwrap();
    let journal = store.journal(id).await.unwrap();

    let actions = ["replay", "pause", "resume", "fail", "clear-error"]
        .map(|action| format!("/v1/ops/connections/{id}/{action}"));
    let scoped = [
        "/v1/ops/partners/sandbox-cgm/pause",
        "/v1/ops/partners/sandbox-cgm/resume",
        "/v1/ops/pause",
        "/v1/ops/resume",
    ];
    for role in [Role::User, Role::Service, Role::Clinician] {
        let token = app.token(role, "ola");
        for path in actions.iter().map(String::as_str).chain(scoped) {
            let response = app
                .http
                .post(format!("{}{path}", app.base))
                .bearer_auth(&token)
                .json(&reason("not mine to do"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{role:?} {path}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["code"], "forbidden");
        }
        let (status, _) = app.get("/v1/ops/pauses", &token).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, _) = app.post_json(&actions[0], "not-a-token", reason("x")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let ops = app.token(Role::Ops, "carol");
    let jwt = app.token(Role::Ops, "leaked");
    for (body, code, status) in [
        (
            reason(""),
            "invalid_reason",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            reason("   "),
            "invalid_reason",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            reason(&"x".repeat(501)),
            "invalid_reason",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            reason(&format!("token {jwt}")),
            "invalid_reason",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            reason("asked by pat@example.org"),
            "invalid_reason",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({}), "invalid_body", StatusCode::BAD_REQUEST),
        (
            json!({ "reason": 7 }),
            "invalid_body",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "reason": "ok", "force": true }),
            "invalid_body",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        for path in actions.iter().map(String::as_str).chain(scoped) {
            let (got, problem) = app.post_json(path, &ops, body.clone()).await;
            assert_eq!(
                (got, &problem["code"]),
                (status, &code.into()),
                "{path} {body}"
            );
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                !detail.contains(&jwt) && !detail.contains("pat@"),
                "{detail}"
            );
        }
    }
    assert_eq!(
        store.get(id).await.unwrap(),
        untouched,
        "refused: unchanged"
    );
    assert_eq!(store.journal(id).await.unwrap(), journal);
    assert!(store.pauses().await.unwrap().is_empty());

    // A good reason: the actions answer, each journaled once.
    let (status, paused) = app
        .post_json(&actions[1], &ops, reason("user asked for a break"))
        .await;
    assert_eq!(
        (status, &paused["changed"]),
        (StatusCode::OK, &true.into()),
        "{paused}"
    );
    assert_eq!(paused["connection"]["paused"], true);
    let (status, problem) = app.post_json(&actions[0], &ops, reason("try")).await;
    assert_eq!(
        (status, &problem["code"]),
        (StatusCode::CONFLICT, &"paused".into())
    );
    let (_, resumed) = app.post_json(&actions[2], &ops, reason("back")).await;
    assert_eq!(resumed["changed"], true);
    let (status, failed) = app
        .post_json(&actions[3], &ops, reason("partner account closed"))
        .await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert_eq!(failed["connection"]["state"], "failed");
    let (_, again) = app
        .post_json(&actions[3], &ops, reason("partner account closed"))
        .await;
    assert_eq!(again["changed"], false);
    let (_, cleared) = app
        .post_json(&actions[4], &ops, reason("shown to the user"))
        .await;
    assert_eq!(cleared["changed"], true);
    assert_eq!(cleared["connection"]["lastError"], Value::Null);
    let names: Vec<String> = store
        .journal(id)
        .await
        .unwrap()
        .into_iter()
        .skip(journal.len())
        .map(|e| format!("{} {}", e.event, e.actor))
        .collect();
    assert_eq!(
        names,
        [
            "ops_pause ops:carol",
            "ops_resume ops:carol",
            "fail ops:carol",
            "ops_clear_error ops:carol"
        ]
    );
    let (status, missing) = app
        .post_json(
            "/v1/ops/connections/0190f5e2-7b1c-7d3e-8f00-0123456789ab/replay",
            &ops,
            reason("x"),
        )
        .await;
    assert_eq!(
        (status, &missing["code"]),
        (StatusCode::NOT_FOUND, &"not_found".into())
    );
    app.stop().await;
}
