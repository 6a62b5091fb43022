//! Sandbox configuration: where it is reachable, which OAuth clients it knows, and the defaults
//! that let `tributary serve` talk to it with no configuration at all.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

/// Client id of the default CGM (Dexcom-shaped) client. Development only.
pub const DEFAULT_CGM_CLIENT_ID: &str = "tributary-cgm-dev";
/// Client secret of the default CGM client. Development only: it is public in this source.
pub const DEFAULT_CGM_CLIENT_SECRET: &str = "cgm-dev-secret-not-for-production";
/// Client id of the default pump client. Development only.
pub const DEFAULT_PUMP_CLIENT_ID: &str = "tributary-pump-dev";
/// Client secret of the default pump client. Development only: it is public in this source.
pub const DEFAULT_PUMP_CLIENT_SECRET: &str = "pump-dev-secret-not-for-production";
/// Partner name Tributary uses for the sandbox CGM; its callback is `/v1/oauth/sandbox-cgm/callback`.
pub const DEFAULT_CGM_PARTNER_NAME: &str = "sandbox-cgm";
/// Partner name Tributary uses for the sandbox pump; its callback is `/v1/oauth/sandbox-pump/callback`.
pub const DEFAULT_PUMP_PARTNER_NAME: &str = "sandbox-pump";
/// Where the default configuration expects Tributary's own listener (callbacks live there).
pub const DEFAULT_APP_BASE_URL: &str = "http://127.0.0.1:8080";

/// Which of the two simulated partners a client, grant or route belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// Dexcom API v3 shaped CGM cloud, under `/cgm`.
    Cgm,
    /// The sandbox's own insulin-pump cloud, under `/pump`.
    Pump,
}

impl Flavor {
    /// Path segment and JSON name (`cgm`, `pump`).
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Cgm => "cgm",
            Flavor::Pump => "pump",
        }
    }

    /// Parses the path segment used by the admin API.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cgm" => Some(Flavor::Cgm),
            "pump" => Some(Flavor::Pump),
            _ => None,
        }
    }
}

/// Token-endpoint client authentication (RFC 6749 §2.3.1). The sandbox accepts only the
/// registered method, so a client configured with the wrong one fails loudly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// `client_secret_basic`: HTTP Basic with form-urlencoded id and secret.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body (Dexcom's way).
    Post,
}

/// One registered OAuth client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRegistration {
    /// The partner this client may use; a CGM client is unknown to the pump server.
    pub flavor: Flavor,
    /// Public client identifier.
    pub client_id: String,
    /// Shared secret for token and revocation requests.
    pub client_secret: String,
    /// Exact redirect URIs; compared byte for byte (a trailing `/` is a different URI).
    pub redirect_uris: Vec<String>,
    /// The one authentication method this client must use.
    pub auth_method: ClientAuthMethod,
}

/// Everything the sandbox needs to run. `Default` works for `tributary serve` on port 8080.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Absolute URL at which the sandbox routes are reachable, e.g.
    /// `http://127.0.0.1:8080/sandbox` (nested) or `http://127.0.0.1:9000` (standalone).
    /// Used for the pump's issuer, the consent form's action and the index of URLs.
    pub public_base_url: Url,
    /// Registered OAuth clients.
    pub clients: Vec<ClientRegistration>,
    /// When `Some(name)`, authorize requests skip the consent page and approve as that partner
    /// user, so scripts and tests need no browser.
    pub auto_consent_user: Option<String>,
    /// Access-token lifetime (Dexcom: 7200 s); the `access_token_ttl_secs` fault overrides it.
    pub access_token_ttl: Duration,
    /// Where every user's history starts: records exist from here on.
    pub history_start: DateTime<Utc>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let app = Url::parse(DEFAULT_APP_BASE_URL).expect("constant URL");
        SandboxConfig {
            public_base_url: Url::parse("http://127.0.0.1:8080/sandbox").expect("constant URL"),
            clients: default_clients(&app),
            auto_consent_user: None,
            access_token_ttl: Duration::from_secs(7200),
            history_start: default_history_start(),
        }
    }
}

impl SandboxConfig {
    /// Default configuration for a sandbox reachable at `public_base_url`, whose two default
    /// clients redirect to Tributary at `app_base_url` (see [`default_clients`]).
    pub fn new(public_base_url: Url, app_base_url: &Url) -> Self {
        SandboxConfig {
            public_base_url,
            clients: default_clients(app_base_url),
            ..SandboxConfig::default()
        }
    }

    /// The registered client with this id for this partner, if any.
    pub fn client(&self, flavor: Flavor, client_id: &str) -> Option<&ClientRegistration> {
        self.clients
            .iter()
            .find(|c| c.flavor == flavor && c.client_id == client_id)
    }
}

/// 2026-01-01T00:00:00Z, the default start of every user's history.
pub fn default_history_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid constant date")
}

/// The two development clients, redirecting to Tributary's per-partner callbacks under
/// `app_base_url`: `<app>/v1/oauth/sandbox-cgm/callback` (CGM, `client_secret_post` like Dexcom)
/// and `<app>/v1/oauth/sandbox-pump/callback` (pump, `client_secret_basic`). When the app base
/// is `127.0.0.1`, the same paths on `localhost` are registered too, since browsers use either.
pub fn default_clients(app_base_url: &Url) -> Vec<ClientRegistration> {
    let base = app_base_url.as_str().trim_end_matches('/');
    let mut bases = vec![base.to_owned()];
    if app_base_url.host_str() == Some("127.0.0.1") {
        bases.push(base.replacen("127.0.0.1", "localhost", 1));
    }
    let uris = |partner: &str| -> Vec<String> {
        bases
            .iter()
            .map(|b| format!("{b}/v1/oauth/{partner}/callback"))
            .collect()
    };
    vec![
        ClientRegistration {
            flavor: Flavor::Cgm,
            client_id: DEFAULT_CGM_CLIENT_ID.to_owned(),
            client_secret: DEFAULT_CGM_CLIENT_SECRET.to_owned(),
            redirect_uris: uris(DEFAULT_CGM_PARTNER_NAME),
            auth_method: ClientAuthMethod::Post,
        },
        ClientRegistration {
            flavor: Flavor::Pump,
            client_id: DEFAULT_PUMP_CLIENT_ID.to_owned(),
            client_secret: DEFAULT_PUMP_CLIENT_SECRET.to_owned(),
            redirect_uris: uris(DEFAULT_PUMP_PARTNER_NAME),
            auth_method: ClientAuthMethod::Basic,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_clients_cover_both_loopback_names() {
        let config = SandboxConfig::default();
        let cgm = config.client(Flavor::Cgm, DEFAULT_CGM_CLIENT_ID).unwrap();
        assert_eq!(
            cgm.redirect_uris,
            vec![
                "http://127.0.0.1:8080/v1/oauth/sandbox-cgm/callback",
                "http://localhost:8080/v1/oauth/sandbox-cgm/callback"
            ]
        );
        assert!(config.client(Flavor::Pump, DEFAULT_CGM_CLIENT_ID).is_none());
    }
}
