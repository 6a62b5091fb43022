//! Health, readiness, the OpenAPI document and the docs page.

use poem::http::{Method, StatusCode};

use crate::helpers::TestApi;

#[tokio::test]
async fn healthz_and_readyz() {
    let app = TestApi::spawn().await;
    let health = app.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json(), serde_json::json!({"status": "ok"}));
    assert_eq!(health.header("cache-control"), Some("no-store"));
    let ready = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.json()["status"], "ok");
}

#[tokio::test]
async fn readyz_is_503_when_the_database_is_gone() {
    let app = TestApi::spawn().await;
    app.workflows.store().clone().close().await;
    app.send(Method::GET, "/readyz", None, None)
        .await
        .assert_problem(503, "database_unavailable");
}

#[tokio::test]
async fn openapi_document_and_docs() {
    let app = TestApi::spawn().await;
    let spec = app.send(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(spec.status, StatusCode::OK);
    let spec = spec.json();
    assert_eq!(spec["servers"][0]["url"], crate::helpers::BASE);
    let paths = spec["paths"].as_object().unwrap();
    for path in [
        "/healthz",
        "/readyz",
        "/v1/partners",
        "/v1/users/{userId}/connections",
        "/v1/connections/{id}",
        "/v1/connections/{id}/authorize",
        "/v1/connections/{id}/disconnect",
        "/v1/connections/{id}/events",
        "/v1/connections/{id}/refresh",
        "/v1/connections/{id}/revocations",
        "/v1/oauth/{partner}/callback",
        "/v1/ops/alerts",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys()
        );
    }
    let create = &spec["paths"]["/v1/users/{userId}/connections"]["post"];
    for status in [
        "200", "201", "400", "401", "403", "409", "413", "415", "422", "500",
    ] {
        assert!(
            create["responses"][status].is_object(),
            "create documents {status}"
        );
    }
    assert!(
        create["responses"]["409"]["content"]["application/problem+json"].is_object(),
        "{}",
        create["responses"]["409"]
    );
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    let connection = &spec["components"]["schemas"]["Connection"]["properties"];
    assert!(connection["userId"].is_object() && connection["lastError"].is_object());

    let docs = app.send(Method::GET, "/docs", None, None).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text.to_lowercase().contains("swagger"));
}
