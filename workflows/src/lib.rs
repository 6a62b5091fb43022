//! Workflows: the lifecycle steps of a connection, each one file, on top of the engine's
//! store and the partners' OAuth clients.
//!
//! # Layout
//! - `partner/`: partner configuration and the OAuth client (errors classified once, there).
//! - `partners.rs`: the registry of configured partners.
//! - `authorize.rs`: connect / reconnect / restart authorization (issues state + PKCE).
//! - `callback.rs`: the OAuth callback: state, issuer, code exchange, declines and errors.
//! - `refresh.rs`: one refresh at a time per connection, rotation stored atomically.
//! - `revoke.rs`: disconnect, and the background partner-side revocation with retries.
//! - `invite.rs`: clinician invitations (create, re-send, cancel, expire).
//! - `deliver/`: the deliver step: outbox messages out as email (`email.rs`, `content.rs`)
//!   and signed webhooks (`webhook.rs`, `signature.rs`).
//! - `adapters/`: the partners' data API clients (Dexcom v3, pump), rate-limited.
//! - `mapping/`: partner records → Tidepool data model (pure).
//! - `fetch.rs`: the fetch step: windows, overlap, chunk commits, retries, failure budget.
//! - `dispatch.rs`: the dispatcher (claims due connections → jobs) and the workers.
//! - `records.rs`: raw and mapped record types.
//! - `error.rs`: `WorkflowError`, transport-agnostic (mapped to HTTP only in `api`).

pub mod adapters;
mod authorize;
mod callback;
pub mod deliver;
mod dispatch;
mod error;
pub mod fetch;
mod invite;
pub mod mapping;
pub mod partner;
mod partners;
pub mod records;
mod refresh;
mod revoke;
mod runs;

use std::{sync::Arc, time::Duration};

pub use authorize::Authorization;
pub use callback::{CallbackOutcome, CallbackParams};
pub use dispatch::Workers;
use engine::Store;
pub use error::WorkflowError;
pub use invite::{InvitationSettings, InviteOutcome, Inviter};
pub use partners::Partners;
pub use refresh::RefreshOutcome;
pub use revoke::RevokerSettings;

/// Tunables of the lifecycle steps.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long an OAuth `state` stays valid (minutes: docs/oauth.md#state).
    pub state_ttl: Duration,
    /// Partner-side revocation retries.
    pub revoker: RevokerSettings,
    /// A connection held in `refreshing` longer than this was abandoned by a crashed worker
    /// and is returned to `active`.
    pub stale_refresh_after: Duration,
    /// First wait after a failed refresh; doubles per consecutive failure (at most 30 min).
    /// When a token is refreshed ahead of expiry is derived from its lifetime
    /// (`engine::schedule::refresh`).
    pub refresh_retry_after: Duration,
    /// How often the dispatcher claims due refreshes.
    pub refresh_scan_interval: Duration,
    /// Refreshes claimed per dispatcher pass.
    pub refresh_batch: u64,
    /// Transfer workers and dispatcher.
    pub transfer: TransferSettings,
    /// Clinician invitations.
    pub invitations: InvitationSettings,
    /// Emails and webhooks.
    pub delivery: deliver::DeliverySettings,
    /// How long and how many step runs are kept (docs/operations.md#step-runs).
    pub runs: engine::store::RunRetention,
    /// Overdue work freed by a resume is spread over this window (docs/actions.md#actions).
    pub resume_spread: Duration,
    /// How many connections a bulk action may hold and how long its dry run stays valid.
    pub bulk: BulkLimits,
}

/// Bulk actions' limits (docs/actions.md#bulk-actions).
#[derive(Debug, Clone, Copy)]
pub struct BulkLimits {
    pub max_connections: u64,
    pub ttl: Duration,
}

impl Default for BulkLimits {
    fn default() -> Self {
        let d = engine::store::BulkSettings::default();
        Self {
            max_connections: d.max_connections,
            ttl: d.ttl,
        }
    }
}

/// Process-wide transfer settings (per-partner ones are in [`fetch::TransferConfig`]).
#[derive(Debug, Clone)]
pub struct TransferSettings {
    /// A claimed connection whose job never started is claimed again after this long (the
    /// repair bound for a job lost between claim and start).
    pub dispatch_lease: Duration,
    /// A started transfer that makes no progress for this long (killed worker) is claimed
    /// again; every committed window extends it.
    pub fetch_lease: Duration,
    /// A transfer yields (and is due again at once) after running this long, so a long
    /// backfill never holds a worker for hours.
    pub max_run: Duration,
    /// How often the dispatcher looks for due connections.
    pub poll_interval: Duration,
    /// Connections claimed per dispatcher pass.
    pub dispatch_batch: u64,
    /// Back-pressure: no new transfers are claimed while this many fetch jobs wait or run in
    /// the queue (claims would otherwise expire in a backlog and be pushed again).
    pub max_pending: u64,
    /// Minimum time between two user-requested immediate syncs of one connection.
    pub sync_request_interval: Duration,
}

