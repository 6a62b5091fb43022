//! A hostile partner: a Dexcom-shaped OAuth server and data API that serves, on demand,
//! exactly what a test scripts — bodies that are not valid JSON, records with impossible
//! values or times, statuses and headers no honest partner sends, token responses that break
//! the rules. The sandbox is a partner that behaves; this one is the partner of the outside
//! tests and of a bad day, kept in the suite so every data or protocol defect found is tested
//! against a server, never only against what our own client sends.
//!
//! - `GET /authorize` consents at once: 302 to `redirect_uri?code=…&state=…`.
//! - `POST /token` answers both grants as [`TokenReply`] says.
//! - `POST /revoke` answers 200.
//! - `GET /v3/users/self/<endpoint>` answers the [`Reply`] scripted for `<endpoint>`
//!   (`egvs`, `events`, …), else `{"records":[]}`; every data request answers 401 while
//!   [`Script::data_unauthorized`] is set.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use poem::{
    Body, EndpointExt as _, Response, Route, get, handler,
    http::{StatusCode, header},
    listener::{Acceptor as _, Listener as _, TcpListener},
    post,
    web::{Data, Form, Path, Query},
};
use serde::Deserialize;

/// Bytes per slice of a body sent.
const SLICE: usize = 64 * 1024;

/// One scripted HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Raw bytes: a body need not be UTF-8. Shared, so serving a large body copies nothing.
    pub body: bytes::Bytes,
}

impl Reply {
    /// 200, `application/json`, this body.
    pub fn json(body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: bytes::Bytes::from(body.into()),
        }
    }

    /// `{"records":[<records joined by commas>]}`, each given as raw JSON text (or not JSON).
    pub fn records<I, R>(records: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: AsRef<[u8]>,
    {
        let mut body = b"{\"recordType\":\"list\",\"records\":[".to_vec();
        for (i, record) in records.into_iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(record.as_ref());
        }
        body.extend_from_slice(b"]}");
        Self::json(body)
    }

    /// A status with a header and an empty JSON object.
    pub fn status(status: u16, header: Option<(&str, &str)>) -> Self {
        let mut reply = Self::json("{}");
        reply.status = status;
        reply
            .headers
            .extend(header.map(|(k, v)| (k.to_owned(), v.to_owned())));
        reply
    }
}

/// What the token endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenReply {
    /// A bearer token living `expires_in` seconds, with a rotated refresh token.
    Bearer { expires_in: u64 },
    /// As `Bearer`, with another `token_type` (e.g. `mac`).
    TokenType(String),
    /// As `Bearer`, with an access token of this many bytes.
    HugeAccessToken(usize),
    /// As `Bearer`, without a refresh token.
    NoRefreshToken,
}

/// Everything the hostile partner does; change it at any time through [`Hostile::script`].
#[derive(Debug, Clone)]
pub struct Script {
    pub data: BTreeMap<String, Reply>,
    pub data_unauthorized: bool,
    pub token: TokenReply,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            data: BTreeMap::new(),
            data_unauthorized: false,
            token: TokenReply::Bearer { expires_in: 7200 },
        }
    }
}

/// What the hostile partner saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Data requests per endpoint.
    pub data: BTreeMap<String, u64>,
    /// Token grants answered (code and refresh).
    pub grants: u64,
    pub refreshes: u64,
}

#[derive(Default)]
struct State {
    script: Script,
    seen: Seen,
}

/// A running hostile partner on 127.0.0.1; stops when dropped.
pub struct Hostile {
    state: Arc<Mutex<State>>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Hostile {
    /// Starts one on a free port.
    pub async fn spawn() -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().map(SocketAddr::port))
            .unwrap_or_default();
        let app = Route::new()
            .at("/authorize", get(authorize))
            .at("/token", post(token))
            .at("/revoke", post(revoke))
            .at("/v3/users/self/:endpoint", get(data))
            .data(Arc::clone(&state));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    app,
                    async {
                        let _ = stopped.await;
                    },
                    None,
                )
                .await;
        });
        Ok(Self {
            state,
            base: format!("http://127.0.0.1:{port}"),
            _stop: stop,
        })
    }

    /// Changes the script.
    pub fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.lock().script);
    }

    /// What was requested so far.
    pub fn seen(&self) -> Seen {
        self.lock().seen.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    redirect_uri: String,
    state: String,
}

#[handler]
fn authorize(Query(q): Query<AuthorizeQuery>) -> Response {
    let mut to = match url::Url::parse(&q.redirect_uri) {
        Ok(url) => url,
        Err(_) => return Response::builder().status(StatusCode::BAD_REQUEST).finish(),
    };
    to.query_pairs_mut()
        .append_pair("code", "hostile-code")
        .append_pair("state", &q.state);
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, to.as_str())
        .finish()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
}

#[handler]
fn token(Data(state): Data<&Arc<Mutex<State>>>, Form(form): Form<TokenForm>) -> Response {
    let mut state = lock(state);
    state.seen.grants += 1;
    if form.grant_type == "refresh_token" {
        state.seen.refreshes += 1;
    }
    let n = state.seen.grants;
    let mut body = serde_json::json!({
        "access_token": format!("hostile-access-{n}"),
        "token_type": "Bearer",
        "expires_in": 7200,
        "refresh_token": format!("hostile-refresh-{n}"),
    });
    match &state.script.token {
        TokenReply::Bearer { expires_in } => body["expires_in"] = (*expires_in).into(),
        TokenReply::TokenType(kind) => body["token_type"] = kind.as_str().into(),
        TokenReply::HugeAccessToken(bytes) => body["access_token"] = "a".repeat(*bytes).into(),
        TokenReply::NoRefreshToken => {
            if let Some(object) = body.as_object_mut() {
                object.remove("refresh_token");
            }
        }
    }
    Response::builder()
        .content_type("application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body.to_string())
}

#[handler]
fn revoke() -> StatusCode {
    StatusCode::OK
}

#[handler]
fn data(Data(state): Data<&Arc<Mutex<State>>>, Path(endpoint): Path<String>) -> Response {
    let mut state = lock(state);
    *state.seen.data.entry(endpoint.clone()).or_default() += 1;
    if state.script.data_unauthorized {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .finish();
    }
    let reply = state
        .script
        .data
        .get(&endpoint)
        .cloned()
        .unwrap_or_else(|| Reply::json(r#"{"records":[]}"#));
    let mut response = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    // Sent in slices of the shared body, as a partner streams it: handing the server one large
    // buffer would have it copied whole into the connection's write buffer, memory that a test
    // or benchmark of our side would then count as ours.
    let body = reply.body;
    let length = body.len();
    let slices = (0..length)
        .step_by(SLICE)
        .map(move |at| Ok::<_, std::io::Error>(body.slice(at..(at + SLICE).min(length))));
    response
        .header(header::CONTENT_LENGTH, length)
        .body(Body::from_bytes_stream(futures::stream::iter(slices)))
}
