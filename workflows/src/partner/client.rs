//! The OAuth 2.0 client for one partner: authorization requests (PKCE, state), code exchange,
//! refresh, revocation, and the callback's issuer check. Built on the `oauth2` crate for URLs,
//! PKCE and token requests; every failure is classified here into [`OAuthError`]
//! (docs/oauth.md#token-endpoint-errors), and token responses we cannot use safely are refused
//! here (docs/oauth.md#token-responses).
//!
//! The client holds no per-user state: the caller stores the state hash and verifier, persists
//! rotated refresh tokens, and serializes refreshes per connection (docs/oauth.md#refresh).

use std::{fmt, sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use engine::{schedule::SyncPolicy, secret::SecretString};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    StandardRevocableToken, TokenUrl,
    basic::{BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse},
};
use url::Url;

use super::{
    classify::classify_response,
    config::{ClientAuth, PartnerConfig},
    error::{CallbackError, OAuthError, PartnerConfigError},
    pkce::{new_pkce, random_token},
    revoke::revocation_request,
    transport::{Recorder, TransportError, WireTokenResponse},
    validate::validate,
};

/// `oauth2`'s client with our lenient token response type; auth and token endpoints set.
type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    WireTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// One configured partner's OAuth client. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct PartnerClient {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    config: PartnerConfig,
    oauth: OAuthClient,
    /// No redirects (a token endpoint that redirects is misconfigured, and following would resend
    /// credentials elsewhere), the configured timeout.
    http: reqwest::Client,
    /// `request_timeout_secs`: code exchange and revocation.
    timeout: Duration,
    /// Refresh-token grants only (docs/oauth.md#refresh-timeout).
    refresh_timeout: Duration,
    /// The kind's policy with the configured overrides, resolved once at start-up.
    sync: SyncPolicy,
    /// `config.scopes` space-joined; `None` when no scope is configured.
    requested_scope: Option<String>,
}

/// A fresh authorization request (docs/oauth.md#authorization-request). The caller sends the
/// browser to `url`, stores `hash_state(state)` bound to the connection and partner with an
/// expiry, and stores `pkce_verifier` encrypted for the code exchange. Both secrets are single
/// use.
pub struct AuthorizationRequest {
    /// The partner's authorize URL with `response_type=code`, `client_id`, `state`,
    /// `code_challenge`, `code_challenge_method=S256`, `redirect_uri` and `scope`.
    pub url: Url,
    /// 32 CSPRNG bytes, base64url (43 characters).
    pub state: SecretString,
    /// 32 CSPRNG bytes, base64url (43 characters).
    pub pkce_verifier: SecretString,
}

impl fmt::Debug for AuthorizationRequest {
    /// The URL's query carries the state, so only its origin and path are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationRequest")
            .field(
                "url",
                &format_args!(
                    "{}{}?[redacted]",
                    self.url.origin().ascii_serialization(),
                    self.url.path()
                ),
            )
            .field("state", &self.state)
            .field("pkce_verifier", &self.pkce_verifier)
            .finish()
    }
}

/// Tokens from a successful code exchange or refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub access_token: SecretString,
    /// A new refresh token. On refresh, `None` means the partner did not rotate: the caller must
    /// keep using the refresh token it already has. `Some` means rotation: persist it atomically,
    /// replacing the old one, before using the new access token (docs/oauth.md#refresh).
    pub refresh_token: Option<SecretString>,
    /// `now + expires_in`; `None` when the partner sent no usable lifetime (or it overflows):
    /// the caller then relies on a 401 from the data API to trigger a refresh.
    pub expires_at: Option<DateTime<Utc>>,
    /// The granted scope (docs/oauth.md#scopes), space-joined. When the partner omits it
    /// (RFC 6749 §5.1: granted equals requested), the configured scopes. On refresh the caller
    /// may prefer the scope it stored at exchange time.
    pub scope: Option<String>,
}

