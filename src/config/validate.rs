//! Checks that the types cannot express. Each failure names its key.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
};
use url::Url;

use super::{Config, ConfigError, bounds};

/// Shortest accepted HS256 secret, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Accepted values of `auth.max_token_lifetime_secs`.
const TOKEN_LIFETIME_SECS: std::ops::RangeInclusive<u64> = 60..=30 * 24 * 3600;

/// Everything that can be checked before development secrets are filled in.
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    check_server(config)?;
    check_database(config)?;
    check_auth(config)?;
    check_crypto(config)?;
    if let Some(user) = &config.sandbox.auto_consent_user
        && user.trim().is_empty()
    {
        return Err(ConfigError::invalid(
            "sandbox.auto_consent_user",
            "must not be empty (leave it unset to show the consent page)",
        ));
    }
    check_partners(config)?;
    super::notify::check(config)?;
    bounds::check(config)?;
    check_production_rules(config)?;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log.filter) {
        return Err(ConfigError::invalid("log.filter", e.to_string()));
    }
    Ok(())
}

/// The sandbox is a development convenience (an unauthenticated admin API, client secrets
/// published in the source), so it is on by default only in development mode: with
/// `dev_secrets = false` it is off unless asked for, and asking for it is refused by
/// [`check_production_rules`]. See docs/configuration.md#production-like-configuration.
pub(super) fn sandbox_follows_dev_mode(config: &mut Config, enabled_explicitly: bool) {
    if !config.dev_secrets && !enabled_explicitly {
        config.sandbox.enabled = false;
    }
}

/// A production-like configuration (`dev_secrets = false`) never mounts the sandbox.
fn check_production_rules(config: &Config) -> Result<(), ConfigError> {
    if !config.dev_secrets && config.sandbox.enabled {
        return Err(ConfigError::invalid(
            "sandbox.enabled",
            "the sandbox (an unauthenticated admin API and public client secrets) runs only \
             in development mode, and dev_secrets = false makes this configuration \
             production-like: remove sandbox.enabled = true, or set dev_secrets = true \
             (it only fills in secrets that are missing)",
        ));
    }
    Ok(())
}

/// After development secrets: the secrets the service cannot run without.
pub(super) fn check_secrets_present(config: &Config) -> Result<(), ConfigError> {
    if config.auth.jwt_secret.is_none() {
        return Err(ConfigError::invalid(
            "auth.jwt_secret",
            "not set and dev_secrets is off; set TRIBUTARY_AUTH__JWT_SECRET (at least 32 bytes)",
        ));
    }
    if config.crypto.keys.is_empty() {
        return Err(ConfigError::invalid(
            "crypto.keys",
            "no token-encryption key and dev_secrets is off; set TRIBUTARY_CRYPTO__KEYS__<id> \
             (base64 of 32 bytes) and TRIBUTARY_CRYPTO__ACTIVE_KEY_ID=<id>",
        ));
    }
    check_crypto(config)
}

fn check_server(config: &Config) -> Result<(), ConfigError> {
    let server = &config.server;
    if let Some(url) = &server.public_url {
        check_http_url("server.public_url", url)?;
    }
    if let Some(url) = &server.return_url {
        check_http_url("server.return_url", url)?;
    }
    Ok(())
}

fn check_http_url(key: &str, url: &Url) -> Result<(), ConfigError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(
            key,
            format!("scheme must be http or https, not `{}`", url.scheme()),
        ));
    }
    Ok(())
}

fn check_database(config: &Config) -> Result<(), ConfigError> {
    let url = &config.database.url;
    let scheme = url.split_once(':').map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("sqlite" | "postgres" | "postgresql")) {
        return Err(ConfigError::invalid(
            "database.url",
            "must start with sqlite:, postgres: or postgresql:",
        ));
    }
    Ok(())
}

fn check_auth(config: &Config) -> Result<(), ConfigError> {
    let auth = &config.auth;
    if let Some(secret) = &auth.jwt_secret {
        let len = secret.expose().len();
        if len < MIN_JWT_SECRET_BYTES {
            return Err(ConfigError::invalid(
                "auth.jwt_secret",
                format!("must be at least {MIN_JWT_SECRET_BYTES} bytes (got {len})"),
            ));
        }
    }
    if auth.jwt_issuer.is_empty() {
        return Err(ConfigError::invalid("auth.jwt_issuer", "must not be empty"));
    }
    if auth.jwt_audience.is_empty() {
        return Err(ConfigError::invalid(
            "auth.jwt_audience",
            "must not be empty",
        ));
    }
    if !TOKEN_LIFETIME_SECS.contains(&auth.max_token_lifetime_secs) {
        return Err(ConfigError::invalid(
            "auth.max_token_lifetime_secs",
            format!(
                "must be between {} (a minute) and {} (30 days), got {}",
                TOKEN_LIFETIME_SECS.start(),
                TOKEN_LIFETIME_SECS.end(),
                auth.max_token_lifetime_secs
            ),
        ));
    }
    Ok(())
}

fn check_crypto(config: &Config) -> Result<(), ConfigError> {
    let crypto = &config.crypto;
    for (id, key) in &crypto.keys {
        let key_name = format!("crypto.keys.{id}");
        if !is_key_id(id) {
            return Err(ConfigError::invalid(
                key_name,
                "key ids are 1-64 characters: lowercase letters, digits, `-` and `_`",
            ));
        }
        decode_key(key.expose()).map_err(|message| ConfigError::invalid(key_name, message))?;
    }
    match &crypto.active_key_id {
        Some(id) if !crypto.keys.contains_key(id) => Err(ConfigError::invalid(
            "crypto.active_key_id",
            format!("`{id}` is not one of crypto.keys"),
        )),
        None if crypto.keys.len() > 1 => Err(ConfigError::invalid(
            "crypto.active_key_id",
            "required when more than one key is configured",
        )),
        _ => Ok(()),
    }
}

fn is_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Decode a base64 token-encryption key. The message never contains the key.
pub(crate) fn decode_key(encoded: &str) -> Result<[u8; 32], String> {
    let encoded = encoded.trim();
    let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(encoded).ok())
        .ok_or_else(|| "not valid base64".to_owned())?;
    let len = bytes.len();
    <[u8; 32]>::try_from(bytes).map_err(|_| format!("must decode to exactly 32 bytes (got {len})"))
}

fn check_partners(config: &Config) -> Result<(), ConfigError> {
    for (name, partner) in &config.partners {
        if let Err(rule) = engine::ids::PartnerName::parse(name) {
            return Err(ConfigError::invalid(
                format!("partners.{name}"),
                rule.to_string(),
            ));
        }
        // The partner client checks the rest when it is built; this one is worth a message that
        // names the key because it is the easiest to get wrong.
        let expected = workflows::partner::callback_path(name);
        if partner.redirect_url.path() != expected {
            return Err(ConfigError::invalid(
                format!("partners.{name}.redirect_url"),
                format!(
                    "path must be {expected} (one callback path per partner), not {}",
                    partner.redirect_url.path()
                ),
            ));
        }
    }
    Ok(())
}
