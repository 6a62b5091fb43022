//! A simulated, deliberately strict partner cloud for Tributary: a real HTTP server (poem)
//! hosting two partners, a Dexcom-v3-shaped CGM cloud (`/cgm`) and an insulin-pump cloud of our
//! own design (`/pump`), plus an unauthenticated admin API (`/admin`) to inject faults, move the
//! clock, revoke users partner-side and read counters.
//!
//! **Development only.** The admin API has no authentication and the default client secrets
//! are public constants; never expose a sandbox beyond a developer machine or CI.
//!
//! The OAuth server is strict on purpose, like a real one (docs/oauth.md#strict-servers):
//! exact redirect URIs, mandatory PKCE S256 and `state`, single-use 60-second codes
//! (a replay revokes the grant), refresh-token rotation with reuse detection, RFC 7009
//! revocation, expiring access tokens. Data are pure functions of (user, time) (see [`data`]),
//! so tests can compute exactly what a complete transfer contains.
//!
//! # Routes (relative to the sandbox root)
//! - CGM: `GET /cgm/v2/oauth2/login`, `POST /cgm/v2/oauth2/consent`, `POST /cgm/v2/oauth2/token`,
//!   `POST /cgm/v2/oauth2/revoke`, `GET /cgm/v3/users/self/{egvs,calibrations,events,alerts,
//!   devices,dataRange}`.
//! - Pump: `GET /pump/oauth/authorize`, `POST /pump/oauth/consent`, `POST /pump/oauth/token`,
//!   `POST /pump/oauth/revoke`, `GET /pump/v1/users/self/{basal,bolus}`. Authorization
//!   responses carry `iss = <public_base_url>/pump` (RFC 9207). Scopes: `pump.read` (needed by
//!   the data API) and `offline_access` (needed for a refresh token); both by default.
//! - Admin: `GET|PUT|PATCH|DELETE /admin/faults` (PUT replaces, PATCH merges, DELETE clears),
//!   `POST /admin/users/{cgm|pump}/{user}/revoke`, `GET|PUT /admin/clock`
//!   (`{"now": RFC 3339 | null}`), `GET /admin/stats`.
//! - `GET /`: JSON index of every partner URL and the registered clients (no secrets).
//!
//! # Example
//! ```no_run
//! use sandbox::{Flavor, Sandbox, SandboxConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let sandbox = Sandbox::new(SandboxConfig::default());
//! // Mounted under Tributary's own listener (public_base_url ends in /sandbox)…
//! let _app = poem::Route::new().nest("/sandbox", sandbox.endpoint());
//! // …or on its own port.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! sandbox.faults().update(|f| f.fail_next.token = 1);
//! let _urls = sandbox.urls(Flavor::Cgm); // authorize, token, revoke, api_base, issuer
//! sandbox::serve(sandbox, listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! # Layout
//! - `lib.rs`: [`Sandbox`] (shared state, clock, handles) and [`serve`].
//! - `config.rs`: [`SandboxConfig`], [`ClientRegistration`], default dev clients.
//! - `faults.rs`: [`Faults`] settings and the pure per-request decision.
//! - `oauth.rs`: codes, grants, tokens; every strict rule (unit tests in `oauth_tests.rs`).
//! - `stats.rs`: counters served by `/admin/stats`.
//! - `data/`: deterministic records: `cgm.rs`, `cgm_events.rs` (events with corrections,
//!   alerts), `cgm_meta.rs` (devices, dataRange), `pump.rs`,
//!   `time.rs` (per-user zone and display quirks), `mod.rs` (publication and backfill).
//! - `http/`: routes; `guard.rs` applies faults, `authorize.rs` (login/consent pages),
//!   `token.rs` (token and revocation endpoints), `cgm_api.rs`, `pump_api.rs` (+ `cursor.rs`),
//!   `admin.rs`.
//! - `smtp/`: a mail server for tests (a real SMTP conversation, scripted refusals).
//! - `webhooks.rs`: a webhook receiver for tests (verifies signatures, fails on demand).

pub mod config;
pub mod data;
pub mod faults;
pub mod hostile;
mod http;
mod oauth;
pub mod smtp;
pub mod stats;
pub mod webhooks;

use std::{
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chrono::{DateTime, Duration as TimeDelta, Utc};
use poem::{Route, Server, listener::TcpAcceptor};
use serde::Serialize;
use url::Url;

pub use crate::{
    config::{
        ClientAuthMethod, ClientRegistration, DEFAULT_CGM_CLIENT_ID, DEFAULT_CGM_CLIENT_SECRET,
        DEFAULT_CGM_PARTNER_NAME, DEFAULT_PUMP_CLIENT_ID, DEFAULT_PUMP_CLIENT_SECRET,
        DEFAULT_PUMP_PARTNER_NAME, Flavor, SandboxConfig, default_clients,
    },
    data::DataContext,
    faults::{ClassCounts, DailyWindow, Faults, FaultsHandle, Window},
    oauth::{CODE_TTL, OFFLINE_ACCESS, s256},
    stats::{FlavorStats, RevocationCall, Stats},
};

/// The pump's data scope.
pub const PUMP_READ_SCOPE: &str = "pump.read";

/// A running sandbox's state. Cheap to clone: all clones share one state.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    config: SandboxConfig,
    /// `Some(t)`: the clock is frozen at `t` (tests); `None`: system time.
    clock: Mutex<Option<DateTime<Utc>>>,
    faults: FaultsHandle,
    store: Mutex<oauth::Store>,
}

