//! The engine: the connection state machine, its storage and the primitives workflows run on.
//!
//! # Layout
//! - `state.rs`: the transition table (pure; state × event → state + effects).
//! - `store/`: sea-orm storage on SQLite or PostgreSQL; compare-and-swap transitions with their
//!   journal row and storage effects in one transaction.
//! - `crypto.rs`: AES-256-GCM sealing of token material under rotating key ids.
//! - `model.rs`: domain types (connection, journal entry, token set, change requests).
//! - `failpoint.rs`: named step boundaries where tests stop a step dead (crash tests).
//! - `text.rs`: outside text made storable on both backends and bounded for operators.
//! - `invitation.rs`: invitations, email addresses, outbox message kinds.
//! - `metrics.rs`: every exported metric's name and the function that emits it.
//! - `ids.rs`: typed identifiers. `secret.rs`: redacting wrapper. `clock.rs`: injected time.

pub mod clock;
pub mod crypto;
pub mod failpoint;
pub mod ids;
pub mod invitation;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod schedule;
pub mod secret;
pub mod state;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;

pub use store::{Store, StoreError};
