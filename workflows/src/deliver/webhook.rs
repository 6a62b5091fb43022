//! Webhooks: a lifecycle event POSTed as JSON to a configured endpoint, signed per the
//! Standard Webhooks convention (`signature.rs`; docs/notifications.md#webhooks).

use std::time::Duration;

use engine::store::OutboxMessage;
use url::Url;

use super::signature::{WebhookSecret, headers};

/// A configured endpoint.
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    /// The name outbox messages are addressed to (`[webhooks.<name>]`).
    pub name: String,
    pub url: Url,
    pub secret: WebhookSecret,
}

/// The body of a message: its queued event, with its stable id and its per-connection order.
/// Built the same way on every attempt, so a retry is byte-for-byte the same event.
pub fn body(message: &OutboxMessage) -> Vec<u8> {
    let mut event = message.payload.clone();
    if let Some(object) = event.as_object_mut() {
        object.insert("id".into(), message.id.clone().into());
        object.insert("sequence".into(), message.seq.into());
    }
    serde_json::to_vec(&event).expect("a JSON value serializes")
}

/// Sends one event. `Ok`: the endpoint answered 2xx (its status); `Err`: why not.
pub async fn post(
    client: &reqwest::Client,
    endpoint: &WebhookEndpoint,
    message: &OutboxMessage,
    timestamp: i64,
    timeout: Duration,
) -> Result<String, String> {
    let body = body(message);
    let mut request = client
        .post(endpoint.url.clone())
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers(&endpoint.secret, &message.id, timestamp, &body) {
        request = request.header(name, value);
    }
    match request.body(body).send().await {
        Ok(response) if response.status().is_success() => {
            Ok(format!("HTTP {}", response.status().as_u16()))
        }
        Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
        // reqwest's errors name the URL, which may carry a credential in its query: say what
        // failed, not where.
        Err(err) if err.is_timeout() => Err("timed out".to_owned()),
        Err(err) if err.is_connect() => Err("connection failed".to_owned()),
        Err(_) => Err("request failed".to_owned()),
    }
}
