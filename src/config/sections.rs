//! The option structs of the sections that hold no secrets: `[server]`, `[database]`,
//! `[oauth]`, `[sandbox]`, `[workers]`, `[log]` and `[metrics]`. Their doc comments are the reference; the
//! bounds of every number are in `bounds.rs` and docs/configuration.md.
//!
//! Defaults that a lower layer also uses (the job queue's, the workflows') are taken from that
//! layer, so each has one source.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use engine::jobs::QueueSettings;
use serde::Deserialize;
use url::Url;
use workflows::{Settings, TransferSettings};

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
    /// PostgreSQL only: how long the first connection at start may take, in seconds; an
    /// unreachable or refusing server fails the start with its own error at once or after
    /// this long. Default 10.
    pub connect_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        let store = engine::store::StoreOptions::default();
        Self {
            url: "sqlite://tributary.db".to_owned(),
            max_connections: store.max_connections,
            busy_timeout_ms: duration_ms(store.busy_timeout),
            connect_timeout_secs: store.connect_timeout.as_secs(),
        }
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
            state_ttl_secs: Settings::default().state_ttl.as_secs(),
        }
    }
}

/// `[sandbox]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSettings {
    /// Mount the simulated partner under `/sandbox` and, when no partners are configured,
    /// configure two partners (a CGM and a pump) that talk to it. Default: on in development
    /// mode (`dev_secrets = true`), off otherwise; turning it on with `dev_secrets = false` is
    /// refused (see docs/configuration.md#production-like-configuration). `--no-sandbox` turns
    /// it off.
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
    /// Steps run concurrently per step type in this process; at most twice `batch_size`.
    /// Default 64: a transfer spends most of its time waiting on the partner (five requests of
    /// 100+ ms each in production), and concurrent transfers' commits share transactions
    /// (group commit), so more in flight costs little: ~105 MiB per process at 64 in the
    /// benchmark (BENCHMARKS.md).
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
    /// A connection left in `refreshing` this long (its worker died mid-refresh) is returned to
    /// `active`, in seconds. Default 300.
    pub stale_refresh_secs: u64,
    /// Memory for partner records between their arrival and their window's commit, over all
    /// transfers of this process (docs/partner-data.md#memory): a response reserves four times
    /// its length (its partner's `max_response_bytes` when unannounced), and a window's first
    /// response waits while the budget is spent. Default 268435456 (256 MiB).
    pub response_memory_bytes: usize,
    /// Step runs (docs/operations.md#step-runs) are kept this many days. Default 7.
    pub run_retention_days: u64,
    /// At most this many step runs are kept (the oldest go first). Default 5000000.
    pub run_max_rows: u64,
    /// Write step runs. Default true; false only to measure what recording them costs
    /// (`tributary bench --ab-runs`): operators then see no runs.
    pub record_step_runs: bool,
    /// When a partner or everything is resumed, each overdue transfer and refresh is made due
    /// at a random time within this many seconds (docs/actions.md#actions). Default 300.
    pub resume_spread_secs: u64,
    /// Most connections one bulk action's dry run may hold; a filter matching more is refused
    /// (`bulk_too_many`) and nothing is stored (docs/actions.md#bulk-actions). Default 10000.
    pub bulk_max_connections: u64,
    /// How long a bulk dry run's confirmation token is valid, in seconds. Default 900.
    pub bulk_plan_ttl_secs: u64,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        let queue = QueueSettings::default();
        let transfer = TransferSettings::default();
        Self {
            enabled: true,
            concurrency: queue.concurrency,
            poll_interval_ms: duration_ms(queue.poll_interval),
            batch_size: queue.batch_size,
            dispatch_batch: transfer.dispatch_batch,
            dispatch_lease_secs: transfer.dispatch_lease.as_secs(),
            fetch_lease_secs: transfer.fetch_lease.as_secs(),
            max_run_secs: transfer.max_run.as_secs(),
            stale_refresh_secs: Settings::default().stale_refresh_after.as_secs(),
            response_memory_bytes: workflows::adapters::DEFAULT_RESPONSE_MEMORY_BYTES,
            run_retention_days: engine::store::RunRetention::default().keep_for.as_secs() / 86_400,
            run_max_rows: engine::store::RunRetention::default().max_rows,
            record_step_runs: true,
            resume_spread_secs: Settings::default().resume_spread.as_secs(),
            bulk_max_connections: Settings::default().bulk.max_connections,
            bulk_plan_ttl_secs: Settings::default().bulk.ttl.as_secs(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directives, e.g. `info,sqlx=warn` or `debug,hyper=info`.
    pub filter: String,
    /// One JSON object per line instead of human-readable text, each with its span fields:
    /// every line a step logs names its `connection` and `step` (docs/operations.md#logs).
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

/// `[metrics]`: the Prometheus endpoint (docs/operations.md#metrics).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address and port of a listener of its own that serves `GET /metrics` in the Prometheus
    /// text format, without authentication, e.g. `127.0.0.1:9464`. Unset (the default, in
    /// every mode): no metrics are collected or served. Bind it to loopback or a network only
    /// the scraper reaches: the endpoint is not behind the API's bearer tokens.
    pub listen: Option<SocketAddr>,
    /// How often the gauges (connections by partner and state, due and in-flight transfers,
    /// queue depths, stuck connections) are read from the database, in seconds: one aggregate
    /// read per process per interval, whatever the scrape rate. Default 15.
    pub sample_interval_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            sample_interval_secs: 15,
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
