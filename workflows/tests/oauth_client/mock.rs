//! A scripted authorization server on 127.0.0.1:0 that records what it receives, and shared
//! fixtures.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, TimeZone as _, Utc};
use engine::secret::SecretString;
use poem::{Request, Response, Server, endpoint::make, http::StatusCode, listener::TcpAcceptor};
use workflows::partner::{ClientAuth, OAuthError, PartnerClient, PartnerConfig, TokenGrant};

pub(crate) const NAME: &str = "acme";
pub(crate) const CLIENT_ID: &str = "tributary client";
/// Characters that RFC 6749 §2.3.1 form-encodes before Basic encoding.
pub(crate) const CLIENT_SECRET: &str = "s3cr+t/=&x";

/// One scripted answer.
#[derive(Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: String,
    pub(crate) delay: Duration,
}

impl Reply {
    pub(crate) fn new(status: u16, content_type: &str, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![("content-type", content_type.to_owned())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
    pub(crate) fn json(status: u16, body: impl Into<String>) -> Self {
        Self::new(status, "application/json", body)
    }
    pub(crate) fn error(status: u16, code: &str) -> Self {
        Self::json(
            status,
            format!(r#"{{"error":"{code}","error_description":"nope"}}"#),
        )
    }
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What the mock received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) authorization: Option<String>,
    pub(crate) body: String,
    pub(crate) form: Vec<(String, String)>,
}

impl Seen {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) struct MockPartner {
    pub(crate) base: String,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockPartner {
    /// Serves `replies` in order on 127.0.0.1:0 (then 500s). Stops with the test's runtime.
    pub(crate) async fn start(replies: Vec<Reply>) -> Self {
        let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let recorded = seen.clone();
        let app = make(move |mut req: Request| {
            let replies = replies.clone();
            let recorded = recorded.clone();
            async move {
                let body = String::from_utf8(req.take_body().into_vec().await.unwrap()).unwrap();
                recorded.lock().unwrap().push(Seen {
                    path: req.uri().path().to_owned(),
                    query: req.uri().query().map(str::to_owned),
                    authorization: req.header("authorization").map(str::to_owned),
                    form: serde_urlencoded::from_str(&body).unwrap_or_default(),
                    body,
                });
                let reply = replies.lock().unwrap().pop_front();
                let reply = reply.unwrap_or_else(|| Reply::new(500, "text/plain", "unscripted"));
                tokio::time::sleep(reply.delay).await;
                let mut builder =
                    Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
                for (name, value) in reply.headers {
                    builder = builder.header(name, value);
                }
                builder.body(reply.body)
            }
        });
        let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Self { base, seen }
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn config(&self, client_auth: ClientAuth) -> PartnerConfig {
        config_for(&self.base, client_auth)
    }

    pub(crate) fn client(&self, client_auth: ClientAuth) -> PartnerClient {
        PartnerClient::new(NAME, self.config(client_auth)).unwrap()
    }
}

/// Built through serde so fields added later with defaults don't break the tests.
pub(crate) fn config_for(base: &str, client_auth: ClientAuth) -> PartnerConfig {
    serde_json::from_value(config_json(base, client_auth)).unwrap()
}

/// The configuration as an operator would write it, to edit before parsing.
pub(crate) fn config_json(base: &str, client_auth: ClientAuth) -> serde_json::Value {
    let auth = match client_auth {
        ClientAuth::ClientSecretBasic => "client_secret_basic",
        ClientAuth::ClientSecretPost => "client_secret_post",
    };
    serde_json::json!({
        "display_name": "ACME", "kind": "dexcom", "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET, "client_auth": auth,
        "authorize_url": format!("{base}/authorize?prompt=login"),
        "token_url": format!("{base}/token"), "revoke_url": format!("{base}/revoke"),
        "redirect_url": "https://tributary.example:8443/v1/oauth/acme/callback",
        "issuer": "https://auth.acme.example", "scopes": ["offline_access", "egv.read"],
        "api_base_url": format!("{base}/api"), "request_timeout_secs": 1,
    })
}

pub(crate) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap()
}

pub(crate) fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

pub(crate) fn token_body(access: &str, refresh: Option<&str>, extra: &str) -> String {
    let refresh = refresh
        .map(|r| format!(r#","refresh_token":"{r}""#))
        .unwrap_or_default();
    format!(
        r#"{{"access_token":"{access}","token_type":"Bearer","expires_in":7200{refresh}{extra}}}"#
    )
}

pub(crate) async fn exchange_with(reply: Reply) -> (Result<TokenGrant, OAuthError>, MockPartner) {
    let mock = MockPartner::start(vec![reply]).await;
    let result = mock
        .client(ClientAuth::ClientSecretBasic)
        .exchange_code(&secret("the-code"), &secret("v".repeat(43).as_str()), now())
        .await;
    (result, mock)
}

pub(crate) fn assert_transient(
    result: Result<impl std::fmt::Debug, OAuthError>,
    status: Option<u16>,
) -> OAuthError {
    let error = result.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(error.code(), "oauth_transient");
    let OAuthError::Transient { status: got, .. } = &error else {
        unreachable!()
    };
    assert_eq!(*got, status, "{error:?}");
    error
}