impl fmt::Debug for PartnerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartnerClient")
            .field("name", &self.inner.name)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl PartnerClient {
    /// Validates `config` (see [`PartnerConfigError`]): the redirect path must be exactly
    /// `/v1/oauth/<name>/callback` (docs/oauth.md#redirect-uri), URLs absolute http(s) without
    /// credentials or fragment, `client_id`/`client_secret` non-empty, scopes valid
    /// scope-tokens, timeout ≥ 1 s, the refresh timeout between that and
    /// [`super::config::MAX_REFRESH_TIMEOUT_SECS`], `max_token_bytes` in range, `require_issuer`
    /// only with an `issuer`, and the resolved sync policy valid.
    pub fn new(name: &str, config: PartnerConfig) -> Result<Self, PartnerConfigError> {
        let sync = validate(name, &config)?;
        let refresh_timeout = config.refresh_timeout();
        let timeout = Duration::from_secs(config.request_timeout_secs);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PartnerConfigError::HttpClient {
                partner: name.to_owned(),
                reason: e.to_string(),
            })?;
        let auth_type = match config.client_auth {
            ClientAuth::ClientSecretBasic => AuthType::BasicAuth,
            ClientAuth::ClientSecretPost => AuthType::RequestBody,
        };
        let oauth: OAuthClient = oauth2::Client::new(ClientId::new(config.client_id.clone()))
            .set_client_secret(ClientSecret::new(config.client_secret.expose().clone()))
            .set_auth_uri(AuthUrl::from_url(config.authorize_url.clone()))
            .set_token_uri(TokenUrl::from_url(config.token_url.clone()))
            // `from_url` keeps `Url::as_str()`, used verbatim in both the authorize URL and the
            // token request: byte-identical redirect URIs (docs/oauth.md#redirect-uri).
            .set_redirect_uri(RedirectUrl::from_url(config.redirect_url.clone()))
            .set_auth_type(auth_type);
        let requested_scope = (!config.scopes.is_empty()).then(|| config.scopes.join(" "));
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                config,
                oauth,
                http,
                timeout,
                refresh_timeout,
                sync,
                requested_scope,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn config(&self) -> &PartnerConfig {
        &self.inner.config
    }

    /// The sync policy in force: the partner kind's, with `[partners.<name>.sync]` applied
    /// field by field (docs/oauth.md#partner-kinds-and-their-sync-policy).
    pub fn sync_policy(&self) -> &SyncPolicy {
        &self.inner.sync
    }

    /// A fresh authorization request, with new state and PKCE verifier each call.
    pub fn authorization_request(&self) -> AuthorizationRequest {
        let state = random_token();
        let (challenge, pkce_verifier) = new_pkce();
        let csrf = CsrfToken::new(state.expose().clone());
        let (url, _) = self
            .inner
            .oauth
            .authorize_url(|| csrf)
            .add_scopes(self.inner.config.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .url();
        AuthorizationRequest {
            url,
            state,
            pkce_verifier,
        }
    }

    /// Exchanges an authorization code (with its PKCE verifier and the configured redirect URI)
    /// for tokens. Call at most once per code (docs/oauth.md#code-exchange): a retry after
    /// `Transient` is safe only if the request may not have reached the partner, and a replay
    /// answers `InvalidGrant`.
    pub async fn exchange_code(
        &self,
        code: &SecretString,
        pkce_verifier: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<TokenGrant, OAuthError> {
        let recorder = self.recorder("token", self.inner.timeout);
        let result = self
            .inner
            .oauth
            .exchange_code(AuthorizationCode::new(code.expose().clone()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.expose().clone()))
            .request_async(&recorder)
            .await;
        self.finish(result, &recorder, now)
    }

    /// Refreshes tokens, with the longer refresh timeout (docs/oauth.md#refresh-timeout). The
    /// caller must hold the connection's refresh lock (docs/oauth.md#refresh) and, when
    /// `refresh_token` comes back `Some`, persist it before using the new access token.
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<TokenGrant, OAuthError> {
        let recorder = self.recorder("token", self.inner.refresh_timeout);
        let token = RefreshToken::new(refresh_token.expose().clone());
        let result = self
            .inner
            .oauth
            .exchange_refresh_token(&token)
            .request_async(&recorder)
            .await;
        self.finish(result, &recorder, now)
    }

    /// RFC 7009 revocation of a refresh token (docs/oauth.md#revocation). `Ok` when the partner
    /// answered 2xx (also for a token it does not know), when it answered `invalid_grant` (the
    /// grant is already gone), and when the partner has no `revoke_url` (nothing to revoke
    /// remotely). `Transient` errors are for the caller's background retry; the caller deletes
    /// local tokens regardless.
    pub async fn revoke(&self, refresh_token: &SecretString) -> Result<(), OAuthError> {
        let Some(url) = &self.inner.config.revoke_url else {
            return Ok(());
        };
        let request = revocation_request(&self.inner.config, url, refresh_token)
            .map_err(|e| OAuthError::transient(format!("could not build request: {e}")))?;
        let recorder = self.recorder("revoke", self.inner.timeout);
        let response = recorder
            .send(request)
            .await
            .map_err(|TransportError(e)| e)?;
        if response.status().is_success() {
            return Ok(());
        }
        // Only used as the base of an HTTP-date Retry-After when the response has no Date.
        match classify_response(&response, Utc::now()) {
            OAuthError::InvalidGrant => Ok(()),
            error => Err(error),
        }
    }

    /// RFC 9207: the callback's `iss`, compared by exact string equality with the configured
    /// issuer (docs/oauth.md#issuer).
    ///
    /// | `iss` | configured issuer | result |
    /// |---|---|---|
    /// | present, equal | some | `Ok` |
    /// | present, different | some | `IssuerMismatch` |
    /// | present | none | `Ok`: nothing to compare against; the per-partner redirect path is the mix-up defence |
    /// | absent | some, `require_issuer` | `IssuerMissing` |
    /// | absent | otherwise | `Ok` (most partners, Dexcom included, never send `iss`) |
    pub fn check_issuer(&self, iss: Option<&str>) -> Result<(), CallbackError> {
        let config = &self.inner.config;
        match (iss, &config.issuer) {
            (Some(received), Some(expected)) if received != expected.as_str() => {
                Err(CallbackError::IssuerMismatch {
                    expected: expected.clone(),
                    received: received.chars().take(256).collect(),
                })
            }
            (None, Some(expected)) if config.require_issuer => Err(CallbackError::IssuerMissing {
                expected: expected.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn recorder(&self, endpoint: &'static str, timeout: Duration) -> Recorder<'_> {
        Recorder::new(&self.inner.http, timeout, &self.inner.name, endpoint)
    }

    /// Turns `oauth2`'s outcome into ours. On failure the recorded response, not `oauth2`'s
    /// error, decides the variant: `oauth2` cannot tell a 503 from a 400.
    fn finish(
        &self,
        result: Result<WireTokenResponse, RequestTokenError<TransportError, BasicErrorResponse>>,
        recorder: &Recorder<'_>,
        now: DateTime<Utc>,
    ) -> Result<TokenGrant, OAuthError> {
        let response = recorder.take_response();
        let token = match result {
            Ok(token) => token,
            Err(RequestTokenError::Request(TransportError(error))) => return Err(error),
            Err(other) => {
                return Err(match response {
                    Some(response) => classify_response(&response, now),
                    // oauth2 failed before sending: nothing reached the partner.
                    None => OAuthError::transient(format!("request not sent: {other}")),
                });
            }
        };
        if token.access_token.secret().is_empty() {
            return Err(OAuthError::Transient {
                reason: "HTTP 200: empty access_token".into(),
                status: Some(200),
                retry_after: None,
            });
        }
        self.refuse_unusable(&token)?;
        let expires_at = token
            .expires_in
            .and_then(|secs| i64::try_from(secs).ok())
            .and_then(TimeDelta::try_seconds)
            .and_then(|lifetime| now.checked_add_signed(lifetime));
        let scope = match token.scopes {
            Some(scopes) => Some(
                scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            None => self.inner.requested_scope.clone(),
        };
        Ok(TokenGrant {
            access_token: SecretString::new(token.access_token.into_secret()),
            refresh_token: token
                .refresh_token
                .map(|t| SecretString::new(t.into_secret())),
            expires_at,
            scope,
        })
    }

    /// A token response that parsed but must not be used: not a Bearer token, or a token over
    /// `max_token_bytes` (docs/oauth.md#token-responses). Dropped here, it is never stored or sent.
    fn refuse_unusable(&self, token: &WireTokenResponse) -> Result<(), OAuthError> {
        let code = if !token.is_bearer() {
            "unsupported_token_type"
        } else {
            let max = self.inner.config.max_token_bytes;
            let refresh_len = token.refresh_token.as_ref().map_or(0, |t| t.secret().len());
            if token.access_token.secret().len() <= max && refresh_len <= max {
                return Ok(());
            }
            "token_too_large"
        };
        tracing::warn!(
            partner = self.inner.name,
            code,
            "refused the token endpoint's answer; the partner's tokens are not usable as configured"
        );
        Err(OAuthError::refused(code))
    }
}
