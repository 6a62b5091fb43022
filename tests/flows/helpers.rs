//! `TestApp`: one service per test, on port 0, with typed request helpers.

use std::time::Duration;

use api::auth::{JwtKeys, Role};
use base64::Engine as _;
use engine::{ids::ConnectionId, testing::TestDb};
use rand::RngCore;
use reqwest::{StatusCode, redirect::Policy};
use sandbox::Sandbox;
use serde_json::Value;
use tokio::sync::oneshot;
use tributary::{config::Config, serve::Application};
use url::Url;
use workflows::Workflows;

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub sandbox: Sandbox,
    pub workflows: Workflows,
    pub jwt: JwtKeys,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.public_url = None;
    config.database.url = db.url.clone();
    // Development mode, as a developer runs it, because the tests use the sandbox (which a
    // production-like configuration refuses); the secrets are explicit, so none is generated.
    config.dev_secrets = true;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    config.auth.jwt_secret = Some(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(secret)
            .into(),
    );
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    config.crypto.active_key_id = Some("k1".to_owned());
    config.crypto.keys.insert(
        "k1".to_owned(),
        base64::engine::general_purpose::STANDARD.encode(key).into(),
    );
    // The development mail directory: beside an SQLite file (in its temporary directory), but
    // for PostgreSQL it would be the working directory, the repository: a directory of its own.
    if !db.url.starts_with("sqlite:") {
        config.email.directory =
            Some(std::env::temp_dir().join(format!("tributary-mail-{}", uuid::Uuid::new_v4())));
    }
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,sqlx=warn")
            .try_init();
    }
    config
}

impl TestApp {
    pub async fn spawn(db: &TestDb) -> Self {
        Self::spawn_with(test_config(db)).await
    }

    pub async fn spawn_with(config: Config) -> Self {
        Self::from_app(
            Application::build(config)
                .await
                .expect("application builds"),
        )
    }

    pub fn from_app(app: Application) -> Self {
        let base = app.base_url();
        let sandbox = app.sandbox().expect("sandbox enabled").clone();
        let workflows = app.workflows().clone();
        let jwt = app.jwt().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            sandbox,
            workflows,
            jwt,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Stops the server and waits for it (and its workers) to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    pub fn token(&self, role: Role, subject: &str) -> String {
        self.jwt.mint(role, subject, Duration::from_secs(3600))
    }

    pub fn user_token(&self, user: &str) -> String {
        self.token(Role::User, user)
    }

    pub async fn post_json(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    pub async fn post(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    /// `POST /v1/users/{user}/connections` as that user: (status, body).
    pub async fn connect(&self, user: &str, partner: &str) -> (StatusCode, Value) {
        self.post_json(
            &format!("/v1/users/{user}/connections"),
            &self.user_token(user),
            serde_json::json!({ "partner": partner }),
        )
        .await
    }

    /// At the sandbox's consent page: allow as `partner_user`, or deny. Returns the URL the
    /// partner redirects the browser to (our callback).
    pub async fn consent(&self, authorize_url: &str, partner_user: &str, allow: bool) -> Url {
        let url = Url::parse(authorize_url).unwrap();
        let page = self.http.get(url.clone()).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "consent page shown");
        let consent_path = if url.path().ends_with("/v2/oauth2/login") {
            url.path().replace("/v2/oauth2/login", "/v2/oauth2/consent")
        } else {
            url.path().replace("/oauth/authorize", "/oauth/consent")
        };
        let mut form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        form.push(("user".to_owned(), partner_user.to_owned()));
        form.push((
            "decision".to_owned(),
            if allow { "allow" } else { "deny" }.to_owned(),
        ));
        let mut consent_url = url.clone();
        consent_url.set_path(&consent_path);
        consent_url.set_query(None);
        let response = self
            .http
            .post(consent_url)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_redirection(),
            "consent redirects: {}",
            response.status()
        );
        Url::parse(response.headers()["location"].to_str().unwrap()).unwrap()
    }

    /// The browser following the partner's redirect to our callback.
    pub async fn follow_callback(&self, callback: &Url) -> (StatusCode, String) {
        let response = self.http.get(callback.clone()).send().await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    /// Connect `user` to `partner` all the way to `active`; returns the connection JSON.
    pub async fn connect_fully(&self, user: &str, partner: &str) -> Value {
        let (status, body) = self.connect(user, partner).await;
        assert!(status.is_success(), "{status} {body}");
        let authorize_url = body["authorizeUrl"].as_str().unwrap().to_owned();
        let callback = self
            .consent(&authorize_url, &format!("{user}-at-partner"), true)
            .await;
        let (status, page) = self.follow_callback(&callback).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        self.connection(body["id"].as_str().unwrap()).await
    }

    pub async fn connection(&self, id: &str) -> Value {
        let (status, body) = self
            .get(
                &format!("/v1/connections/{id}"),
                &self.token(Role::Ops, "ops"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        let (status, body) = self
            .get(
                &format!("/v1/connections/{id}/events"),
                &self.token(Role::Ops, "ops"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array()
            .cloned()
            .unwrap_or_else(|| body["items"].as_array().cloned().unwrap_or_default())
    }

    pub fn id(body: &Value) -> ConnectionId {
        body["id"].as_str().unwrap().parse().unwrap()
    }
}

/// `tributary …` as a process (without an ops token from the environment): whether it
/// exited 0, its stdout and its stderr.
pub async fn cli(args: Vec<String>) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(&args)
        .env_remove("TRIBUTARY_OPS_TOKEN")
        .output()
        .await
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Polls `check` until it holds (background work: workers, the maintenance loop) or 30 s pass.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for: {what}");
}
