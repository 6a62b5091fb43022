//! Partners: configuration and the OAuth client. The rules this module follows, and why, are
//! written down in docs/oauth.md.
//!
//! # Layout
//! - `config`: `PartnerConfig`, as read from `[partners.<name>]`; `SyncConfig`, the `[sync]`
//!   block, resolved against the partner kind's policy.
//! - `client`: `PartnerClient`: authorization requests, code exchange, refresh, revocation,
//!   issuer check, refusal of unusable token responses.
//! - `error`: `OAuthError` (retryable versus permanent, decided once), callback errors,
//!   configuration errors.
//! - `classify`: the response → `OAuthError` rules, and `Retry-After`.
//! - `error_code`: `oauth_error_code`, the one reader of `{"error": "..."}` bodies.
//! - `transport`: the recording HTTP client handed to `oauth2`, and the token response type.
//! - `revoke`: the RFC 7009 request (built by hand; see there why).
//! - `pkce`: state and PKCE verifier generation, `hash_state`.
//! - `validate`: start-up checks of a partner's configuration.
mod classify;
pub mod client;
pub mod config;
pub mod error;
mod error_code;
mod pkce;
mod revoke;
mod transport;
mod validate;

pub(crate) use classify::retry_after;
pub use client::{AuthorizationRequest, PartnerClient, TokenGrant};
pub use config::{ClientAuth, PartnerConfig, PartnerKind, SyncConfig};
pub use error::{
    CallbackError, CallbackErrorKind, OAuthError, PartnerConfigError, classify_callback_error,
};
pub use error_code::{MAX_OAUTH_ERROR_CODE_LEN, oauth_error_code};
pub use pkce::hash_state;
pub use validate::callback_path;