/// Where one partner's endpoints are, for configuring a client against this sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerUrls {
    /// Browser-facing authorization endpoint.
    pub authorize: Url,
    /// Token endpoint.
    pub token: Url,
    /// RFC 7009 revocation endpoint.
    pub revoke: Url,
    /// Data API base: CGM paths continue with `/v3/users/self/egvs`, pump with
    /// `/v1/users/self/basal`.
    pub api_base: Url,
    /// RFC 9207 issuer sent in authorization responses (pump only).
    pub issuer: Option<String>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Client secrets stay out of logs even though the defaults are public.
        f.debug_struct("Sandbox")
            .field(
                "public_base_url",
                &self.inner.config.public_base_url.as_str(),
            )
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// A sandbox with fresh state (no grants, healthy faults, system clock).
    pub fn new(config: SandboxConfig) -> Self {
        Sandbox {
            inner: Arc::new(Inner {
                config,
                clock: Mutex::new(None),
                faults: FaultsHandle::default(),
                store: Mutex::new(oauth::Store::default()),
            }),
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// All routes, to serve alone or mount with `.nest("/sandbox", sandbox.endpoint())`.
    pub fn endpoint(&self) -> Route {
        http::routes(self)
    }

    /// The fault settings; changes apply to the next request.
    pub fn faults(&self) -> FaultsHandle {
        self.inner.faults.clone()
    }

    /// Freezes the clock at `t`, or returns to system time with `None`.
    pub fn set_now(&self, t: Option<DateTime<Utc>>) {
        *lock(&self.inner.clock) = t;
    }

    /// Moves the clock forward by `by` (freezing it, starting from the current time).
    pub fn advance(&self, by: TimeDelta) {
        let mut clock = lock(&self.inner.clock);
        *clock = Some(clock.unwrap_or_else(Utc::now) + by);
    }

    /// The sandbox clock: code and token expiry, maintenance windows and data publication all
    /// use it.
    pub fn now(&self) -> DateTime<Utc> {
        lock(&self.inner.clock).unwrap_or_else(Utc::now)
    }

    /// True when the clock is frozen by [`Sandbox::set_now`] or [`Sandbox::advance`].
    pub fn clock_frozen(&self) -> bool {
        lock(&self.inner.clock).is_some()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.store().snapshot()
    }

    /// Partner-side revocation of all of `user`'s grants; returns how many were live.
    pub fn revoke_user(&self, flavor: Flavor, user: &str) -> u64 {
        self.store().revoke_user(flavor, user)
    }

    /// **Development only** (benchmarks): registers a grant for partner user `user` with the
    /// flavor's default client, skipping the browser flow, and returns `(access_token,
    /// refresh_token)`; the access token lives `ttl` on the sandbox clock. Scope: the flavor's
    /// default scopes.
    pub fn seed_grant(&self, flavor: Flavor, user: &str, ttl: TimeDelta) -> (String, String) {
        let client_id = self
            .inner
            .config
            .clients
            .iter()
            .find(|c| c.flavor == flavor)
            .map_or("", |c| c.client_id.as_str())
            .to_owned();
        let scope = match flavor {
            Flavor::Cgm => OFFLINE_ACCESS.to_owned(),
            Flavor::Pump => format!("{PUMP_READ_SCOPE} {OFFLINE_ACCESS}"),
        };
        let now = self.now();
        self.store()
            .seed_grant(flavor, &client_id, user, &scope, now, ttl)
    }

    /// What decides publication right now (history start and publication faults), for
    /// computing expectations with [`data`].
    pub fn data_context(&self) -> DataContext {
        DataContext::new(self.inner.config.history_start, &self.inner.faults.get())
    }

    /// The URLs of one partner under `public_base_url`.
    pub fn urls(&self, flavor: Flavor) -> PartnerUrls {
        let u = |path: &str| self.url(path);
        match flavor {
            Flavor::Cgm => PartnerUrls {
                authorize: u("/cgm/v2/oauth2/login"),
                token: u("/cgm/v2/oauth2/token"),
                revoke: u("/cgm/v2/oauth2/revoke"),
                api_base: u("/cgm"),
                issuer: None,
            },
            Flavor::Pump => PartnerUrls {
                authorize: u("/pump/oauth/authorize"),
                token: u("/pump/oauth/token"),
                revoke: u("/pump/oauth/revoke"),
                api_base: u("/pump"),
                issuer: self.issuer(flavor),
            },
        }
    }

    /// The RFC 9207 issuer of a partner: `<public_base_url>/pump` for the pump, none for the
    /// CGM (Dexcom sends no `iss`).
    pub fn issuer(&self, flavor: Flavor) -> Option<String> {
        (flavor == Flavor::Pump).then(|| self.url("/pump").to_string())
    }

    fn url(&self, path: &str) -> Url {
        let base = self
            .inner
            .config
            .public_base_url
            .as_str()
            .trim_end_matches('/');
        Url::parse(&format!("{base}{path}")).expect("base URL plus an absolute path is a URL")
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, oauth::Store> {
        lock(&self.inner.store)
    }

    /// Lifetime of access tokens issued now: the fault override, else the configuration.
    pub(crate) fn access_ttl(&self) -> TimeDelta {
        let configured = self.inner.config.access_token_ttl;
        let secs = self
            .inner
            .faults
            .get()
            .access_token_ttl_secs
            .map_or(configured, Duration::from_secs);
        TimeDelta::from_std(secs).unwrap_or(TimeDelta::hours(2))
    }
}

/// Locks, recovering from poisoning: every critical section leaves the state consistent, so a
/// panicking test thread must not take the sandbox down for the others.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves `sandbox` alone on `listener` until `shutdown` completes (then drains for up to 5 s).
/// Bind port 0 and read `listener.local_addr()` first to learn the port.
pub async fn serve(
    sandbox: Sandbox,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(sandbox.endpoint(), shutdown, Some(Duration::from_secs(5)))
        .await
}
