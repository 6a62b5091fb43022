//! A user connects through the sandbox end to end, on both partners and both backends.

use api::auth::Role;
use engine::testing::TestDb;
use reqwest::StatusCode;
use sandbox::Flavor;

use crate::helpers::TestApp;

engine::backend_tests!(
    connect_cgm_end_to_end,
    connect_pump_end_to_end_checks_issuer,
    already_active_is_conflict_and_reconnect_reuses_row,
    callback_redirects_only_to_configured_return_url,
    responses_never_carry_token_material,
);

async fn connect_cgm_end_to_end(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let (status, body) = app.connect("alice", "sandbox-cgm").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"], "authorizing");
    let authorize_url = url::Url::parse(body["authorizeUrl"].as_str().unwrap()).unwrap();
    let query: std::collections::HashMap<_, _> = authorize_url.query_pairs().into_owned().collect();
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["scope"], "offline_access");
    assert!(query["state"].len() >= 43);
    assert!(query["redirect_uri"].ends_with("/v1/oauth/sandbox-cgm/callback"));

    let callback = app
        .consent(authorize_url.as_str(), "alice-at-dexcom", true)
        .await;
    assert!(callback.as_str().starts_with(&app.base));
    let (status, page) = app.follow_callback(&callback).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.to_lowercase().contains("connected"), "{page}");

    let id = body["id"].as_str().unwrap();
    let connection = app.connection(id).await;
    assert_eq!(connection["state"], "active");
    assert_eq!(connection["scope"], "offline_access");
    assert!(connection["tokenExpiresAt"].is_string());
    assert!(
        connection["nextSyncAt"].is_string(),
        "first transfer scheduled at once"
    );
    assert!(connection["lastError"].is_null());

    let events = app.events(id).await;
    let transitions: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap_or("").to_owned(),
                e["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        transitions,
        vec![
            ("".to_owned(), "authorizing".to_owned()),
            ("authorizing".to_owned(), "active".to_owned())
        ]
    );
    assert_eq!(events[0]["actor"], "user:alice");

    let stats = app.sandbox.stats();
    assert_eq!(stats.cgm.code_exchanges, 1);
    let tokens = app
        .workflows
        .store()
        .tokens(TestApp::id(&connection))
        .await
        .unwrap()
        .unwrap();
    assert!(tokens.refresh_token.is_some());
    app.stop().await;
}

async fn connect_pump_end_to_end_checks_issuer(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let (status, body) = app.connect("bob", "sandbox-pump").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let callback = app
        .consent(body["authorizeUrl"].as_str().unwrap(), "bob-pump", true)
        .await;
    let iss = callback
        .query_pairs()
        .find(|(k, _)| k == "iss")
        .map(|(_, v)| v.into_owned());
    assert_eq!(
        iss,
        app.sandbox.issuer(Flavor::Pump),
        "the pump sends iss (RFC 9207)"
    );
    let (status, page) = app.follow_callback(&callback).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let connection = app.connection(body["id"].as_str().unwrap()).await;
    assert_eq!(connection["state"], "active");
    assert_eq!(connection["scope"], "pump.read offline_access");
    assert_eq!(app.sandbox.stats().pump.code_exchanges, 1);
    app.stop().await;
}

async fn already_active_is_conflict_and_reconnect_reuses_row(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let connection = app.connect_fully("carol", "sandbox-cgm").await;
    let id = connection["id"].as_str().unwrap().to_owned();

    let (status, problem) = app.connect("carol", "sandbox-cgm").await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "already_active");

    let (status, body) = app
        .post(
            &format!("/v1/connections/{id}/disconnect"),
            &app.user_token("carol"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "revoked");

    let (status, again) = app.connect("carol", "sandbox-cgm").await;
    assert_eq!(status, StatusCode::OK, "reconnect reuses the row: {again}");
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["state"], "authorizing");
    let callback = app
        .consent(again["authorizeUrl"].as_str().unwrap(), "carol-p", true)
        .await;
    assert_eq!(app.follow_callback(&callback).await.0, StatusCode::OK);
    assert_eq!(app.connection(&id).await["state"], "active");
    let (_, list) = app
        .get("/v1/users/carol/connections", &app.user_token("carol"))
        .await;
    let list = list
        .as_array()
        .cloned()
        .unwrap_or_else(|| list["items"].as_array().cloned().unwrap());
    assert_eq!(list.len(), 1, "one row per user and partner");
    app.stop().await;
}

async fn callback_redirects_only_to_configured_return_url(db: &TestDb) {
    let mut config = crate::helpers::test_config(db);
    config.server.return_url =
        Some(url::Url::parse("https://web.example/connected?from=tributary").unwrap());
    let app = TestApp::spawn_with(config).await;
    let (_, body) = app.connect("dave", "sandbox-cgm").await;
    let callback = app
        .consent(body["authorizeUrl"].as_str().unwrap(), "dave-p", true)
        .await;
    let response = app.http.get(callback.clone()).send().await.unwrap();
    assert!(response.status().is_redirection());
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.host_str(), Some("web.example"));
    assert_eq!(location.path(), "/connected");
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["outcome"], "connected");
    assert_eq!(query["from"], "tributary");
    assert_eq!(query["connectionId"], body["id"].as_str().unwrap());

    // A rejected callback also goes only there, whatever the request says.
    let mut forged = callback.clone();
    forged.set_query(Some("state=forged&code=x&redirect=https://evil.example/"));
    let response = app.http.get(forged).send().await.unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("https://web.example/connected"),
        "{location}"
    );
    assert!(location.contains("outcome=error"));
    app.stop().await;
}

async fn responses_never_carry_token_material(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let connection = app.connect_fully("erin", "sandbox-cgm").await;
    let id = TestApp::id(&connection);
    let tokens = app.workflows.store().tokens(id).await.unwrap().unwrap();
    let secrets = [
        tokens.access_token.expose().clone(),
        tokens.refresh_token.unwrap().expose().clone(),
    ];
    let ops = app.token(Role::Ops, "ops");
    for path in [
        format!("/v1/connections/{id}"),
        format!("/v1/connections/{id}/events"),
        "/v1/users/erin/connections".to_owned(),
        format!("/v1/connections/{id}/revocations"),
        "/v1/ops/alerts".to_owned(),
    ] {
        let (status, body) = app.get(&path, &ops).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let text = body.to_string();
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{path} leaks a token");
        }
        assert!(
            !text.contains("access_token") && !text.contains("refresh_token"),
            "{path}"
        );
    }
    app.stop().await;
}
