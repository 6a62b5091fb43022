//! [`FetchError`]: what went wrong talking to a partner's data API, decided once, here
//! (docs/transfers.md#data-api-errors). Callers match on the variant and never look at
//! statuses or bodies.
//!
//! | What came back                                                        | Variant         |
//! |----------------------------------------------------------------------|-----------------|
//! | 401 (any body); a 400 whose JSON `error` is `invalid_token`          | `Unauthorized`  |
//! | 429, with what its `Retry-After` said (delay, absent, unusable)      | `RateLimited`   |
//! | 5xx (outages, maintenance), 302/303/307, 1xx, 2xx other than 200     | `Transient`     |
//! | timeout, connection refused or reset, body cut off                   | `Transient`     |
//! | 200 with a non-JSON content type, a broken envelope, no `records` array | `Transient`  |
//! | a 400 without a well-formed JSON `error` (an outage's HTML page); other 4xx | `Transient` |
//! | 4xx with `server_error`, `temporarily_unavailable`, `invalid_cursor` | `Transient`     |
//! | 400 with any other well-formed `error` (`invalid_request`: our parameters) | `Configuration` |
//! | 403; `insufficient_scope` in any 4xx                                 | `Configuration` |
//! | 404, 405, 410, 414 (wrong endpoint or URL); 301, 308 (moved for good) | `Configuration` |
//! | refused locally: window too long, body over the cap, too many pages  | `Configuration` |
//!
//! `invalid_cursor` is transient because a new fetch of the window restarts paging without
//! one.
//!
//! No message ever contains a response body, a token or a record (health data): only statuses,
//! content types, sizes and our own words.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{
    StatusCode,
    header::{self, HeaderMap},
};

// One reader of OAuth-style error bodies and of `Retry-After`, shared with the OAuth client.
use crate::partner::{oauth_error_code, retry_after};

/// What a 429's `Retry-After` said. The caller decides what to do with it (caps a long wait,
/// counts a missing or unusable one: docs/transfers.md#rate-limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// Delta-seconds or an HTTP-date, as a delay (a date in the past is zero).
    Given(Duration),
    /// No `Retry-After` header.
    Missing,
    /// A header that is neither delta-seconds nor an HTTP-date.
    Unusable,
}

/// Why a data-API request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// 401: the access token expired or was revoked: the caller refreshes and retries once.
    /// Never evidence that the user revoked access; only the token endpoint's `invalid_grant`
    /// is.
    #[error("the partner rejected the access token")]
    Unauthorized,
    /// 429, with what its `Retry-After` said. Not capped here: the caller caps it.
    #[error("rate limited by the partner (429)")]
    RateLimited { retry_after: RetryAfter },
    /// 5xx, timeouts, connection errors, malformed or truncated bodies, unexpected content
    /// types, a 400 that is not about our request's shape: retry with backoff.
    #[error("partner data API temporarily unavailable: {reason}")]
    Transient {
        /// Status, content type, size or transport failure; never a body.
        reason: String,
        /// HTTP status, when a response arrived.
        status: Option<u16>,
    },
    /// 403, `insufficient_scope`, a 400 about parameters we built, 404 on a documented
    /// endpoint, or a request refused locally: our configuration or code is wrong. Alert
    /// operators; the user's connection is not at fault.
    #[error("partner data API request is misconfigured: {reason}")]
    Configuration {
        /// What is wrong; never a body.
        reason: String,
        /// HTTP status, when a response arrived.
        status: Option<u16>,
    },
}

impl FetchError {
    /// A stable, machine-readable code for journals, metrics and problem+json bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "data_unauthorized",
            Self::RateLimited { .. } => "data_rate_limited",
            Self::Transient { .. } => "data_transient",
            Self::Configuration { .. } => "data_configuration",
        }
    }

    /// True when the same request may succeed later unchanged (`RateLimited`, `Transient`).
    /// `Unauthorized` needs a token refresh first; `Configuration` will fail again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Transient { .. })
    }

    pub(crate) fn transient(reason: impl Into<String>, status: Option<u16>) -> Self {
        Self::Transient {
            reason: reason.into(),
            status,
        }
    }

    pub(crate) fn configuration(reason: impl Into<String>, status: Option<u16>) -> Self {
        Self::Configuration {
            reason: reason.into(),
            status,
        }
    }
}

/// A `DataClient` cannot be built from this configuration (reported at start-up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataClientError {
    #[error("partner {partner}: {field} {reason}")]
    InvalidLimit {
        partner: String,
        field: &'static str,
        reason: &'static str,
    },
    #[error("partner {partner}: api_base_url must be an absolute http(s) URL")]
    InvalidBaseUrl { partner: String },
    #[error("partner {partner}: cannot build the HTTP client: {reason}")]
    HttpClient { partner: String, reason: String },
}

