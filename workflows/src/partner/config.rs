//! A partner is configuration: where its OAuth server and data API live and how to talk to them.

use std::time::Duration;

use engine::{
    schedule::{Blackout, ScheduleError, SyncPolicy},
    secret::SecretString,
};
use serde::Deserialize;
use url::Url;

/// Default of `max_token_bytes`: far above real tokens (signed JWTs included are a few KiB).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest `max_token_bytes` accepted: two such tokens stay well inside the token response body
/// cap (docs/oauth.md#token-responses).
pub const MAX_MAX_TOKEN_BYTES: usize = 256 * 1024;
/// Default of `refresh_timeout_secs` when `request_timeout_secs` is not longer.
pub const DEFAULT_REFRESH_TIMEOUT_SECS: u64 = 60;
/// Longest `refresh_timeout_secs` accepted: a refresh must end well before a connection held in
/// `refreshing` for 5 minutes is taken back (docs/oauth.md#refresh-timeout).
pub const MAX_REFRESH_TIMEOUT_SECS: u64 = 240;

/// Which data adapter speaks to the partner's data API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerKind {
    /// Dexcom API v3 shaped CGM cloud (`/v3/users/self/egvs`, …).
    Dexcom,
    /// Insulin pump cloud with cursor-paged basal and bolus records (the sandbox's own design).
    Pump,
}

impl PartnerKind {
    /// The partner's documented sync policy, used for every field `[partners.<name>.sync]` leaves
    /// out (docs/oauth.md#partner-kinds-and-their-sync-policy).
    pub fn sync_policy(self) -> SyncPolicy {
        match self {
            Self::Dexcom => SyncPolicy::dexcom(),
            // No published policy: the generic interval, no blackout.
            Self::Pump => SyncPolicy::default(),
        }
    }
}

/// How we authenticate to the partner's token and revocation endpoints (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with client id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// One partner, as read from `[partners.<name>]` in the configuration. The map key is the
/// partner's name (`sandbox-cgm`, `dexcom`, …); it appears in URLs and in the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    /// Shown to users ("Dexcom", "ACME Pump").
    pub display_name: String,
    /// Which adapter fetches its data.
    pub kind: PartnerKind,
    /// OAuth client id issued by the partner.
    pub client_id: String,
    /// OAuth client secret issued by the partner; never logged.
    pub client_secret: SecretString,
    /// Token-endpoint client authentication method.
    #[serde(default = "default_client_auth")]
    pub client_auth: ClientAuth,
    /// The partner's authorization endpoint (the browser goes here).
    pub authorize_url: Url,
    /// The partner's token endpoint.
    pub token_url: Url,
    /// RFC 7009 revocation endpoint, if the partner has one.
    #[serde(default)]
    pub revoke_url: Option<Url>,
    /// Our callback for this partner; byte-identical in authorization and token requests. Its
    /// path must be `/v1/oauth/<partner>/callback` (one path per partner: the mix-up defence; see
    /// docs/oauth.md#redirect-uri).
    pub redirect_url: Url,
    /// The partner's issuer identifier; when a callback carries `iss` it must equal this (RFC 9207).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Reject callbacks that carry no `iss` (RFC 9207 §2.4: set this when the partner advertises
    /// `authorization_response_iss_parameter_supported`). Needs `issuer`. Off by default, because
    /// most partners (Dexcom among them) never send `iss`; the per-partner redirect path is then
    /// the mix-up defence on its own (RFC 9700 §4.4.2 accepts either).
    #[serde(default)]
    pub require_issuer: bool,
    /// Minimal scopes to request (docs/oauth.md#scopes).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Base URL of the partner's data API.
    pub api_base_url: Url,
    /// Timeout for each HTTP request to the partner, in seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Timeout of refresh-token grants, in seconds; unset: [`DEFAULT_REFRESH_TIMEOUT_SECS`], or
    /// `request_timeout_secs` if longer. Longer than other requests because a lost response to a
    /// rotating refresh costs the user's grant (docs/oauth.md#refresh-timeout). The value in
    /// force is [`Self::refresh_timeout`].
    #[serde(default)]
    pub refresh_timeout_secs: Option<u64>,
    /// Longest access or refresh token accepted from the token endpoint, in bytes; a longer one
    /// is refused as a partner fault (docs/oauth.md#token-responses).
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Longest time window one data request may span, in days (Dexcom: 30).
    #[serde(default = "default_max_window_days")]
    pub max_window_days: u32,
    /// Largest data-API response body accepted, in bytes; a larger one is refused as a
    /// configuration fault (shorten `max_window_days`). Bodies are read as a stream and never
    /// held whole; this bounds what one window's records take (docs/partner-data.md#memory).
    /// Default 67108864 (64 MiB: a 30-day window of 1-minute readings is ~25 MB).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Page size asked of partners that page (the pump's `limit`).
    #[serde(default = "default_max_records_per_page")]
    pub max_records_per_page: u32,
    /// Data-API requests per second, across all connections of the partner in this process.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: f64,
    /// Safety bound on the pages one window fetch follows per record kind; reaching it with
    /// more pages left is an error, never a silent truncation.
    #[serde(default = "default_max_pages_per_fetch")]
    pub max_pages_per_fetch: u32,
    /// When transfers run (`[partners.<name>.sync]`), as configured: overrides of the kind's
    /// policy. The policy in force is [`Self::sync_policy`].
    #[serde(default)]
    pub sync: SyncConfig,
    /// How transfers read and retry (`[partners.<name>.transfer]`).
    #[serde(default)]
    pub transfer: crate::fetch::TransferConfig,
}

