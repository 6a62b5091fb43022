//! A sandbox on an ephemeral port with typed request helpers.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use poem::{Route, Server, listener::TcpAcceptor};
use reqwest::{Response, redirect::Policy};
use sandbox::{
    DEFAULT_CGM_CLIENT_ID, DEFAULT_CGM_CLIENT_SECRET, DEFAULT_PUMP_CLIENT_ID,
    DEFAULT_PUMP_CLIENT_SECRET, Flavor, Sandbox, SandboxConfig, s256,
};
use serde_json::Value;
use tokio::sync::oneshot;
use url::Url;

/// Where the test pretends Tributary lives; redirects are never followed.
pub const APP: &str = "http://app.test";
/// A fixed PKCE verifier (43 chars).
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// The frozen sandbox clock at start: mid-February 2026, six weeks of history.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 10, 12, 0, 0).unwrap()
}

pub fn redirect_uri(flavor: Flavor) -> String {
    match flavor {
        Flavor::Cgm => format!("{APP}/v1/oauth/sandbox-cgm/callback"),
        Flavor::Pump => format!("{APP}/v1/oauth/sandbox-pump/callback"),
    }
}

pub struct TestApp {
    pub sandbox: Sandbox,
    /// `http://127.0.0.1:<port>/sandbox`
    pub base: String,
    /// Never follows redirects, so tests can read `Location`.
    pub http: reqwest::Client,
    _shutdown: oneshot::Sender<()>,
}

/// Tokens from a token response.
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut SandboxConfig)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}/sandbox");
        let mut config = SandboxConfig::new(Url::parse(&base).unwrap(), &Url::parse(APP).unwrap());
        configure(&mut config);
        let sandbox = Sandbox::new(config);
        sandbox.set_now(Some(t0()));
        let app = Route::new().nest("/sandbox", sandbox.endpoint());
        let (tx, rx) = oneshot::channel::<()>();
        let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
        tokio::spawn(async move {
            Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    app,
                    async {
                        rx.await.ok();
                    },
                    None,
                )
                .await
                .unwrap();
        });
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        TestApp {
            sandbox,
            base,
            http,
            _shutdown: tx,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn authorize_path(flavor: Flavor) -> &'static str {
        match flavor {
            Flavor::Cgm => "/cgm/v2/oauth2/login",
            Flavor::Pump => "/pump/oauth/authorize",
        }
    }

    pub fn oauth_path(flavor: Flavor, what: &str) -> String {
        match flavor {
            Flavor::Cgm => format!("/cgm/v2/oauth2/{what}"),
            Flavor::Pump => format!("/pump/oauth/{what}"),
        }
    }

    /// A valid authorization request's parameters.
    pub fn auth_params(flavor: Flavor, state: &str) -> Vec<(String, String)> {
        let client_id = match flavor {
            Flavor::Cgm => DEFAULT_CGM_CLIENT_ID,
            Flavor::Pump => DEFAULT_PUMP_CLIENT_ID,
        };
        [
            ("client_id", client_id.to_owned()),
            ("redirect_uri", redirect_uri(flavor)),
            ("response_type", "code".into()),
            ("state", state.into()),
            ("code_challenge", s256(VERIFIER)),
            ("code_challenge_method", "S256".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub async fn authorize(&self, flavor: Flavor, params: &[(String, String)]) -> Response {
        self.http
            .get(self.url(Self::authorize_path(flavor)))
            .query(params)
            .send()
            .await
            .unwrap()
    }

    pub async fn consent(&self, flavor: Flavor, form: &[(String, String)]) -> Response {
        self.http
            .post(self.url(&Self::oauth_path(flavor, "consent")))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Consents as `user` and returns the code from the redirect.
    pub async fn obtain_code(&self, flavor: Flavor, user: &str) -> String {
        let mut form = Self::auth_params(flavor, "st");
        form.push(("user".into(), user.into()));
        form.push(("decision".into(), "allow".into()));
        let resp = self.consent(flavor, &form).await;
        assert_eq!(resp.status(), 302);
        location_params(&resp)["code"].clone()
    }

    /// POSTs a form to the token (or revoke) endpoint with the client's registered auth.
    pub async fn post_authenticated(
        &self,
        flavor: Flavor,
        what: &str,
        form: &[(&str, &str)],
    ) -> Response {
        let req = self.http.post(self.url(&Self::oauth_path(flavor, what)));
        let req = match flavor {
            Flavor::Cgm => {
                let mut form = form.to_vec();
                form.push(("client_id", DEFAULT_CGM_CLIENT_ID));
                form.push(("client_secret", DEFAULT_CGM_CLIENT_SECRET));
                req.form(&form)
            }
            Flavor::Pump => req
                .basic_auth(DEFAULT_PUMP_CLIENT_ID, Some(DEFAULT_PUMP_CLIENT_SECRET))
                .form(form),
        };
        req.send().await.unwrap()
    }

    pub async fn exchange(&self, flavor: Flavor, code: &str) -> Response {
        let uri = redirect_uri(flavor);
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", uri.as_str()),
            ("code_verifier", VERIFIER),
        ];
        self.post_authenticated(flavor, "token", &form).await
    }

    pub async fn refresh(&self, flavor: Flavor, refresh_token: &str) -> Response {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        self.post_authenticated(flavor, "token", &form).await
    }

    /// Consent, exchange, and return the tokens.
    pub async fn connect(&self, flavor: Flavor, user: &str) -> Tokens {
        let code = self.obtain_code(flavor, user).await;
        let resp = self.exchange(flavor, &code).await;
        assert_eq!(resp.status(), 200);
        tokens(resp.json().await.unwrap())
    }

    pub async fn get_data(&self, path: &str, token: &str, query: &[(&str, &str)]) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .query(query)
            .send()
            .await
            .unwrap()
    }

    pub async fn put_faults(&self, faults: Value) -> Response {
        self.http
            .put(self.url("/admin/faults"))
            .json(&faults)
            .send()
            .await
            .unwrap()
    }
}

pub fn tokens(body: Value) -> Tokens {
    Tokens {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

/// The query parameters of a redirect's `Location`.
pub fn location_params(resp: &Response) -> HashMap<String, String> {
    let location = resp.headers()["location"].to_str().unwrap();
    Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// The `Location` without its query.
pub fn location_base(resp: &Response) -> String {
    let mut url = Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    url.set_query(None);
    url.to_string()
}

pub async fn error_code(resp: Response) -> String {
    let body: Value = resp.json().await.unwrap();
    body["error"].as_str().unwrap().to_owned()
}

/// Dexcom date format.
pub fn dexcom(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}
