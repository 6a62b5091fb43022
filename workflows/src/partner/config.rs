//! A partner is configuration: where its OAuth server and data API live and how to talk to them.

use engine::secret::SecretString;
use serde::Deserialize;
use url::Url;

/// Which data adapter speaks to the partner's data API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerKind {
    /// Dexcom API v3 shaped CGM cloud (`/v3/users/self/egvs`, …).
    Dexcom,
    /// Insulin pump cloud with cursor-paged basal and bolus records (the sandbox's own design).
    Pump,
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
    /// Our callback for this partner; byte-identical in authorization and token requests (C5).
    /// Its path must be `/v1/oauth/<partner>/callback` (one path per partner: mix-up defence, C3).
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
    /// Minimal scopes to request (C10).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Base URL of the partner's data API.
    pub api_base_url: Url,
    /// Timeout for each HTTP request to the partner, in seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Longest time window one data request may span, in days (Dexcom: 30).
    #[serde(default = "default_max_window_days")]
    pub max_window_days: u32,
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
    /// When transfers run: the jittered interval and blackout windows (`[partners.<name>.sync]`).
    #[serde(default)]
    pub sync: engine::schedule::SyncPolicy,
    /// How transfers read and retry (`[partners.<name>.transfer]`).
    #[serde(default)]
    pub transfer: crate::fetch::TransferConfig,
}

fn default_client_auth() -> ClientAuth {
    ClientAuth::ClientSecretBasic
}

fn default_request_timeout_secs() -> u64 {
    30
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