impl PartnerConfig {
    /// The refresh-token grant's timeout in force (see [`Self::refresh_timeout_secs`]).
    pub fn refresh_timeout(&self) -> Duration {
        Duration::from_secs(
            self.refresh_timeout_secs
                .unwrap_or(DEFAULT_REFRESH_TIMEOUT_SECS.max(self.request_timeout_secs)),
        )
    }

    /// The sync policy in force: the kind's, with each field `[sync]` sets replacing the kind's
    /// value, validated as a whole.
    pub fn sync_policy(&self) -> Result<SyncPolicy, ScheduleError> {
        self.sync.resolve(self.kind)
    }
}

/// `[partners.<name>.sync]` as written. Every field is optional; an absent one keeps the partner
/// kind's value ([`PartnerKind::sync_policy`]). `blackouts = []` removes the kind's blackouts, and
/// a list replaces them (it is not appended).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Shortest gap between two regular syncs of one connection, in seconds.
    #[serde(default)]
    pub interval_min_secs: Option<u64>,
    /// Longest gap, in seconds; the next run is uniform between the two.
    #[serde(default)]
    pub interval_max_secs: Option<u64>,
    /// Spans during which the partner must not be called.
    #[serde(default)]
    pub blackouts: Option<Vec<Blackout>>,
    /// Random spread after a blackout's end, in seconds.
    #[serde(default)]
    pub blackout_spread_secs: Option<u64>,
}

impl SyncConfig {
    /// `kind`'s policy with these overrides applied, validated.
    pub fn resolve(&self, kind: PartnerKind) -> Result<SyncPolicy, ScheduleError> {
        let base = kind.sync_policy();
        let policy = SyncPolicy {
            interval_min_secs: self.interval_min_secs.unwrap_or(base.interval_min_secs),
            interval_max_secs: self.interval_max_secs.unwrap_or(base.interval_max_secs),
            blackouts: self.blackouts.clone().unwrap_or(base.blackouts),
            blackout_spread_secs: self
                .blackout_spread_secs
                .unwrap_or(base.blackout_spread_secs),
        };
        policy.validate()?;
        Ok(policy)
    }
}

fn default_client_auth() -> ClientAuth {
    ClientAuth::ClientSecretBasic
}

fn default_request_timeout_secs() -> u64 {
    30
}

/// Default `max_response_bytes`: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

fn default_max_response_bytes() -> usize {
    DEFAULT_MAX_RESPONSE_BYTES
}

fn default_max_window_days() -> u32 {
    30
}

fn default_max_records_per_page() -> u32 {
    500
}

fn default_requests_per_second() -> f64 {
    10.0
}

fn default_max_pages_per_fetch() -> u32 {
    100
}

fn default_max_token_bytes() -> usize {
    DEFAULT_MAX_TOKEN_BYTES
}
