//! Configuration: what Tributary needs to know to run, layered so that it runs out of the box in
//! development and is fully controlled by the environment in production.
//!
//! Layers, later wins:
//! 1. built-in defaults (the `Default` impls below);
//! 2. an optional TOML file (`--config <FILE>` or `TRIBUTARY_CONFIG`);
//! 3. environment variables `TRIBUTARY_<SECTION>__<KEY>` (`__` separates nesting levels, e.g.
//!    `TRIBUTARY_SERVER__LISTEN=0.0.0.0:9000`, `TRIBUTARY_CRYPTO__KEYS__PROD1=<base64>`);
//! 4. command-line flags (`--listen`, `--database-url`, `--no-sandbox`).
//!
//! Unknown keys are errors, so a typo is reported instead of silently ignored, and every error
//! names the key (`invalid configuration: server.listen: invalid socket address syntax`).
//! After [`Config::load`] returns, the JWT secret and an active token-encryption key are always
//! present: configured, or development secrets (see [`crate::dev_secrets`]).
//!
//! The doc comments on the option structs are the configuration reference.
//!
//! # Layout
//! - `config.rs`: the option structs, [`Config::load`] and [`ConfigError`].
//! - `config/sources.rs`: the environment and command-line layers as figment providers.
//! - `config/validate.rs`: checks that serde cannot express (lengths, key sizes, names).

mod sources;
mod validate;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
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
use url::Url;

pub(crate) use self::validate::decode_key;
pub use self::{sources::EnvVars, validate::MIN_JWT_SECRET_BYTES};
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
    /// Background workers (transfers, refreshes, partner revocations).
    pub workers: WorkersConfig,
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
            workers: WorkersConfig::default(),
            dev_secrets_in_use: None,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port the HTTP server binds, e.g. `0.0.0.0:8080`. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The URL at which browsers and partners reach this server (scheme, host, port, optional
    /// path prefix). Default: derived from `listen` as `http://<listen>`, with an unspecified
    /// address (`0.0.0.0`, `::`) replaced by `localhost`. Always set after loading.
    pub public_url: Option<Url>,
    /// Where the browser is sent after the OAuth callback, with the outcome appended as query
    /// parameters. Unset: the callback shows a small HTML page instead.
    pub return_url: Option<Url>,
    /// Largest accepted request body, in bytes. Default 65536 (64 KiB).
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            public_url: None,
            return_url: None,
            max_body_bytes: 64 * 1024,
        }
    }
}

impl ServerConfig {
    /// `http://<listen>`, with an unspecified address replaced by `localhost`.
    pub fn derived_public_url(&self) -> Url {
        let url = if self.listen.ip().is_unspecified() {
            format!("http://localhost:{}/", self.listen.port())
        } else {
            format!("http://{}/", self.listen)
        };
        Url::parse(&url).expect("a socket address forms a valid http URL")
    }
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://<path>` (created if missing) or `postgres://user:pass@host/db`. Default
    /// `sqlite://tributary.db`, relative to the working directory.
    pub url: String,
    /// Upper bound on pooled connections.  Default 10.
    pub max_connections: u32,
    /// SQLite only: how long a writer waits for a lock before failing, in milliseconds.
    /// Default 5000.
    pub busy_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://tributary.db".to_owned(),
            max_connections: 10,
            busy_timeout_ms: 5000,
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

/// `[oauth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    /// How long an authorization attempt (its `state` and PKCE verifier) stays valid, in seconds.
    /// Default 600.
    pub state_ttl_secs: u64,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            state_ttl_secs: 600,
        }
    }
}

/// `[sandbox]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSettings {
    /// Mount the simulated partner under `/sandbox` and, when no partners are configured,
    /// configure two partners (a CGM and a pump) that talk to it. Default `true`; `--no-sandbox`
    /// turns it off.
    pub enabled: bool,
    /// Approve every consent screen as this user, without a browser (demos and tests).
    pub auto_consent_user: Option<String>,
    /// Longest window one data request of the sandbox partners may span, in days (Dexcom: 30).
    /// Smaller values make the first transfer's backfill many windows (demos, tests). Default 30.
    pub max_window_days: u32,
    /// Per-request timeout of the sandbox partners' HTTP calls, in seconds. Default 30.
    pub request_timeout_secs: u64,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            auto_consent_user: None,
            max_window_days: 30,
            request_timeout_secs: 30,
        }
    }
}

/// `[workers]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// Run workers in this process (`serve`). `false` (or `serve --no-workers`) makes an
    /// API-only process; `tributary worker` runs workers without the API.
    pub enabled: bool,
    /// Steps run concurrently per step type in this process. Default 64: a transfer spends
    /// most of its time waiting on the partner (five requests of 100+ ms each in production),
    /// and concurrent transfers' commits share transactions (group commit), so more in flight
    /// costs little: ~105 MiB per process at 64 in the benchmark (BENCHMARKS.md).
    pub concurrency: usize,
    /// How often idle workers and the dispatcher look for due work, in milliseconds.
    /// Default 250.
    pub poll_interval_ms: u64,
    /// Jobs fetched from the queue per poll. Default 100.
    pub batch_size: usize,
    /// Connections claimed per dispatcher pass. Default 500.
    pub dispatch_batch: u64,
    /// How long a dispatcher's claim on a due connection lasts before the job starts, in
    /// seconds: a job lost between claim and start is re-dispatched after this. Default 120.
    pub dispatch_lease_secs: u64,
    /// How long a started transfer may go without committing a window, in seconds: the
    /// transfer of a worker killed mid-way is taken up again this long after its last commit.
    /// Must exceed the longest window fetch. Default 300.
    pub fetch_lease_secs: u64,
    /// A transfer running longer than this yields (and is due again at once), in seconds, so a
    /// long backfill never holds a worker for hours. Default 120.
    pub max_run_secs: u64,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: 64,
            poll_interval_ms: 250,
            batch_size: 100,
            dispatch_batch: 500,
            dispatch_lease_secs: 120,
            fetch_lease_secs: 300,
            max_run_secs: 120,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directives, e.g. `info,sqlx=warn` or `debug,hyper=info`.
    pub filter: String,
    /// One JSON object per line instead of human-readable text.
    pub json: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info,sqlx=warn".to_owned(),
            json: false,
        }
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
        let figment = Self::figment(file, env, overrides)?;
        let mut config: Config = figment
            .extract_lossy()
            .map_err(|e| sources::describe(&figment, e))?;
        config.normalize();
        validate::check(&config)?;
        config.dev_secrets_in_use = dev_secrets::apply(&mut config)?;
        validate::check_secrets_present(&config)?;
        if let Some(in_use) = &config.dev_secrets_in_use {
            eprintln!("{}", in_use.warning());
        }
        Ok(config)
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