impl Default for TransferSettings {
    fn default() -> Self {
        Self {
            dispatch_lease: Duration::from_secs(120),
            fetch_lease: Duration::from_secs(300),
            max_run: Duration::from_secs(120),
            poll_interval: Duration::from_millis(250),
            dispatch_batch: 500,
            max_pending: 1000,
            sync_request_interval: Duration::from_secs(60),
        }
    }
}

impl Settings {
    /// The doctor's bounds (docs/operations.md#bounds): this configuration's leases and
    /// recovery time.
    pub fn doctor(&self) -> engine::store::DoctorSettings {
        engine::store::DoctorSettings {
            dispatch_lease: self.transfer.dispatch_lease,
            fetch_lease: self.transfer.fetch_lease,
            delivery_lease: self.delivery.lease,
            stale_refresh_after: self.stale_refresh_after,
            ..engine::store::DoctorSettings::default()
        }
    }

    /// The stuck reasons' thresholds (docs/operations.md#stuck-thresholds): the doctor's
    /// bounds and this configuration's authorization lifetime; the rest are the defaults.
    pub fn stuck(&self) -> engine::store::StuckSettings {
        engine::store::StuckSettings {
            doctor: self.doctor(),
            authorization_lifetime: self.state_ttl,
            ..engine::store::StuckSettings::default()
        }
    }

    /// The operators' actions' bounds (docs/actions.md#actions).
    pub fn actions(&self) -> engine::store::ActionSettings {
        engine::store::ActionSettings {
            dispatch_lease: self.transfer.dispatch_lease,
            stale_refresh_after: self.stale_refresh_after,
            resume_spread: self.resume_spread,
            claim_grace: self.stuck().claim_grace,
        }
    }

    /// Bulk actions' limits and the bounds of the actions and filters they are made of.
    pub fn bulk(&self) -> engine::store::BulkSettings {
        engine::store::BulkSettings {
            max_connections: self.bulk.max_connections,
            ttl: self.bulk.ttl,
            stuck: self.stuck(),
            actions: self.actions(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            state_ttl: Duration::from_secs(600),
            revoker: RevokerSettings::default(),
            stale_refresh_after: Duration::from_secs(300),
            refresh_retry_after: Duration::from_secs(60),
            refresh_scan_interval: Duration::from_secs(1),
            refresh_batch: 500,
            transfer: TransferSettings::default(),
            invitations: InvitationSettings::default(),
            delivery: deliver::DeliverySettings::default(),
            runs: engine::store::RunRetention::default(),
            resume_spread: engine::store::ActionSettings::default().resume_spread,
            bulk: BulkLimits::default(),
        }
    }
}

/// The lifecycle of connections: what the API and workers call. Cheap to clone.
#[derive(Clone)]
pub struct Workflows {
    store: Store,
    partners: Partners,
    settings: Arc<Settings>,
    /// Whether this process's dispatcher claims due transfers (tests drive them by hand).
    fetch_dispatch: bool,
    /// Webhook deliveries' HTTP client (no redirects: an endpoint answers, or it failed).
    webhook_client: reqwest::Client,
}

impl Workflows {
    /// The store is told what transitions fan out to (`settings.delivery`).
    pub fn new(store: Store, partners: Partners, settings: Settings) -> Self {
        let breakers = engine::store::BreakerSettings {
            default: engine::store::BreakerPolicy::default(),
            partners: partners
                .iter()
                .map(|(name, p)| (name.to_string(), p.config().transfer.breaker.clone()))
                .collect(),
            resume_spread: settings.resume_spread,
        };
        let store = store
            .with_outbox(settings.delivery.outbox())
            .with_breakers(breakers);
        let webhook_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client with default TLS builds");
        Self {
            store,
            partners,
            settings: Arc::new(settings),
            fetch_dispatch: true,
            webhook_client,
        }
    }

    /// Turns dispatching of due transfers on or off (revocations are always dispatched).
    pub fn with_fetch_dispatch(mut self, on: bool) -> Self {
        self.fetch_dispatch = on;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn partners(&self) -> &Partners {
        &self.partners
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}
