//! Configuration: what Tributary needs to know to run, layered so that it runs out of the box in
//! development and is fully controlled by the environment in production.
//!
//! Layers, later wins:
//! 1. built-in defaults (the `Default` impls);
//! 2. an optional TOML file (`--config <FILE>` or `TRIBUTARY_CONFIG`);
//! 3. environment variables `TRIBUTARY_<SECTION>__<KEY>` (`__` separates nesting levels, e.g.
//!    `TRIBUTARY_SERVER__LISTEN=0.0.0.0:9000`, `TRIBUTARY_CRYPTO__KEYS__PROD1=<base64>`), for
//!    the known sections and top-level keys only: other `TRIBUTARY_…` variables belong to other
//!    tools and are ignored (docs/configuration.md#environment);
//! 4. command-line flags (`--listen`, `--database-url`, `--no-sandbox`).
//!
//! Unknown keys are errors, so a typo is reported instead of silently ignored, and every error
//! names the key (`invalid configuration: server.listen: invalid socket address syntax`); so is
//! every number outside its bounds (`bounds.rs`). After [`Config::load`] returns, the JWT secret
//! and an active token-encryption key are always present: configured, or development secrets
//! (see [`crate::dev_secrets`]).
//!
//! The doc comments on the option structs are the configuration reference; docs/configuration.md
//! explains the rules.
//!
//! # Layout
//! - `config.rs`: [`Config`], the secret-holding sections, [`Config::load`], [`ConfigError`].
//! - `config/sections.rs`: the other sections' option structs.
//! - `config/sources.rs`: the environment and command-line layers as figment providers.
//! - `config/validate.rs`: checks that serde cannot express (key sizes, names, development
//!   conveniences in a production-like configuration).
//! - `config/bounds.rs`: the accepted range of every numeric key.

mod bounds;
mod notify;
mod sections;
mod sources;
mod validate;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use api::auth::JwtKeys;
use engine::{
    crypto::Keyring,
    secret::{Secret, SecretString},
};
use figment::{
    Figment,
    providers::{Format, Toml},
};
use serde::Deserialize;

pub use self::notify::delivery;
pub(crate) use self::validate::decode_key;
pub use self::{
    bounds::{MAX_DAYS, MAX_SECS, MAX_TIMEOUT_SECS},
    notify::{ClinicConfig, EmailConfig, InvitationsConfig, TlsMode, WebhookConfig},
    sections::{
        DatabaseConfig, LogConfig, MetricsConfig, OAuthConfig, SandboxSettings, ServerConfig,
        WorkersConfig,
    },
    sources::EnvVars,
    validate::MIN_JWT_SECRET_BYTES,
};
use crate::dev_secrets::{self, DevSecretsInUse};

/// Prefix of the environment variables read as configuration.
pub const ENV_PREFIX: &str = "TRIBUTARY_";

/// Environment variable naming the configuration file (read by the CLI, not a configuration key).
pub const CONFIG_FILE_ENV: &str = "TRIBUTARY_CONFIG";

