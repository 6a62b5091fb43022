//! The partner client's errors. Whether a failure is permanent or retryable is decided here,
//! once, next to the HTTP calls (see docs/oauth.md#token-endpoint-errors); callers match on the
//! variant and never look at status codes or bodies themselves.
//!
//! No `Display` or `Debug` here ever contains a token, code, verifier, secret or response body:
//! only OAuth error codes (validated to the RFC 6749 character set), statuses and our own words.

use std::time::Duration;

use engine::schedule::ScheduleError;

/// Why a token-endpoint or revocation request failed. The mapping is total: every response and
/// every transport failure lands in exactly one variant (docs/oauth.md#token-endpoint-errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// `invalid_grant`: the grant is gone (the user revoked access, a code was replayed, a
    /// rotated refresh token was reused). Permanent: never retried; the user must reconnect.
    #[error("the partner rejected the grant (invalid_grant)")]
    InvalidGrant,
    /// The partner and our configuration disagree: a well-formed OAuth error other than
    /// `invalid_grant` (`invalid_client`, `unauthorized_client`, `unsupported_grant_type`,
    /// `invalid_scope`, `invalid_request`, or any extension code), or a token response we refuse
    /// (`unsupported_token_type`: not a Bearer token; `token_too_large`: a token over
    /// `max_token_bytes`; see docs/oauth.md#token-responses). Alert operators; do not mark
    /// users' connections as revoked, and do not hammer the partner.
    #[error("partner OAuth configuration fault ({code}); operators must act")]
    Configuration {
        /// The `error` value the partner sent (RFC 6749 §5.2 characters only, at most 128), or
        /// our own code for a refused token response.
        code: String,
    },
    /// 5xx, 429, timeouts, connection errors, redirects, non-JSON or malformed bodies (including
    /// a 400 whose body is not an OAuth error: an outage, not a revocation), and the codes
    /// `server_error` / `temporarily_unavailable`. Retry with backoff, honouring `retry_after`.
    #[error("partner temporarily unavailable: {reason}")]
    Transient {
        /// Our description: status, content type, body size or transport failure; never a body.
        reason: String,
        /// HTTP status, when a response arrived.
        status: Option<u16>,
        /// The partner's `Retry-After` (seconds or HTTP-date, converted to a delay). Not capped
        /// here: the caller's backoff policy clamps it.
        retry_after: Option<Duration>,
    },
}

impl OAuthError {
    /// Only `Transient` is worth retrying; `InvalidGrant` and `Configuration` will fail again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// A stable, machine-readable code for journals, metrics and problem+json bodies.
    pub fn code(&self) -> &str {
        match self {
            Self::InvalidGrant => "invalid_grant",
            Self::Configuration { .. } => "oauth_configuration",
            Self::Transient { .. } => "oauth_transient",
        }
    }

    /// A token response refused on our side (docs/oauth.md#token-responses).
    pub(crate) fn refused(code: &str) -> Self {
        Self::Configuration {
            code: code.to_owned(),
        }
    }

    pub(crate) fn transient(reason: impl Into<String>) -> Self {
        Self::Transient {
            reason: reason.into(),
            status: None,
            retry_after: None,
        }
    }
}

/// How the engine treats an `error` parameter arriving on the OAuth callback
/// (docs/oauth.md#callback-errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackErrorKind {
    /// `access_denied`: the user said no. The connection fails; never retried.
    Declined,
    /// `server_error`, `temporarily_unavailable`: the partner had a problem; the user may try
    /// again (a fresh authorization request).
    Retryable,
    /// `invalid_request`, `unauthorized_client`, `unsupported_response_type`, `invalid_scope`,
    /// and any code we do not know: our request or registration is wrong. Alert operators.
    Configuration,
}

impl CallbackErrorKind {
    /// A stable, machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Declined => "authorization_declined",
            Self::Retryable => "authorization_unavailable",
            Self::Configuration => "authorization_configuration",
        }
    }
}

/// Classify a callback's `error` parameter (RFC 6749 §4.1.2.1). Exact, case-sensitive match:
/// anything unexpected is a configuration problem for operators, never a silent retry loop and
/// never a "user declined".
pub fn classify_callback_error(error: &str) -> CallbackErrorKind {
    match error {
        "access_denied" => CallbackErrorKind::Declined,
        "server_error" | "temporarily_unavailable" => CallbackErrorKind::Retryable,
        // invalid_request, unauthorized_client, unsupported_response_type, invalid_scope, and
        // anything else.
        _ => CallbackErrorKind::Configuration,
    }
}

/// A callback rejected by [`super::PartnerClient::check_issuer`] (RFC 9207, docs/oauth.md#issuer).
/// The callback must change nothing: no token request, no state transition besides recording the
/// rejection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// The callback carried `iss` and it is not this partner's issuer: a mix-up attack or a
    /// misrouted response.
    #[error("callback issuer {received:?} does not match the partner's issuer {expected:?}")]
    IssuerMismatch {
        expected: String,
        /// As received, truncated to 256 characters (it is attacker-controlled).
        received: String,
    },
    /// The partner is configured with `require_issuer` and the callback carried no `iss`.
    #[error("callback carries no issuer but the partner requires one ({expected:?})")]
    IssuerMissing { expected: String },
}

impl CallbackError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::IssuerMismatch { .. } => "issuer_mismatch",
            Self::IssuerMissing { .. } => "issuer_missing",
        }
    }
}

/// A partner's configuration cannot work; reported at start-up by [`super::PartnerClient::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartnerConfigError {
    #[error("{0:?}: {rule}", rule = engine::ids::IdError::PartnerName)]
    InvalidName(String),
    #[error(
        "partner {partner}: {field} must be an absolute http(s) URL without credentials or fragment"
    )]
    InvalidUrl {
        partner: String,
        field: &'static str,
    },
    #[error("partner {partner}: redirect_url path must be exactly {expected:?}, found {found:?}")]
    RedirectPath {
        partner: String,
        expected: String,
        found: String,
    },
    #[error("partner {partner}: {field} must not be empty")]
    Empty {
        partner: String,
        field: &'static str,
    },
    #[error("partner {partner}: scope {scope:?} is not a valid OAuth scope token")]
    InvalidScope { partner: String, scope: String },
    /// A transfer setting (sync policy, data client limits) is invalid.
    #[error("{0}")]
    Invalid(String),
    #[error("partner {partner}: request_timeout_secs must be at least 1")]
    ZeroTimeout { partner: String },
    /// See docs/oauth.md#refresh-timeout for both bounds.
    #[error(
        "partner {partner}: refresh_timeout_secs is {refresh} (unset: 60, or request_timeout_secs \
         if longer); it must be at least request_timeout_secs ({request}) and at most {max}"
    )]
    RefreshTimeout {
        partner: String,
        refresh: u64,
        request: u64,
        max: u64,
    },
    #[error("partner {partner}: max_token_bytes is {value}; it must be between 1 and {max}")]
    MaxTokenBytes {
        partner: String,
        value: usize,
        max: usize,
    },
    /// The sync policy, the partner kind's defaults with `[partners.<name>.sync]` applied, is
    /// invalid.
    #[error("partner {partner}: sync: {reason}")]
    Sync {
        partner: String,
        reason: ScheduleError,
    },
    #[error("partner {partner}: require_issuer is set but no issuer is configured")]
    IssuerRequiredButMissing { partner: String },
    #[error("partner {partner}: could not build the HTTP client: {reason}")]
    HttpClient { partner: String, reason: String },
}
