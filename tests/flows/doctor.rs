//! The doctor over HTTP (docs/operations.md#doctor): an operator finds a violation made by hand,
//! repairs it (journaled with the operator as actor), and a second repair changes nothing; other
//! roles are refused with a problem.

use api::auth::Role;
use chrono::{TimeDelta, Utc};
use engine::{
    ids::{PartnerName, UserId},
    model::{Actor, Change, NewAuthorization, TokenSet},
    secret::SecretString,
    state::Event,
    testing::TestDb,
};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement};

use crate::helpers::{TestApp, test_config};

engine::backend_tests!(an_operator_finds_and_repairs_a_violation_over_http);

const ACCESS: &str = "doctor-flow-access-token";

async fn an_operator_finds_and_repairs_a_violation_over_http(db: &TestDb) {
    let mut config = test_config(db);
    // Nothing runs behind the test's back: the violation stays until the doctor repairs it.
    config.workers.enabled = false;
    let app = TestApp::spawn_with(config).await;
    let store = app.workflows.store();
    let authorization = NewAuthorization {
        state_hash: "doctor-flow".to_owned(),
        pkce_verifier: SecretString::from("verifier"),
        expires_at: Utc::now() + TimeDelta::minutes(10),
    };
    let (opened, _) = store
        .open_connection(
            &UserId::parse("alice").unwrap(),
            &PartnerName::parse("sandbox-cgm").unwrap(),
            Change::new(
                Event::StartAuthorization { authorization },
                Actor::new("user", "alice"),
            ),
        )
        .await
        .unwrap();
    let tokens = TokenSet {
        access_token: SecretString::from(ACCESS),
        refresh_token: Some(SecretString::from("doctor-flow-refresh")),
        expires_at: Some(Utc::now() + TimeDelta::hours(2)),
        scope: None,
    };
    let id = opened.connection.id;
    store
        .apply(
            id,
            None,
            Change::new(Event::Authorized { tokens }, Actor::system("test")),
        )
        .await
        .unwrap();
    // The violation, by hand: an active connection with no next transfer.
    let backend = store.db().get_database_backend();
    store
        .db()
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "UPDATE connections SET next_sync_at = NULL WHERE id = $1",
            [id.to_string().into()],
        ))
        .await
        .unwrap();

    let ops = app.token(Role::Ops, "carol");
    let (status, report) = app.get("/v1/ops/doctor", &ops).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["clean"], false);
    assert_eq!(report["repair"], false);
    assert_eq!(report["checked"].as_array().unwrap().len(), 20);
    let violations = report["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 1, "{report}");
    assert_eq!(violations[0]["code"], "transfer_not_scheduled");
    assert_eq!(violations[0]["subject"], "connection");
    assert_eq!(violations[0]["count"], 1);
    assert_eq!(violations[0]["sample"][0], id.to_string());
    assert!(!report.to_string().contains(ACCESS), "no token in a report");

    let refused = app
        .http
        .post(format!("{}/v1/ops/doctor/repair", app.base))
        .bearer_auth(app.token(Role::Service, "web"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    for role in [Role::User, Role::Service, Role::Clinician] {
        let token = app.token(role, "someone");
        let (status, problem) = app.get("/v1/ops/doctor", &token).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(problem["code"], "forbidden");
        let (status, problem) = app.post("/v1/ops/doctor/repair", &token).await;
        assert_eq!(
            (status, &problem["code"]),
            (StatusCode::FORBIDDEN, &"forbidden".into())
        );
    }
    assert!(
        store.get(id).await.unwrap().next_sync_at.is_none(),
        "refused: untouched"
    );

    let (status, repaired) = app.post("/v1/ops/doctor/repair", &ops).await;
    assert_eq!(status, StatusCode::OK, "{repaired}");
    assert_eq!(repaired["repair"], true);
    assert_eq!(repaired["clean"], true, "{repaired}");
    assert_eq!(repaired["violations"][0]["repaired"], 1);
    assert_eq!(repaired["violations"][0]["remaining"], 0);
    assert!(store.get(id).await.unwrap().next_sync_at.is_some());
    let journal = store.journal(id).await.unwrap();
    let last = journal.last().unwrap();
    assert_eq!(
        (last.event.as_str(), last.actor.as_str()),
        ("doctor_repair", "ops:carol")
    );

    let (status, again) = app.post("/v1/ops/doctor/repair", &ops).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        again["violations"],
        serde_json::json!([]),
        "nothing left to repair"
    );
    assert_eq!(store.journal(id).await.unwrap().len(), journal.len());
    let (_, clean) = app.get("/v1/ops/doctor", &ops).await;
    assert_eq!(
        (&clean["clean"], &clean["violations"]),
        (&true.into(), &serde_json::json!([]))
    );
    app.stop().await;
}
