//! `TestApi`: one fresh database, workflows and API per test, with typed request helpers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use api::{
    ApiSettings,
    auth::{JwtKeys, Role},
    problem::PROBLEM_CONTENT_TYPE,
};
use engine::testing::TestDb;
use poem::{
    EndpointExt as _, Request, Response, Server,
    endpoint::{BoxEndpoint, make},
    http::{HeaderMap, Method, StatusCode},
    listener::TcpAcceptor,
    test::TestClient,
};
use serde_json::Value;
use url::Url;
use workflows::{Partners, Settings, Workflows, partner::PartnerConfig};

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";
pub const CGM: &str = "sandbox-cgm";
pub const PUMP: &str = "sandbox-pump";
/// A partner whose endpoints refuse connections (port 9, discard): exchanges fail transiently.
pub const DOWN: &str = "down-cgm";
/// The public base URL the API believes it has.
pub const BASE: &str = "https://tributary.example";

/// What a response looked like.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem with `status` and `code`; returns the problem.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.content_type(), PROBLEM_CONTENT_TYPE, "{}", self.text);
        let problem = self.json();
        assert_eq!(problem["code"], code, "{problem}");
        assert_eq!(problem["status"], status, "{problem}");
        assert_eq!(problem["type"], format!("urn:tributary:problem:{code}"));
        assert!(problem["title"].is_string() && problem["detail"].is_string());
        problem
    }
}

/// A fake authorization server: every token request gets fresh, recognisable tokens.
pub struct FakePartner {
    pub base: String,
    pub issued: Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakePartner {
    pub async fn start() -> Self {
        let issued = Arc::new(std::sync::Mutex::new(Vec::new()));
        let counter = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let record = issued.clone();
        let app = make(move |req: Request| {
            let record = record.clone();
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if req.uri().path() != "/token" {
                    return Response::builder().status(StatusCode::OK).body("");
                }
                let access = format!("AT-fake-{n}-c0ffee");
                let refresh = format!("RT-fake-{n}-deadbeef");
                record
                    .lock()
                    .unwrap()
                    .extend([access.clone(), refresh.clone()]);
                Response::builder()
                    .content_type("application/json")
                    .body(format!(
                        r#"{{"access_token":"{access}","refresh_token":"{refresh}","token_type":"Bearer","expires_in":3600,"scope":"offline_access"}}"#
                    ))
            }
        });
        let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Self { base, issued }
    }

    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }
}

fn partner_config(
    name: &str,
    kind: &str,
    partner_base: &str,
    issuer: Option<&str>,
) -> PartnerConfig {
    serde_json::from_value(serde_json::json!({
        "display_name": format!("Test {name}"), "kind": kind,
        "client_id": "tributary", "client_secret": "client-secret",
        "authorize_url": format!("{partner_base}/authorize"),
        "token_url": format!("{partner_base}/token"),
        "revoke_url": format!("{partner_base}/revoke"),
        "redirect_url": format!("{BASE}/v1/oauth/{name}/callback"),
        "issuer": issuer, "require_issuer": issuer.is_some(),
        "scopes": ["offline_access"],
        "api_base_url": format!("{partner_base}/api"), "request_timeout_secs": 2,
    }))
    .unwrap()
}

pub struct TestApi {
    pub client: TestClient<BoxEndpoint<'static, Response>>,
    pub workflows: Workflows,
    pub jwt: JwtKeys,
    pub partner: FakePartner,
    _db: TestDb,
}

impl TestApi {
    pub async fn spawn() -> Self {
        Self::spawn_with(None, 4096).await
    }

    pub async fn spawn_with(return_url: Option<Url>, max_body_bytes: usize) -> Self {
        let db = TestDb::sqlite().await;
        let store = db.store().await;
        let partner = FakePartner::start().await;
        let partners = Partners::from_config([
            (
                CGM.to_owned(),
                partner_config(CGM, "dexcom", &partner.base, None),
            ),
            (
                PUMP.to_owned(),
                partner_config(PUMP, "pump", &partner.base, Some("https://pump.example")),
            ),
            (
                DOWN.to_owned(),
                partner_config(DOWN, "dexcom", "http://127.0.0.1:9", None),
            ),
        ])
        .map_err(|(name, err)| format!("{name}: {err}"))
        .unwrap();
        let workflows = Workflows::new(store, partners, Settings::default());
        let jwt = JwtKeys::new(SECRET, "tributary", "tributary");
        let routes = api::routes(
            workflows.clone(),
            jwt.clone(),
            ApiSettings {
                return_url,
                max_body_bytes,
                server_url: BASE.to_owned(),
            },
        );
        Self {
            client: TestClient::new(routes.boxed()),
            workflows,
            jwt,
            partner,
            _db: db,
        }
    }

    pub fn token(&self, role: Role, subject: &str) -> String {
        self.jwt.mint(role, subject, Duration::from_secs(600))
    }

    pub fn user(&self, user: &str) -> String {
        self.token(Role::User, user)
    }

    pub fn ops(&self) -> String {
        self.token(Role::Ops, "operator")
    }

    /// Any request; `token` becomes `Authorization: Bearer …`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> Reply {
        let mut request = self.client.request(method, path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some((content_type, body)) = body {
            request = request.content_type(content_type).body(body.to_owned());
        }
        read(request.send().await.0).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str) -> Reply {
        self.send(Method::POST, path, Some(token), None).await
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &str) -> Reply {
        self.send(
            Method::POST,
            path,
            Some(token),
            Some(("application/json", body)),
        )
        .await
    }

    /// `POST /v1/users/{user}/connections` as that user.
    pub async fn connect(&self, user: &str, partner: &str) -> Reply {
        self.post_json(
            &format!("/v1/users/{user}/connections"),
            &self.user(user),
            &format!(r#"{{"partner":"{partner}"}}"#),
        )
        .await
    }

    /// Connects and returns (connection id, the `state` in the authorize URL).
    pub async fn start(&self, user: &str, partner: &str) -> (String, String) {
        let reply = self.connect(user, partner).await;
        assert!(reply.status.is_success(), "{}", reply.text);
        let body = reply.json();
        (body["id"].as_str().unwrap().to_owned(), state_of(&body))
    }

    /// The browser arriving at the callback with `query`.
    pub async fn callback(&self, partner: &str, query: &str) -> Reply {
        self.send(
            Method::GET,
            &format!("/v1/oauth/{partner}/callback?{query}"),
            None,
            None,
        )
        .await
    }

    /// Connects `user` all the way to `active` through the fake partner.
    pub async fn connect_fully(&self, user: &str) -> String {
        let (id, state) = self.start(user, CGM).await;
        let page = self
            .callback(CGM, &format!("state={state}&code=the-code"))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        assert!(
            page.text.contains("data-outcome=\"connected\""),
            "{}",
            page.text
        );
        id
    }
}

/// The `state` parameter of an authorization's `authorizeUrl`.
pub fn state_of(body: &Value) -> String {
    let url = Url::parse(body["authorizeUrl"].as_str().unwrap()).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

async fn read(response: Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.into_body().into_string().await.unwrap();
    Reply {
        status,
        headers,
        text,
    }
}