/// The whole configuration. TOML sections are the fields below (`[server]`, `[database]`, …).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The HTTP server: where it listens and how it is reached from outside.
    pub server: ServerConfig,
    /// The database holding connections, tokens and the job queue.
    pub database: DatabaseConfig,
    /// Verification of the bearer JWTs that callers present.
    pub auth: AuthConfig,
    /// Encryption of partner tokens at rest.
    pub crypto: CryptoConfig,
    /// The OAuth authorization flow with partners.
    pub oauth: OAuthConfig,
    /// The built-in simulated partner.
    pub sandbox: SandboxSettings,
    /// Device partners, keyed by partner name (`[partners.dexcom]`). The name appears in URLs
    /// and in the database: lowercase letters, digits and `-`, at most 32 characters, starting
    /// with a letter or digit.
    pub partners: BTreeMap<String, workflows::partner::PartnerConfig>,
    /// Generate missing secrets (JWT secret, token-encryption key) into a file beside the SQLite
    /// database (`tributary.db` → `tributary.secrets.toml`; the working directory for
    /// PostgreSQL) and reuse them on the next start. Convenient in development; set to `false` in
    /// production so that a missing secret is a configuration error instead.
    pub dev_secrets: bool,
    /// Logging.
    pub log: LogConfig,
    /// The Prometheus metrics endpoint (off unless `listen` is set).
    pub metrics: MetricsConfig,
    /// Background workers (transfers, refreshes, partner revocations, deliveries).
    pub workers: WorkersConfig,
    /// Outgoing email: invitations and notices (docs/notifications.md#email).
    pub email: EmailConfig,
    /// Clinician invitations: expiry and resend limit.
    pub invitations: InvitationsConfig,
    /// Clinics by id (`[clinics.c1]`): their names in emails and their contact addresses.
    pub clinics: BTreeMap<String, ClinicConfig>,
    /// Webhook endpoints by name (`[webhooks.web]`): each receives every lifecycle event,
    /// signed (docs/notifications.md#webhooks).
    pub webhooks: BTreeMap<String, WebhookConfig>,
    /// Set by [`Config::load`] when development secrets fill in missing values; not configurable.
    #[serde(skip)]
    pub dev_secrets_in_use: Option<DevSecretsInUse>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            crypto: CryptoConfig::default(),
            oauth: OAuthConfig::default(),
            sandbox: SandboxSettings::default(),
            partners: BTreeMap::new(),
            dev_secrets: true,
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            workers: WorkersConfig::default(),
            email: EmailConfig::default(),
            invitations: InvitationsConfig::default(),
            clinics: BTreeMap::new(),
            webhooks: BTreeMap::new(),
            dev_secrets_in_use: None,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret that bearer JWTs are signed with; at least 32 bytes. Shared with whoever
    /// mints tokens (Tidepool). Unset: a development secret is used if `dev_secrets` is on.
    /// Always set after loading.
    pub jwt_secret: Option<SecretString>,
    /// Required `iss` claim. Default `tributary`.
    pub jwt_issuer: String,
    /// Required `aud` claim. Default `tributary`.
    pub jwt_audience: String,
    /// Longest lifetime of an accepted token, in seconds: `exp - iat`, or `exp - now` for a
    /// token without `iat`. 60 to 2592000 (30 days); default 86400 (24 h).
    pub max_token_lifetime_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_issuer: "tributary".to_owned(),
            jwt_audience: "tributary".to_owned(),
            max_token_lifetime_secs: 24 * 3600,
        }
    }
}

/// `[crypto]`: AES-256-GCM keys for partner tokens at rest. Keep retired keys listed so tokens
/// encrypted with them stay readable; new tokens use the active key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CryptoConfig {
    /// Id of the key new tokens are encrypted with; must be one of `keys`. May be omitted when
    /// exactly one key is configured. Always set after loading.
    pub active_key_id: Option<String>,
    /// Key id → base64 of exactly 32 random bytes (`openssl rand -base64 32`). Ids are stored
    /// with each ciphertext: lowercase letters, digits, `-` and `_` (ids are lowercased, because
    /// environment variable names are not case-preserving). Unset: a development key is used if
    /// `dev_secrets` is on.
    pub keys: BTreeMap<String, SecretString>,
}

impl AuthConfig {
    /// Signing and verification keys for bearer JWTs (the secret is always set after
    /// [`Config::load`]).
    pub fn jwt_keys(&self) -> Result<JwtKeys, ConfigError> {
        let secret = self
            .jwt_secret
            .as_ref()
            .ok_or_else(|| ConfigError::invalid("auth.jwt_secret", "not set"))?;
        Ok(JwtKeys::new(
            secret.expose().as_bytes(),
            &self.jwt_issuer,
            &self.jwt_audience,
        )
        .with_max_lifetime(std::time::Duration::from_secs(self.max_token_lifetime_secs)))
    }
}

impl CryptoConfig {
    /// The token-encryption keyring (keys and active id are always set after [`Config::load`]).
    pub fn keyring(&self) -> Result<Keyring, ConfigError> {
        let active = self
            .active_key_id
            .clone()
            .ok_or_else(|| ConfigError::invalid("crypto.active_key_id", "not set"))?;
        let keys = self.decoded_keys()?;
        Keyring::new(
            active,
            keys.into_iter().map(|(id, key)| (id, key.into_inner())),
        )
        .map_err(|e| ConfigError::invalid("crypto.active_key_id", e.to_string()))
    }

    /// The keys decoded to raw bytes (validated at load time).
    pub fn decoded_keys(&self) -> Result<BTreeMap<String, Secret<[u8; 32]>>, ConfigError> {
        self.keys
            .iter()
            .map(|(id, key)| {
                validate::decode_key(key.expose())
                    .map(|bytes| (id.clone(), Secret::new(bytes)))
                    .map_err(|message| ConfigError::invalid(format!("crypto.keys.{id}"), message))
            })
            .collect()
    }
}

