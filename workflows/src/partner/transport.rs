//! The HTTP side of the OAuth client: a recording HTTP client handed to the `oauth2` crate, and
//! the token response type it parses into.
//!
//! Why a recording client: `oauth2`'s errors carry neither the HTTP status nor `Retry-After`,
//! which classification needs (docs/oauth.md#token-endpoint-errors). The [`Recorder`] keeps the
//! last response it returned, and the caller classifies that response itself (`classify.rs`)
//! whenever `oauth2` reports a failure.

use std::{future::Future, pin::Pin, sync::Mutex, time::Duration};

use oauth2::{
    AccessToken, AsyncHttpClient, HttpRequest, HttpResponse, RefreshToken, Scope, TokenResponse,
    basic::BasicTokenType, http,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::{classify::classify_transport, error::OAuthError};

/// Largest response body we read. Token responses are a few KiB; anything bigger is a broken or
/// hostile server, and is treated as a transient failure rather than read into memory. Well above
/// two tokens of the largest `max_token_bytes` allowed, so that limit is what refuses a big token.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A failure to obtain any response; already classified.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TransportError(pub(crate) OAuthError);

/// One request's worth of HTTP client for `oauth2`: sends with our reqwest client (no
/// redirects), with this request's timeout, logs one debug line, and remembers the response for
/// classification.
pub(crate) struct Recorder<'a> {
    pub(crate) http: &'a reqwest::Client,
    /// The whole request, connect to last body byte: `refresh_timeout_secs` for refresh-token
    /// grants, `request_timeout_secs` otherwise (docs/oauth.md#refresh-timeout).
    pub(crate) timeout: Duration,
    /// Partner name, for the log line.
    pub(crate) partner: &'a str,
    /// `token` or `revoke`, for the log line.
    pub(crate) endpoint: &'static str,
    last: Mutex<Option<HttpResponse>>,
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(
        http: &'a reqwest::Client,
        timeout: Duration,
        partner: &'a str,
        endpoint: &'static str,
    ) -> Self {
        Self {
            http,
            timeout,
            partner,
            endpoint,
            last: Mutex::new(None),
        }
    }

    /// The last response received, if any (taken: a second call returns `None`).
    pub(crate) fn take_response(&self) -> Option<HttpResponse> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    pub(crate) async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let result = self.send_inner(request).await;
        match &result {
            Ok(response) => {
                crate::runs::note_status(response.status().as_u16());
                engine::metrics::partner_status(self.partner, "oauth", response.status().as_u16());
                tracing::debug!(
                    partner = self.partner,
                    endpoint = self.endpoint,
                    status = response.status().as_u16(),
                    "partner oauth request"
                );
                *self
                    .last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(response.clone());
            }
            Err(TransportError(error)) => {
                crate::runs::note("transport");
                engine::metrics::partner_response(self.partner, "oauth", "transport");
                tracing::debug!(
                partner = self.partner,
                endpoint = self.endpoint,
                error = %error,
                "partner oauth request failed"
                );
            }
        }
        result
    }

    async fn send_inner(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let mut request: reqwest::Request = request
            .try_into()
            .map_err(|e| TransportError(classify_transport(e, self.timeout)))?;
        // Overrides the client's default, which is `request_timeout_secs`.
        *request.timeout_mut() = Some(self.timeout);
        let mut response = self
            .http
            .execute(request)
            .await
            .map_err(|e| TransportError(classify_transport(e, self.timeout)))?;
        let mut builder = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| TransportError(classify_transport(e, self.timeout)))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                // A successful answer this large carries tokens nobody should store or send:
                // the partner's fault, like a token over `max_token_bytes`
                // (docs/oauth.md#token-responses). An error page this large is an outage.
                if response.status().is_success() {
                    return Err(TransportError(OAuthError::refused("token_too_large")));
                }
                return Err(TransportError(OAuthError::Transient {
                    reason: format!("response body larger than {MAX_BODY_BYTES} bytes"),
                    status: Some(response.status().as_u16()),
                    retry_after: None,
                }));
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|e| TransportError(OAuthError::transient(format!("bad response: {e}"))))
    }
}

