//! Turning what came back from a partner (a response, or a transport failure) into an
//! [`OAuthError`]. This is the one place that decides retryable versus permanent; the rules and
//! their reasons are in docs/oauth.md#token-endpoint-errors.
//!
//! The rules, in order:
//! 1. Transport failure (timeout, refused, reset, TLS) → `Transient`.
//! 2. 5xx or 429 → `Transient`, whatever the body says (with `Retry-After`).
//! 3. A JSON object whose `error` is a well-formed OAuth code ([`oauth_error_code`]):
//!    `invalid_grant` → `InvalidGrant`; `server_error`, `temporarily_unavailable` → `Transient`;
//!    any other code → `Configuration`. This also covers non-conformant servers that answer an
//!    error with 200.
//! 4. Anything else (HTML, empty, truncated JSON, a redirect, a 400 or 401 without an OAuth error
//!    body) → `Transient`: only a well-formed `invalid_grant` may ever revoke a connection.

use std::{error::Error as _, time::Duration};

use chrono::{DateTime, NaiveDateTime, Utc};
use oauth2::{
    HttpResponse,
    http::{HeaderMap, StatusCode, header},
};

use super::{error::OAuthError, error_code::oauth_error_code};

/// Classify a response that was not a usable success. `now` is the fallback base for an
/// HTTP-date `Retry-After` when the response has no `Date` header.
pub(crate) fn classify_response(response: &HttpResponse, now: DateTime<Utc>) -> OAuthError {
    let status = response.status();
    let retry_after = retry_after(response.headers(), now);
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return OAuthError::Transient {
            reason: format!("HTTP {}", status.as_u16()),
            status: Some(status.as_u16()),
            retry_after,
        };
    }
    match oauth_error_code(response.body()) {
        Some(code) => match code.as_str() {
            "invalid_grant" => OAuthError::InvalidGrant,
            "server_error" | "temporarily_unavailable" => OAuthError::Transient {
                reason: format!("HTTP {} with OAuth error {code}", status.as_u16()),
                status: Some(status.as_u16()),
                retry_after,
            },
            _ => OAuthError::Configuration { code },
        },
        None => OAuthError::Transient {
            reason: describe_unexpected(status, response.headers(), response.body().len()),
            status: Some(status.as_u16()),
            retry_after,
        },
    }
}

/// Classify a failure to get any response at all.
pub(crate) fn classify_transport(error: reqwest::Error, timeout: Duration) -> OAuthError {
    let error = error.without_url();
    let reason = if error.is_timeout() {
        format!("timed out after {}s", timeout.as_secs())
    } else if error.is_connect() {
        format!("could not connect: {}", error_chain(&error))
    } else {
        format!("request failed: {}", error_chain(&error))
    };
    OAuthError::transient(reason)
}

/// "HTTP 400, text/html body of 1234 bytes" — never the body itself (it could echo a token).
fn describe_unexpected(status: StatusCode, headers: &HeaderMap, body_len: usize) -> String {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect::<String>())
        .unwrap_or_else(|| "no content type".to_owned());
    let what = if status.is_success() {
        "malformed token response"
    } else {
        "response without an OAuth error"
    };
    format!(
        "HTTP {}: {what} ({content_type}, {body_len} bytes)",
        status.as_u16()
    )
}

/// `Retry-After` as a delay: delta-seconds, or an HTTP-date measured from the response's own
/// `Date` header (immune to clock skew) or else from `now`. A date in the past means "now".
pub(crate) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = parse_http_date(value)?;
    let base = headers
        .get(header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .unwrap_or(now);
    Some((at - base).to_std().unwrap_or(Duration::ZERO))
}

/// HTTP-date (RFC 9110 §5.6.7): IMF-fixdate, and the obsolete RFC 850 and asctime forms that
/// recipients must still accept.
fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(date) = DateTime::parse_from_rfc2822(value) {
        return Some(date.with_timezone(&Utc));
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|naive| naive.and_utc())
}

fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use oauth2::http::{HeaderValue, Response};

    use super::*;
    use crate::partner::MAX_OAUTH_ERROR_CODE_LEN;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        let mut builder = Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(body.as_bytes().to_vec()).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap()
    }

    #[test]
    fn codes_map_to_variants() {
        let json = |code: &str| format!(r#"{{"error":"{code}","error_description":"x"}}"#);
        let r = response(400, &[], &json("invalid_grant"));
        assert_eq!(classify_response(&r, now()), OAuthError::InvalidGrant);
        for code in ["invalid_client", "invalid_scope", "some_extension"] {
            let r = response(400, &[], &json(code));
            assert_eq!(
                classify_response(&r, now()),
                OAuthError::Configuration { code: code.into() }
            );
        }
        let r = response(400, &[], &json("temporarily_unavailable"));
        assert!(classify_response(&r, now()).is_retryable());
        // A 503 saying invalid_grant is still an outage.
        let r = response(503, &[], &json("invalid_grant"));
        assert!(classify_response(&r, now()).is_retryable());
        // Non-conformant 200 with an error body.
        let r = response(200, &[], &json("invalid_grant"));
        assert_eq!(classify_response(&r, now()), OAuthError::InvalidGrant);
    }

    #[test]
    fn malformed_codes_are_transient() {
        for body in [
            r#"{"error":""}"#,
            r#"{"error":"bad\"quote"}"#,
            r#"{"error":42}"#,
            "<html>invalid_grant</html>",
            "",
        ] {
            let r = response(400, &[], body);
            assert!(classify_response(&r, now()).is_retryable(), "{body}");
        }
        let long = format!(
            r#"{{"error":"{}"}}"#,
            "a".repeat(MAX_OAUTH_ERROR_CODE_LEN + 1)
        );
        assert!(classify_response(&response(400, &[], &long), now()).is_retryable());
    }

    #[test]
    fn transient_reason_never_contains_the_body() {
        let r = response(500, &[], "refresh_token=SECRET");
        let e = classify_response(&r, now());
        assert!(!format!("{e} {e:?}").contains("SECRET"));
        let r = response(400, &[("content-type", "text/plain")], "SECRET");
        let e = classify_response(&r, now());
        assert!(!format!("{e} {e:?}").contains("SECRET"));
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h, now()), Some(Duration::from_secs(120)));
        // IMF-fixdate relative to injected now (no Date header).
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Thu, 02 Jan 2025 03:05:05 GMT"),
        );
        assert_eq!(retry_after(&h, now()), Some(Duration::from_secs(60)));
        // Relative to the server's Date header when present.
        h.insert(
            header::DATE,
            HeaderValue::from_static("Thu, 02 Jan 2025 03:04:35 GMT"),
        );
        assert_eq!(retry_after(&h, now()), Some(Duration::from_secs(30)));
        h.remove(header::DATE);
        // RFC 850 and asctime.
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Thursday, 02-Jan-25 03:04:15 GMT"),
        );
        assert_eq!(retry_after(&h, now()), Some(Duration::from_secs(10)));
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Thu Jan  2 03:04:25 2025"),
        );
        assert_eq!(retry_after(&h, now()), Some(Duration::from_secs(20)));
        // Past dates mean "now"; garbage means "no hint".
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 01 Jan 2025 00:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now()), Some(Duration::ZERO));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now()), None);
    }
}