/// Values given as command-line flags: the last and strongest layer.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    /// `--listen` → `server.listen`.
    pub listen: Option<SocketAddr>,
    /// `--database-url` → `database.url`.
    pub database_url: Option<String>,
    /// `--no-sandbox` → `sandbox.enabled = false`.
    pub no_sandbox: bool,
}

/// Why the configuration could not be loaded. The CLI exits with status 2 for all of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key is unknown, missing, or has a bad value.
    #[error("invalid configuration: {}{message}", key_prefix(key))]
    Invalid {
        /// Dotted path of the key (`server.listen`), empty when the problem is not one key's.
        key: String,
        /// What is wrong, and where the value came from.
        message: String,
    },
    /// The file given with `--config` cannot be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    File {
        /// The path as given.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The development secrets file cannot be read, parsed or written.
    #[error("development secrets file {}: {message}", path.display())]
    DevSecrets {
        /// The secrets file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The offending key, for [`ConfigError::Invalid`].
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl Config {
    /// Load from defaults, `file`, the process environment and `overrides`, then validate and
    /// fill in development secrets if allowed.
    pub fn load(file: Option<&Path>, overrides: CliOverrides) -> Result<Config, ConfigError> {
        Self::load_from(file, EnvVars::from_process(), overrides)
    }

    /// [`Config::load`] with an explicit environment, so tests need not touch the process's.
    pub fn load_from(
        file: Option<&Path>,
        env: EnvVars,
        overrides: CliOverrides,
    ) -> Result<Config, ConfigError> {
        let mut config = Self::resolve(file, env, overrides)?;
        config.dev_secrets_in_use = dev_secrets::apply(&mut config)?;
        validate::check_secrets_present(&config)?;
        if let Some(in_use) = &config.dev_secrets_in_use {
            eprintln!("{}", in_use.warning());
        }
        Ok(config)
    }

    /// Everything [`Config::load_from`] does except filling in secrets: the layers merged,
    /// derived defaults filled and every check passed. Commands that need no secrets
    /// (`tributary sandbox`) use it, so they never create a secrets file.
    pub fn resolve(
        file: Option<&Path>,
        env: EnvVars,
        overrides: CliOverrides,
    ) -> Result<Config, ConfigError> {
        let figment = Self::figment(file, env, overrides)?;
        let mut config: Config = figment
            .extract_lossy()
            .map_err(|e| sources::describe(&figment, e))?;
        config.normalize();
        validate::sandbox_follows_dev_mode(&mut config, figment.contains("sandbox.enabled"));
        validate::check(&config)?;
        Ok(config)
    }

    /// The checks [`Config::load`] makes (bounds, names, no development convenience under a
    /// production-like configuration), for a `Config` built in code: the server runs them again
    /// before it starts.
    pub fn check(&self) -> Result<(), ConfigError> {
        validate::check(self)
    }

    /// The layered sources, before extraction (useful to inspect where a value came from).
    pub fn figment(
        file: Option<&Path>,
        env: EnvVars,
        overrides: CliOverrides,
    ) -> Result<Figment, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            // `Toml::file` would silently skip a missing file; an explicit `--config` must exist.
            std::fs::metadata(path).map_err(|source| ConfigError::File {
                path: path.to_owned(),
                source,
            })?;
            figment = figment.merge(Toml::file_exact(path));
        }
        Ok(figment
            .merge(env.provider()?)
            .merge(sources::cli_provider(&overrides)))
    }

    /// Fill derived defaults and canonicalize spellings before validation.
    fn normalize(&mut self) {
        if self.server.public_url.is_none() {
            self.server.public_url = Some(self.server.derived_public_url());
        }
        self.crypto.keys = std::mem::take(&mut self.crypto.keys)
            .into_iter()
            .map(|(id, key)| (id.to_ascii_lowercase(), key))
            .collect();
        if let Some(id) = &mut self.crypto.active_key_id {
            *id = id.to_ascii_lowercase();
        }
        if self.crypto.active_key_id.is_none() && self.crypto.keys.len() == 1 {
            self.crypto.active_key_id = self.crypto.keys.keys().next().cloned();
        }
    }

    /// The JWT secret's bytes (always present after [`Config::load`]).
    pub fn jwt_secret_bytes(&self) -> Option<&[u8]> {
        self.auth.jwt_secret.as_ref().map(|s| s.expose().as_bytes())
    }
}
