//! One rate-limited, authenticated `GET`, with every failure classified into a [`FetchError`]
//! (rules in `error.rs`): a list response streamed record by record through the scanner
//! (`scan.rs`), or a small JSON document read whole (`dataRange`).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use engine::secret::SecretString;
use reqwest::{StatusCode, header};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use super::{
    budget::{ResponseBudget, WindowShare},
    error::{FetchError, classify_status, classify_transport, content_type, describe},
    rate::RateLimiter,
    scan::{Element, ListScanner},
};
use crate::records::{RecordKind, RecordSink, Unreadable};

/// Largest error body read (only to find an OAuth-style error code).
const MAX_ERROR_BODY_BYTES: usize = 16 * 1024;
/// Largest single record: a partner record is a few hundred bytes; one of a megabyte is not
/// data but an attack on memory, skipped unread.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Largest non-list body (`dataRange`).
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The HTTP side of a `DataClient`.
#[derive(Clone)]
pub(crate) struct Transport {
    /// Partner name, for logs.
    pub(crate) partner: String,
    /// No redirects (a redirect would resend the bearer token elsewhere), the configured
    /// timeout.
    pub(crate) http: reqwest::Client,
    pub(crate) timeout: Duration,
    /// Shared with every other client of this partner in the process.
    pub(crate) limiter: Arc<RateLimiter>,
    /// The partner's `max_response_bytes`.
    pub(crate) max_body: usize,
}

impl Transport {
    /// `GET url` with the bearer token, after waiting for the partner's rate limiter: the
    /// response when it is a 200 with a JSON content type, else its classified failure.
    async fn get_ok(
        &self,
        token: &SecretString,
        endpoint: &'static str,
        url: Url,
    ) -> Result<reqwest::Response, FetchError> {
        self.limiter.acquire().await;
        let sent = self
            .http
            .get(url)
            .bearer_auth(token.expose())
            .header(header::ACCEPT, "application/json")
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => {
                let answer = if error.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                };
                crate::runs::note(answer);
                engine::metrics::partner_response(self.partner.as_str(), "data", answer);
                let error = classify_transport(error, self.timeout);
                tracing::debug!(partner = %self.partner, endpoint, code = error.code(), "data API request failed");
                return Err(error);
            }
        };
        let status = response.status();
        crate::runs::note_status(status.as_u16());
        engine::metrics::partner_status(self.partner.as_str(), "data", status.as_u16());
        tracing::debug!(partner = %self.partner, endpoint, status = status.as_u16(), "data API response");
        if status != StatusCode::OK {
            let headers = response.headers().clone();
            let body = read_capped(&mut response, MAX_ERROR_BODY_BYTES, self.timeout)
                .await
                .map_or_else(|_| Vec::new(), |(body, _)| body);
            return Err(classify_status(status, &headers, &body, Utc::now()));
        }
        if let Some(kind) = content_type(response.headers()).filter(|ct| !is_json(ct)) {
            return Err(FetchError::transient(
                format!("{endpoint}: HTTP 200 with unexpected content type {kind}"),
                Some(200),
            ));
        }
        Ok(response)
    }

    /// A small JSON document (`dataRange`), read whole.
    pub(crate) async fn get_json(
        &self,
        token: &SecretString,
        endpoint: &'static str,
        url: Url,
    ) -> Result<Value, FetchError> {
        let mut response = self.get_ok(token, endpoint, url).await?;
        let headers = response.headers().clone();
        let (body, complete) = read_capped(&mut response, MAX_DOCUMENT_BYTES, self.timeout).await?;
        if !complete {
            return Err(too_large(endpoint, MAX_DOCUMENT_BYTES));
        }
        serde_json::from_slice(&body)
            .map_err(|_| broken(endpoint, "not valid JSON", &headers, body.len()))
    }

    /// A list response, streamed: each record goes to `sink` as soon as it is complete (or, when
    /// it cannot be read, why), so neither the body nor its parsed records are ever held whole.
    /// Returns the envelope's other members (`nextCursor`). Room for its records, from its
    /// `Content-Length` (the partner's cap when the length is not announced), is added to the
    /// window's `share` of the process's response budget before the body is read (`budget.rs`).
    pub(crate) async fn get_records(
        &self,
        token: &SecretString,
        endpoint: &'static str,
        url: Url,
        kind: RecordKind,
        (budget, share): (&ResponseBudget, &mut WindowShare),
        sink: &mut RecordSink<'_>,
    ) -> Result<Map<String, Value>, FetchError> {
        let mut response = self.get_ok(token, endpoint, url.clone()).await?;
        let want = self.announced(&response, endpoint)?;
        if !budget.try_reserve(want, share) && share.is_empty() {
            // The window's first response, and no room: wait without holding the response
            // (its timeout runs), then ask again. Later responses never wait.
            drop(response);
            budget.reserve(want, share).await;
            response = self.get_ok(token, endpoint, url).await?;
            let again = self.announced(&response, endpoint)?;
            if again > want {
                budget.try_reserve(again - want, share);
            }
        }
        let headers = response.headers().clone();
        let mut scanner = ListScanner::new(MAX_RECORD_BYTES);
        let mut read = 0usize;
        let mut on_element = |element: Element<'_>| sink(kind, parse_record(element));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| classify_transport(e, self.timeout))?
        {
            read += chunk.len();
            if read > self.max_body {
                return Err(too_large(endpoint, self.max_body));
            }
            scanner
                .feed(&chunk, &mut on_element)
                .map_err(|m| broken(endpoint, m.0, &headers, read))?;
        }
        scanner
            .finish()
            .map_err(|m| broken(endpoint, m.0, &headers, read))
    }
}

