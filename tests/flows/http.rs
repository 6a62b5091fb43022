//! What the real server answers over HTTP where poem's router would answer by itself: paths
//! that are not UTF-8 and wrong methods (see docs/api.md#errors).

use engine::testing::TestDb;
use reqwest::{Method, StatusCode};
use url::Url;

use crate::helpers::{TestApp, test_config};

engine::backend_tests!(
    invalid_utf8_in_paths_is_answered_by_the_routes,
    wrong_methods_answer_405_with_allow,
);

async fn send(app: &TestApp, method: Method, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app.http.request(method, format!("{}{path}", app.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn invalid_utf8_in_paths_is_answered_by_the_routes(db: &TestDb) {
    let mut config = test_config(db);
    let return_url = Url::parse("https://web.example/connected").unwrap();
    config.server.return_url = Some(return_url.clone());
    let app = TestApp::spawn_with(config).await;
    let ops = app.token(api::auth::Role::Ops, "ops");

    let response = send(&app, Method::GET, "/v1/users/%FF/connections", Some(&ops)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        header(&response, "content-type"),
        Some("application/problem+json")
    );
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"));
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_user_id", "{problem}");

    // The callback answers as a callback: a page for an unknown partner, the configured
    // redirect for a query it cannot use.
    let response = send(&app, Method::GET, "/v1/oauth/%FF/callback?state=x", None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(
        header(&response, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(response.text().await.unwrap().contains("unknown_partner"));
    let response = send(
        &app,
        Method::GET,
        "/v1/oauth/sandbox-cgm/callback?state=%FF&code=%FE",
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = Url::parse(header(&response, "location").unwrap()).unwrap();
    assert_eq!(location.path(), return_url.path());
    assert!(
        location.query().unwrap().contains("code=invalid_state"),
        "{location}"
    );
    app.stop().await;
}

async fn wrong_methods_answer_405_with_allow(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let ops = app.token(api::auth::Role::Ops, "ops");
    for (method, path, allow) in [
        (Method::DELETE, "/v1/partners", "GET, HEAD"),
        (
            Method::PUT,
            "/v1/users/alice/connections",
            "GET, HEAD, POST",
        ),
        (
            Method::GET,
            "/v1/connections/0190f5e2-7b1c-7d3e-8f00-0123456789ab/sync",
            "POST",
        ),
        (Method::POST, "/v1/oauth/sandbox-cgm/callback", "GET, HEAD"),
    ] {
        let response = send(&app, method.clone(), path, Some(&ops)).await;
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(header(&response, "allow"), Some(allow), "{method} {path}");
        assert_eq!(
            header(&response, "content-type"),
            Some("application/problem+json")
        );
        assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"));
    }
    app.stop().await;
}
