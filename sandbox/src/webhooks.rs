//! A webhook receiver for tests: a real HTTP server on 127.0.0.1 accepting `POST /hooks`,
//! verifying every delivery as the Standard Webhooks specification prescribes and failing on
//! demand, so tests can check what Tributary delivered, that it signed it, and that it retries.
//!
//! The verification is written here from the specification, independently of Tributary's
//! signer: a receiver sharing the sender's code would accept whatever mistake that code makes.
//! A delivery is verified when it has the three headers (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`), its timestamp is within 5 minutes of the receiver's clock (the
//! specification's replay tolerance), and one `v1,<base64>` entry of the space-separated
//! signature list is the HMAC-SHA256 of `{id}.{timestamp}.{body}` under the secret's key,
//! compared in constant time.
//!
//! Answers: 204 when accepted; 401 when verification fails (bad or missing signature,
//! missing headers, timestamp out of tolerance); a scripted status from
//! [`WebhookReceiver::fail_next`] or [`WebhookReceiver::fail_all`] otherwise.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac as _};
use poem::{
    Body, EndpointExt as _, Request, Response, Route, handler,
    http::StatusCode,
    listener::{Acceptor as _, Listener as _, TcpListener},
    post,
    web::Data,
};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::{oneshot, watch};

/// How far a delivery's timestamp may be from the receiver's clock, either way.
const TOLERANCE_SECS: i64 = 5 * 60;

/// One delivery attempt as the receiver saw and answered it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The `webhook-id` header (`""` if missing).
    pub id: String,
    /// The `webhook-timestamp` header (0 if missing or not an integer).
    pub timestamp: i64,
    /// The body (`Value::Null` if not JSON).
    pub body: Value,
    /// Whether the delivery passed verification: headers present, a matching `v1` signature,
    /// and a timestamp within tolerance (a stale message is not authentic for a receiver).
    pub signature_valid: bool,
    /// What the receiver answered.
    pub status: u16,
}

/// A running webhook receiver on 127.0.0.1; stops when dropped.
pub struct WebhookReceiver {
    shared: Arc<Shared>,
    url: String,
    _stop: oneshot::Sender<()>,
}

struct Shared {
    key: Vec<u8>,
    state: Mutex<State>,
    /// The number of accepted events, watched by [`WebhookReceiver::wait_for_events`]: a
    /// watch (unlike a bare notification) cannot miss an event accepted between a check and
    /// the wait that follows it.
    accepted: watch::Sender<usize>,
}

#[derive(Default)]
struct State {
    /// `Some(t)`: the clock is frozen at `t`; `None`: system time (or `clock`).
    now: Option<DateTime<Utc>>,
    /// A clock to follow instead of system time (a sender's test clock).
    clock: Option<Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>>,
    /// Scripted failures, consumed front first: (remaining deliveries, status).
    fail_next: VecDeque<(usize, u16)>,
    fail_all: Option<u16>,
    deliveries: Vec<Delivery>,
    events: Vec<Value>,
    accepted_ids: HashSet<String>,
}

impl WebhookReceiver {
    /// Starts a receiver verifying with `secret` (`whsec_<base64>`; the bare base64 is also
    /// accepted, as the specification's libraries do) on a free port.
    pub async fn start(secret: &str) -> std::io::Result<WebhookReceiver> {
        let key = decode_secret(secret).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a webhook secret is `whsec_` followed by base64",
            )
        })?;
        let shared = Arc::new(Shared {
            key,
            state: Mutex::new(State::default()),
            accepted: watch::Sender::new(0),
        });
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().map(SocketAddr::port))
            .unwrap_or_default();
        let app = Route::new()
            .at("/hooks", post(receive))
            .data(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    app,
                    async {
                        // Dropping the receiver drops the sender, which completes this too.
                        let _ = stopped.await;
                    },
                    Some(Duration::from_secs(1)),
                )
                .await;
        });
        Ok(WebhookReceiver {
            shared,
            url: format!("http://127.0.0.1:{port}/hooks"),
            _stop: stop,
        })
    }

    /// `http://127.0.0.1:<port>/hooks`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The next `count` deliveries with valid signatures answer `status` (e.g. 500, 503) and
    /// are recorded as failed attempts. Calls queue up: `fail_next(2, 500)` then
    /// `fail_next(1, 503)` fails three deliveries, 500, 500, 503. Scripted failures are used
    /// before [`WebhookReceiver::fail_all`] applies. A status that is not a valid HTTP status
    /// is answered as 500.
    pub fn fail_next(&self, count: usize, status: u16) {
        if count > 0 {
            self.lock().fail_next.push_back((count, status));
        }
    }

    /// Every delivery with a valid signature answers `status` until called with `None`.
    pub fn fail_all(&self, status: Option<u16>) {
        self.lock().fail_all = status;
    }

    /// Freezes the receiver's clock at `now` (to accept a message signed at a fixed time,
    /// such as the specification's test vector, or one from a sender on a test clock), or
    /// returns to system time with `None`.
    pub fn set_now(&self, now: Option<DateTime<Utc>>) {
        self.lock().now = now;
    }

    /// Follows `clock` (a sender's test clock, moved by the test) instead of system time.
    pub fn follow_clock(&self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) {
        self.lock().clock = Some(Arc::new(clock));
    }

    /// Every attempt, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.lock().deliveries.clone()
    }

    /// Accepted (2xx) deliveries with valid signatures, deduplicated by `webhook-id` (the
    /// first accepted is kept: redelivering an event must not make it happen twice), in
    /// acceptance order.
    pub fn events(&self) -> Vec<Value> {
        self.lock().events.clone()
    }

    /// Waits until at least `count` events were accepted or `timeout` passes, and returns
    /// the events accepted by then.
    pub async fn wait_for_events(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let mut accepted = self.shared.accepted.subscribe();
        // The sender lives in `shared`, held by `self`, so the wait fails only on timeout.
        let _ = tokio::time::timeout(timeout, accepted.wait_for(|n| *n >= count)).await;
        self.events()
    }

    /// Whether, for every `connectionId` of the accepted events, that connection's events
    /// arrived in the order of their `sequence` field: false as soon as one arrived after an
    /// event of the same connection with a higher sequence. Events without a `connectionId`
    /// or a numeric `sequence` take no part. Sequences are compared as JSON numbers (exact up
    /// to 2^53).
    pub fn in_order_per_connection(&self) -> bool {
        let state = self.lock();
        let mut last: HashMap<String, f64> = HashMap::new();
        for event in &state.events {
            let (Some(connection), Some(sequence)) = (
                event.get("connectionId"),
                event.get("sequence").and_then(Value::as_f64),
            ) else {
                continue;
            };
            // The JSON text is the key, so `"7"` and `7` stay distinct connections.
            match last.insert(connection.to_string(), sequence) {
                Some(previous) if sequence < previous => return false,
                _ => {}
            }
        }
        true
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }
}

