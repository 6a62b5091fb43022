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
//! - `error.rs`: `WorkflowError`, transport-agnostic (mapped to HTTP only in `api`).

mod authorize;
mod callback;
mod error;
pub mod partner;
mod partners;
mod refresh;
mod revoke;
pub mod records;

use std::{sync::Arc, time::Duration};

pub use authorize::Authorization;
pub use callback::{CallbackOutcome, CallbackParams};
use engine::Store;
pub use error::WorkflowError;
pub use partners::Partners;
pub use refresh::RefreshOutcome;
pub use revoke::RevokerSettings;
use tokio::sync::Notify;

/// Tunables of the lifecycle steps.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long an OAuth `state` stays valid (C2: minutes).
    pub state_ttl: Duration,
    /// Partner-side revocation retries.
    pub revoker: RevokerSettings,
    /// A connection held in `refreshing` longer than this was abandoned by a crashed worker
    /// and is returned to `active`.
    pub stale_refresh_after: Duration,
    /// Access tokens expiring within this margin are refreshed ahead of use.
    pub refresh_margin: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            state_ttl: Duration::from_secs(600),
            revoker: RevokerSettings::default(),
            stale_refresh_after: Duration::from_secs(300),
            refresh_margin: Duration::from_secs(300),
        }
    }
}

/// The lifecycle of connections: what the API and workers call. Cheap to clone.
#[derive(Clone)]
pub struct Workflows {
    store: Store,
    partners: Partners,
    settings: Arc<Settings>,
    /// Wakes the revoker when a disconnect queued a revocation.
    revocations_queued: Arc<Notify>,
}

impl Workflows {
    pub fn new(store: Store, partners: Partners, settings: Settings) -> Self {
        Self {
            store,
            partners,
            settings: Arc::new(settings),
            revocations_queued: Arc::new(Notify::new()),
        }
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
