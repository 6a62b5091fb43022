//! Admin endpoints, the index, and the standalone `serve` helper.

use sandbox::{Flavor, Sandbox, SandboxConfig};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use url::Url;

use crate::helpers::{TestApp, t0};

#[tokio::test]
async fn clock_can_be_frozen_and_released() {
    let app = TestApp::spawn().await;
    let got: Value = app
        .http
        .get(app.url("/admin/clock"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["now"], json!(t0()));
    assert_eq!(got["frozen"], true);
    let put = app
        .http
        .put(app.url("/admin/clock"))
        .json(&json!({"now": "2026-03-01T08:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(app.sandbox.now().to_rfc3339(), "2026-03-01T08:00:00+00:00");
    let released: Value = app
        .http
        .put(app.url("/admin/clock"))
        .json(&json!({"now": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(released["frozen"], false);
    assert!(!app.sandbox.clock_frozen());
    let bad = app
        .http
        .put(app.url("/admin/clock"))
        .json(&json!({"now": "soon"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn stats_endpoint_reports_counters() {
    let app = TestApp::spawn().await;
    let t = app.connect(Flavor::Pump, "pat").await;
    app.refresh(Flavor::Pump, &t.refresh).await;
    let stats: Value = app
        .http
        .get(app.url("/admin/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["pump"]["authorizations"], 1);
    assert_eq!(stats["pump"]["code_exchanges"], 1);
    assert_eq!(stats["pump"]["rotations"], 1);
    assert_eq!(stats["pump"]["live_grants"], 1);
    assert_eq!(stats["cgm"]["live_grants"], 0);
    assert_eq!(serde_json::to_value(app.sandbox.stats()).unwrap(), stats);
}

#[tokio::test]
async fn index_lists_partner_urls_without_secrets() {
    let app = TestApp::spawn().await;
    let text = app
        .http
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains(sandbox::DEFAULT_CGM_CLIENT_SECRET));
    let index: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        index["cgm"]["token"],
        format!("{}/cgm/v2/oauth2/token", app.base)
    );
    assert_eq!(index["pump"]["issuer"], format!("{}/pump", app.base));
    assert_eq!(index["pump"]["api_base"], format!("{}/pump", app.base));
    assert_eq!(index["clients"][1]["auth_method"], "basic");
}

#[tokio::test]
async fn standalone_serve_and_graceful_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = SandboxConfig {
        public_base_url: Url::parse(&base).unwrap(),
        ..SandboxConfig::default()
    };
    let sb = Sandbox::new(config);
    assert_eq!(
        sb.urls(Flavor::Pump).issuer.unwrap(),
        format!("{base}/pump")
    );
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(sandbox::serve(sb, listener, async {
        rx.await.ok();
    }));
    let stats = reqwest::get(format!("{base}/admin/stats")).await.unwrap();
    assert_eq!(stats.status(), 200);
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