/// Classifies a response whose status is not 200. `body` is at most a small prefix, read only
/// to find an OAuth-style error code; `now` is the base for an HTTP-date `Retry-After` when
/// the response has no `Date` header.
pub(crate) fn classify_status(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> FetchError {
    let code = status.as_u16();
    let described = || describe(status, headers, body.len());
    match code {
        401 => FetchError::Unauthorized,
        429 => FetchError::RateLimited {
            retry_after: match headers.get(header::RETRY_AFTER) {
                None => RetryAfter::Missing,
                Some(_) => {
                    retry_after(headers, now).map_or(RetryAfter::Unusable, RetryAfter::Given)
                }
            },
        },
        403 => FetchError::configuration(format!("{}: access forbidden", described()), Some(code)),
        404 | 405 | 410 | 414 => FetchError::configuration(
            format!("{}: the endpoint or URL is wrong", described()),
            Some(code),
        ),
        301 | 308 => FetchError::configuration(
            format!("{}: the endpoint moved; fix api_base_url", described()),
            Some(code),
        ),
        400..=499 => match oauth_error_code(body).as_deref() {
            Some("invalid_token") => FetchError::Unauthorized,
            Some("insufficient_scope") => FetchError::configuration(
                format!("{}: insufficient_scope", described()),
                Some(code),
            ),
            Some(err @ ("server_error" | "temporarily_unavailable" | "invalid_cursor")) => {
                FetchError::transient(format!("{}: {err}", described()), Some(code))
            }
            Some(err) if code == 400 => FetchError::configuration(
                format!(
                    "{}: the partner rejected our parameters ({err})",
                    described()
                ),
                Some(code),
            ),
            _ => FetchError::transient(described(), Some(code)),
        },
        _ => FetchError::transient(described(), Some(code)),
    }
}

/// Classifies a failure to get (all of) a response.
pub(crate) fn classify_transport(error: reqwest::Error, timeout: Duration) -> FetchError {
    let error = error.without_url();
    let reason = if error.is_timeout() {
        format!("timed out after {}s", timeout.as_secs())
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else if error.is_body() || error.is_decode() {
        "the response body was cut off".to_owned()
    } else {
        "request failed".to_owned()
    };
    FetchError::transient(reason, None)
}

/// "HTTP 400 (text/html, 1234 bytes)": never the body itself.
pub(crate) fn describe(status: StatusCode, headers: &HeaderMap, body_len: usize) -> String {
    format!(
        "HTTP {} ({}, {body_len} bytes)",
        status.as_u16(),
        content_type(headers).unwrap_or_else(|| "no content type".to_owned())
    )
}

/// The content type, truncated (it is partner-controlled and ends up in logs).
pub(crate) fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use reqwest::header::HeaderValue;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap()
    }

    fn classify(status: u16, headers: &[(&'static str, &'static str)], body: &str) -> FetchError {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_static(value));
        }
        classify_status(
            StatusCode::from_u16(status).unwrap(),
            &map,
            body.as_bytes(),
            now(),
        )
    }

    fn json(code: &str) -> String {
        format!(r#"{{"error":"{code}","error_description":"SECRET"}}"#)
    }

    #[test]
    fn the_table() {
        use FetchError::*;
        assert_eq!(classify(401, &[], ""), Unauthorized);
        assert_eq!(classify(400, &[], &json("invalid_token")), Unauthorized);
        let cases: [(u16, &str, &str); 16] = [
            (500, "", "data_transient"),
            (502, "<html>", "data_transient"),
            (503, "", "data_transient"),
            (408, "", "data_transient"),
            (409, "", "data_transient"),
            (400, "<html>Bad Request</html>", "data_transient"),
            (400, "", "data_transient"),
            (400, r#"{"error":42}"#, "data_transient"),
            (400, &json("temporarily_unavailable"), "data_transient"),
            (400, &json("invalid_cursor"), "data_transient"),
            (400, &json("invalid_request"), "data_configuration"),
            (403, &json("insufficient_scope"), "data_configuration"),
            (403, "", "data_configuration"),
            (404, "", "data_configuration"),
            (301, "", "data_configuration"),
            (302, "", "data_transient"),
        ];
        for (status, body, code) in cases {
            let e = classify(status, &[("content-type", "application/json")], body);
            assert_eq!(e.code(), code, "{status} {body}");
            assert!(!format!("{e} {e:?}").contains("SECRET"));
        }
        assert_eq!(
            classify(422, &[], &json("insufficient_scope")).code(),
            "data_configuration"
        );
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let given = |secs| FetchError::RateLimited {
            retry_after: RetryAfter::Given(Duration::from_secs(secs)),
        };
        let e = classify(429, &[("retry-after", "7")], "");
        assert_eq!(e, given(7));
        assert_eq!(
            classify(429, &[("retry-after", "315360000")], ""),
            given(315_360_000)
        );
        assert!(e.is_retryable());
        let e = classify(429, &[("retry-after", "Thu, 02 Jan 2025 03:05:05 GMT")], "");
        assert_eq!(e, given(60));
        let e = classify(
            429,
            &[
                ("retry-after", "Thu, 02 Jan 2025 03:05:05 GMT"),
                ("date", "Thu, 02 Jan 2025 03:04:35 GMT"),
            ],
            "",
        );
        assert_eq!(e, given(30));
        assert_eq!(
            classify(429, &[], ""),
            FetchError::RateLimited {
                retry_after: RetryAfter::Missing
            }
        );
        for garbage in ["soon", "-5", "1e9", "99999999999999999999999"] {
            assert_eq!(
                classify(429, &[("retry-after", garbage)], ""),
                FetchError::RateLimited {
                    retry_after: RetryAfter::Unusable
                },
                "{garbage}"
            );
        }
    }

    #[test]
    fn retryability() {
        assert!(!FetchError::Unauthorized.is_retryable());
        assert!(FetchError::transient("x", None).is_retryable());
        assert!(!FetchError::configuration("x", None).is_retryable());
    }
}
