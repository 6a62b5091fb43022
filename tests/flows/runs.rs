//! Step runs over HTTP (docs/operations.md#step-runs): transfers against the sandbox leave one
//! run each with the records and the partner's status codes, a failed transfer its error code,
//! a forced refresh a refresh run; the connection's user, `service` and `ops` see them, other
//! users get 404.

use api::auth::Role;
use reqwest::StatusCode;
use serde_json::Value;

use engine::testing::TestDb;

use crate::{harness::Harness, helpers::TestApp};

engine::backend_tests!(each_run_of_a_step_is_listed_with_its_counts_and_statuses);

async fn runs(app: &TestApp, id: &str, token: &str, query: &str) -> (StatusCode, Value) {
    app.get(&format!("/v1/connections/{id}/runs{query}"), token)
        .await
}

async fn each_run_of_a_step_is_listed_with_its_counts_and_statuses(db: &TestDb) {
    let h = Harness::new(db).await;
    let connection = h.app.connect_fully("rita", "sandbox-cgm").await;
    let id = TestApp::id(&connection).to_string();
    let user = h.app.user_token("rita");
    h.cycle().await;

    let (status, page) = runs(&h.app, &id, &user, "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let list = page["runs"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{page}");
    let first = &list[0];
    assert_eq!(
        (first["step"].as_str(), first["outcome"].as_str()),
        (Some("fetch"), Some("completed"))
    );
    assert!(first["inserted"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(first["windows"], 1);
    assert!(first["statuses"]["200"].as_u64().unwrap() >= 1, "{first}");
    assert_eq!(first["statuses"].as_object().unwrap().len(), 1, "{first}");
    assert!(first["errorCode"].is_null());
    assert_eq!(page["nextBefore"], Value::Null);

    // A 503: a failed run with its code and the partner's status.
    h.app.sandbox.faults().update(|f| {
        f.fail_next.data = 1;
        f.fail_status = 503;
    });
    h.next_cycle(TestApp::id(&connection)).await;
    // An operator's forced refresh: a refresh run.
    let ops = h.app.token(Role::Ops, "olga");
    let (status, body) = h
        .app
        .post(&format!("/v1/connections/{id}/refresh"), &ops)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, page) = runs(&h.app, &id, &ops, "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let list = page["runs"].as_array().unwrap();
    let steps: Vec<(&str, &str)> = list
        .iter()
        .map(|r| (r["step"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("refresh", "refreshed"),
            ("fetch", "failed"),
            ("fetch", "completed")
        ],
        "newest first: {page}"
    );
    assert_eq!(list[1]["errorCode"], "partner_unavailable");
    assert!(
        list[1]["statuses"]["503"].as_u64().unwrap() >= 1,
        "{}",
        list[1]
    );
    assert_eq!(list[1]["inserted"], 0);
    assert_eq!(list[0]["statuses"]["200"], 1, "the token endpoint's answer");

    // Paging: one at a time, newest first.
    let (_, one) = runs(&h.app, &id, &ops, "?limit=1").await;
    assert_eq!(one["runs"][0]["step"], "refresh");
    let before = one["nextBefore"].as_i64().expect("more pages");
    let (_, two) = runs(&h.app, &id, &ops, &format!("?limit=2&before={before}")).await;
    let outcomes: Vec<&str> = two["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "completed"]);
    assert_eq!(two["nextBefore"], Value::Null);

    // The service sees them; another user does not (404, as for the connection itself).
    let (status, _) = runs(&h.app, &id, &h.app.token(Role::Service, "web"), "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = runs(&h.app, &id, &h.app.user_token("mallory"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "not_found");
    let (status, body) = runs(&h.app, &id, &ops, "?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // No health value appears in a run: only counts and codes.
    let text = page.to_string();
    assert!(
        !text.contains("mg/dL") && !text.contains("\"value\""),
        "{text}"
    );
}