impl Shared {
    /// Locks, recovering from poisoning: a panicking test thread must not take the receiver
    /// down for the rest of the test.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `whsec_<base64>` (or the bare base64) to key bytes; an empty key would let anyone sign.
fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.trim();
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    STANDARD.decode(encoded).ok().filter(|key| !key.is_empty())
}

/// Why a delivery failed verification (the answer's body, to make a failing test readable).
#[derive(Debug, Clone, Copy)]
enum Rejection {
    MissingHeaders,
    StaleTimestamp,
    BadSignature,
}

impl Rejection {
    fn text(self) -> &'static str {
        match self {
            Rejection::MissingHeaders => "missing or malformed webhook headers",
            Rejection::StaleTimestamp => "webhook-timestamp outside the 5-minute tolerance",
            Rejection::BadSignature => "no valid v1 signature",
        }
    }
}

/// The Standard Webhooks check of one delivery at `now` (Unix seconds).
fn verify(
    key: &[u8],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), Rejection> {
    let (Some(id), Some(timestamp_text), Some(signatures)) = (id, timestamp, signatures) else {
        return Err(Rejection::MissingHeaders);
    };
    let timestamp: i64 = timestamp_text
        .parse()
        .map_err(|_| Rejection::MissingHeaders)?;
    if now.abs_diff(timestamp) > TOLERANCE_SECS.unsigned_abs() {
        return Err(Rejection::StaleTimestamp);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    // The header's own text is signed, byte for byte, as the specification says.
    mac.update(format!("{id}.{timestamp_text}.").as_bytes());
    mac.update(body);
    // Several entries appear while a sender rotates keys; other versions (e.g. `v1a`,
    // asymmetric) are not ours to check and are skipped.
    let valid = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
    if valid {
        Ok(())
    } else {
        Err(Rejection::BadSignature)
    }
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

#[handler]
async fn receive(req: &Request, body: Body, Data(shared): Data<&Arc<Shared>>) -> Response {
    // A body that cannot be read is verified as empty, which fails unless it was empty.
    let body = body.into_bytes().await.unwrap_or_default();
    let id = header(req, "webhook-id");
    let timestamp = header(req, "webhook-timestamp");
    let mut state = shared.lock();
    let now = state
        .now
        .or_else(|| state.clock.as_ref().map(|clock| clock()))
        .unwrap_or_else(Utc::now)
        .timestamp();
    let verdict = verify(
        &shared.key,
        id,
        timestamp,
        header(req, "webhook-signature"),
        &body,
        now,
    );
    let (status, text) = match verdict {
        Err(rejection) => (StatusCode::UNAUTHORIZED, rejection.text()),
        Ok(()) => match scripted_failure(&mut state) {
            Some(status) => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "scripted failure",
            ),
            None => (StatusCode::NO_CONTENT, ""),
        },
    };
    let delivery = Delivery {
        id: id.unwrap_or_default().to_owned(),
        timestamp: timestamp.and_then(|t| t.parse().ok()).unwrap_or(0),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signature_valid: verdict.is_ok(),
        status: status.as_u16(),
    };
    if delivery.signature_valid
        && status.is_success()
        && state.accepted_ids.insert(delivery.id.clone())
    {
        state.events.push(delivery.body.clone());
        shared.accepted.send_replace(state.events.len());
    }
    state.deliveries.push(delivery);
    drop(state);
    Response::builder().status(status).body(text)
}

/// The status a verified delivery must answer instead of 204, consuming a scripted failure.
fn scripted_failure(state: &mut State) -> Option<u16> {
    if let Some((remaining, status)) = state.fail_next.front_mut() {
        let status = *status;
        *remaining -= 1;
        if *remaining == 0 {
            state.fail_next.pop_front();
        }
        return Some(status);
    }
    state.fail_all
}