impl<'c> AsyncHttpClient<'c> for Recorder<'_> {
    type Error = TransportError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, TransportError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// A token response, parsed leniently. Leniency matters most after a code exchange: the server
/// has already consumed the single-use code, so rejecting a usable answer over a cosmetic field
/// would lose the grant. Only `access_token` is required; unknown fields are ignored.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireTokenResponse {
    pub(crate) access_token: AccessToken,
    /// `None` when absent or `null`, read as Bearer; any other value than Bearer is refused by
    /// the client (docs/oauth.md#token-responses).
    #[serde(default, deserialize_with = "lenient_token_type")]
    token_type: Option<BasicTokenType>,
    /// Seconds; accepts a number or a numeric string. Anything else is treated as absent.
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub(crate) expires_in: Option<u64>,
    #[serde(default)]
    pub(crate) refresh_token: Option<RefreshToken>,
    /// Space-delimited string per RFC 6749 §3.3; some servers send a JSON array.
    #[serde(rename = "scope", default, deserialize_with = "lenient_scopes")]
    pub(crate) scopes: Option<Vec<Scope>>,
}

impl TokenResponse for WireTokenResponse {
    type TokenType = BasicTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &BasicTokenType {
        self.token_type.as_ref().unwrap_or(&BEARER)
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scopes.as_ref()
    }
}

impl WireTokenResponse {
    /// A Bearer token, by RFC 6749 §7.1's case-insensitive comparison; absent counts as Bearer.
    pub(crate) fn is_bearer(&self) -> bool {
        matches!(self.token_type, None | Some(BasicTokenType::Bearer))
    }
}

static BEARER: BasicTokenType = BasicTokenType::Bearer;

/// Never fails, so an odd `token_type` reaches the client's check (a partner fault) instead of
/// being lost in a parse error (a transient one).
fn lenient_token_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BasicTokenType>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => None,
        Value::String(s) if s.eq_ignore_ascii_case("bearer") => Some(BasicTokenType::Bearer),
        Value::String(s) if s.eq_ignore_ascii_case("mac") => Some(BasicTokenType::Mac),
        Value::String(s) => Some(BasicTokenType::Extension(s)),
        _ => Some(BasicTokenType::Extension(String::new())),
    })
}

fn lenient_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                // Saturating float-to-int cast: fractional or huge lifetimes stay usable.
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn lenient_scopes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Scope>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s.split_whitespace().map(|s| Scope::new(s.into())).collect()),
        Value::Array(items) => Some(
            items
                .into_iter()
                .filter_map(|v| v.as_str().map(|s| Scope::new(s.into())))
                .collect(),
        ),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> WireTokenResponse {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn lenient_fields() {
        let t = parse(r#"{"access_token":"a","expires_in":"7200","scope":["x","y"]}"#);
        assert_eq!(t.expires_in, Some(7200));
        assert!(t.token_type.is_none() && t.is_bearer());
        assert_eq!(t.scopes.unwrap().len(), 2);
        let t = parse(
            r#"{"access_token":"a","token_type":"Bearer","expires_in":3599.9,"refresh_token":null,"scope":null}"#,
        );
        assert_eq!(t.expires_in, Some(3599));
        assert!(t.refresh_token.is_none() && t.scopes.is_none());
        assert!(t.is_bearer());
        let t = parse(r#"{"access_token":"a","expires_in":-5,"token_type":7}"#);
        assert_eq!(t.expires_in, None);
        assert!(!t.is_bearer());
        for (token_type, bearer) in [
            ("BeArEr", true),
            ("MAC", false),
            ("DPoP", false),
            ("", false),
        ] {
            let t = parse(&format!(
                r#"{{"access_token":"a","token_type":"{token_type}"}}"#
            ));
            assert_eq!(t.is_bearer(), bearer, "{token_type}");
        }
        assert!(serde_json::from_str::<WireTokenResponse>(r#"{"token_type":"bearer"}"#).is_err());
    }
}