impl Transport {
    /// The body size a response announces (its partner's cap when it announces none); a
    /// response announcing more than the cap is refused before its body is read.
    fn announced(&self, response: &reqwest::Response, endpoint: &str) -> Result<usize, FetchError> {
        match response.content_length() {
            Some(n) if n > self.max_body as u64 => Err(too_large(endpoint, self.max_body)),
            Some(n) => Ok(usize::try_from(n).unwrap_or(self.max_body)),
            None => Ok(self.max_body),
        }
    }
}

/// One element of `records` as JSON, or why it cannot be: the parser's own words (a fixed
/// vocabulary: "number out of range", "lone leading surrogate in hex escape", "invalid unicode
/// code point"…, never the text), and a key that names the same bytes on every re-read.
fn parse_record(element: Element<'_>) -> Result<Value, Unreadable> {
    let digest = |bytes: &[u8]| hex::encode(&Sha256::digest(bytes)[..12]);
    match element {
        Element::Bytes(bytes) => serde_json::from_slice(bytes).map_err(|e| {
            let message = e.to_string();
            let reason = message.split(" at line ").next().unwrap_or_default();
            Unreadable {
                key: format!("unreadable:{}", digest(bytes)),
                reason: format!("record is not valid JSON: {reason}"),
            }
        }),
        Element::TooLarge { prefix, len } => Err(Unreadable {
            key: format!("too-large:{len}:{}", digest(prefix)),
            reason: format!("record larger than {} KiB", MAX_RECORD_BYTES / 1024),
        }),
    }
}

fn too_large(endpoint: &str, cap: usize) -> FetchError {
    FetchError::configuration(
        format!(
            "{endpoint}: response larger than the partner's max_response_bytes ({cap} bytes); \
             shorten max_window_days or raise the cap"
        ),
        Some(200),
    )
}

/// "egvs: malformed body: not a JSON object; HTTP 200 (application/json, 123 bytes)" (only
/// 200 responses are read as bodies).
fn broken(endpoint: &str, what: &str, headers: &header::HeaderMap, len: usize) -> FetchError {
    FetchError::transient(
        format!(
            "{endpoint}: malformed body: {what}; {}",
            describe(StatusCode::OK, headers, len)
        ),
        Some(200),
    )
}

/// `application/json`, or any `+json` type, parameters ignored.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// Reads at most `limit` bytes of the body; `complete` is false when more remained.
async fn read_capped(
    response: &mut reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<(Vec<u8>, bool), FetchError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| classify_transport(e, timeout))?
    {
        if body.len() + chunk.len() > limit {
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/problem+json",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in ["text/html; charset=utf-8", "text/plain", "application/xml"] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
