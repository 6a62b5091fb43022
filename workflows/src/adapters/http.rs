//! One rate-limited, authenticated `GET` returning JSON, with every failure classified into a
//! [`FetchError`] (rules in `error.rs`).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use engine::secret::SecretString;
use reqwest::{StatusCode, header};
use serde_json::Value;
use url::Url;

use super::{
    error::{FetchError, classify_status, classify_transport, content_type, describe},
    rate::RateLimiter,
};

/// Largest success body read: a 30-day window of 1-minute readings is ~25 MB.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Largest error body read (only to find an OAuth-style error code).
const MAX_ERROR_BODY_BYTES: usize = 16 * 1024;

/// The HTTP side of a `DataClient`.
pub(crate) struct Transport {
    /// Partner name, for logs.
    pub(crate) partner: String,
    /// No redirects (a redirect would resend the bearer token elsewhere), the configured
    /// timeout.
    pub(crate) http: reqwest::Client,
    pub(crate) timeout: Duration,
    /// Shared with every other client of this partner in the process.
    pub(crate) limiter: Arc<RateLimiter>,
}

impl Transport {
    /// `GET url` with the bearer token, after waiting for the partner's rate limiter. Returns
    /// the parsed JSON of a 200 response. `endpoint` names the request in logs and errors.
    pub(crate) async fn get_json(
        &self,
        token: &SecretString,
        endpoint: &'static str,
        url: Url,
    ) -> Result<Value, FetchError> {
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
                let error = classify_transport(error, self.timeout);
                tracing::debug!(partner = %self.partner, endpoint, code = error.code(), "data API request failed");
                return Err(error);
            }
        };
        let status = response.status();
        tracing::debug!(partner = %self.partner, endpoint, status = status.as_u16(), "data API response");
        let headers = response.headers().clone();
        if status != StatusCode::OK {
            let body = read_capped(&mut response, MAX_ERROR_BODY_BYTES, self.timeout)
                .await
                .map_or_else(|_| Vec::new(), |(body, _)| body);
            return Err(classify_status(status, &headers, &body, Utc::now()));
        }
        if let Some(kind) = content_type(&headers).filter(|ct| !is_json(ct)) {
            return Err(FetchError::transient(
                format!("{endpoint}: HTTP 200 with unexpected content type {kind}"),
                Some(200),
            ));
        }
        let (body, complete) = read_capped(&mut response, MAX_BODY_BYTES, self.timeout).await?;
        if !complete {
            return Err(FetchError::configuration(
                format!(
                    "{endpoint}: response larger than {} MiB; shorten max_window_days",
                    MAX_BODY_BYTES / (1024 * 1024)
                ),
                Some(200),
            ));
        }
        serde_json::from_slice(&body).map_err(|_| malformed(endpoint, status, &headers, body.len()))
    }
}

/// "egvs: malformed body: HTTP 200 (application/json, 123 bytes)".
fn malformed(
    endpoint: &str,
    status: StatusCode,
    headers: &header::HeaderMap,
    len: usize,
) -> FetchError {
    FetchError::transient(
        format!(
            "{endpoint}: malformed body: {}",
            describe(status, headers, len)
        ),
        Some(status.as_u16()),
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
