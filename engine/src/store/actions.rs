//! Operators' actions on workflows (docs/actions.md#actions): replay a connection's current
//! step, pause and resume (a connection, a partner, everything), move a connection to failed,
//! clear its error. Every action:
//! - takes a checked [`Reason`] and is journaled with the operator as actor: on the connection
//!   (a transition where the table has one, else a journal-only entry of its own name, like the
//!   doctor's repairs), or in the `pauses` table for a partner's or everyone's pause;
//! - is idempotent: asked twice it writes once, and the second answer says nothing changed;
//! - is one compare-and-swap on the connection's `version` and on the very condition it
//!   decided on (the lease, `paused`, the state), so a claim, a start or a transition that
//!   lands in between makes it decide again on the fresh row rather than overwrite;
//! - never races a step in flight: an action that would void a running token refresh (any
//!   version bump makes the refresh's commit fail and lose its new tokens) or start a second
//!   transfer is refused with `step_in_flight` instead.
//!
//! # Layout
//! - `actions.rs`: what the actions share: their settings, refusals, and the compare-and-swap
//!   with its journal entry.
//! - `actions/one.rs`: one connection's own pause, resume, fail and clear-error.
//! - `actions/replay.rs`: run the current step now.
//! - `actions/refetch.rs`: rewind the cursor to read a time range again.
//! - `actions/pauses.rs`: pauses of a partner or of everything, what the claims skip, the
//!   spread of overdue work on resume.
//! - `actions/reason.rs`: what a reason may say.
//! - `actions/bulk.rs`: bulk forms of the actions: a dry run's plan, its confirmed execution.

mod bulk;
mod one;
mod pauses;
mod reason;
mod refetch;
mod replay;

use std::time::Duration;

pub(super) use self::pauses::PauseFilter;
pub use self::{
    bulk::{BULK_SAMPLE, BulkAction, BulkError, BulkPlan, BulkResult, BulkSettings},
    one::ConnectionAction,
    pauses::{Pause, PauseScope, ScopeResumed},
    reason::{InvalidReason, MAX_REASON_CHARS, Reason},
    refetch::{REFETCH_EVENT, Refetched},
    replay::{Replay, ReplayStep},
};
use super::{
    Result, Store, StoreError,
    connections::{detached, to_domain},
    doctor::checks::Binder,
    entities::{connection, connection_event},
    rows::CONNECTION_COLUMNS,
};
use crate::{
    ids::ConnectionId,
    model::{Actor, Connection},
    state::State,
};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseTransaction, EntityTrait, Statement,
    TransactionTrait,
};

/// The journal's event names of actions no transition of the table expresses.
pub const PAUSE_EVENT: &str = "ops_pause";
pub const RESUME_EVENT: &str = "ops_resume";
pub const REPLAY_EVENT: &str = "ops_replay";
pub const CLEAR_ERROR_EVENT: &str = "ops_clear_error";

/// The error a connection moved to failed by an operator shows.
pub const FAILED_BY_OPERATOR: &str = "failed_by_operator";

/// How often an action decides again after losing a compare-and-swap to a concurrent writer.
const RETRIES: u32 = 5;

/// The bounds the actions decide with: this configuration's leases and recovery time.
#[derive(Debug, Clone)]
pub struct ActionSettings {
    /// A revocation due within this long may be claimed right now (a claim moves its next
    /// attempt this far ahead): replay leaves it alone.
    pub dispatch_lease: Duration,
    /// A connection `refreshing` for longer was left there by a stopped worker: replay may
    /// recover it.
    pub stale_refresh_after: Duration,
    /// On the resume of a partner or of everything, overdue transfers and refreshes are made
    /// due at a uniformly random time within this window from now.
    pub resume_spread: Duration,
    /// A dispatcher's claim older than this whose fetch job is not in the queue lost its job
    /// (the stuck reason `claim_without_job`): replay clears it. The stuck list's grace.
    pub claim_grace: Duration,
}

impl Default for ActionSettings {
    fn default() -> Self {
        Self {
            dispatch_lease: Duration::from_secs(120),
            stale_refresh_after: Duration::from_secs(300),
            resume_spread: Duration::from_secs(300),
            claim_grace: super::ops::StuckSettings::default().claim_grace,
        }
    }
}

/// Why an action was refused; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A step runs (or is claimed) right now and the action would race it; what runs.
    StepInFlight(&'static str),
    /// The connection has no step to run again (`invited`, `authorizing`, or ended and owing
    /// no revocation).
    NothingToReplay,
    /// Its transfers and refreshes are paused (the connection, its partner or everything).
    Paused,
    /// Only an `active` connection transfers (a re-fetch).
    NotTransferring,
    /// The connection never committed a window: its first transfer reads the backfill.
    NotFetchedYet,
}

impl Refusal {
    /// The stable code clients see.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::StepInFlight(_) => "step_in_flight",
            Refusal::NothingToReplay => "nothing_to_replay",
            Refusal::Paused => "paused",
            Refusal::NotTransferring => "not_transferring",
            Refusal::NotFetchedYet => "not_fetched_yet",
        }
    }

    /// What it means, for people.
    pub fn detail(self) -> String {
        match self {
            Refusal::StepInFlight(what) => {
                format!("{what}; nothing was changed, try again shortly")
            }
            Refusal::NothingToReplay => "the connection has no step to run again: it is not \
                 active or refreshing and owes no partner revocation"
                .to_owned(),
            Refusal::Paused => "the connection's transfers are paused (the connection, its \
                 partner or everything); resume first"
                .to_owned(),
            Refusal::NotTransferring => "only an active connection transfers data".to_owned(),
            Refusal::NotFetchedYet => "the connection has not fetched anything yet: its first \
                 transfer reads the whole backfill"
                .to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{}: {}", .0.code(), .0.detail())]
    Refused(Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an action on a connection did.
#[derive(Debug, Clone)]
pub struct Acted {
    /// The connection afterwards.
    pub connection: Connection,
    /// `false`: it was already so; nothing was written.
    pub changed: bool,
    /// A pause took a running transfer's lease: it stops at its next write.
    pub transfer_stopped: bool,
}

/// A compare-and-swap decided on a row: columns to write and the condition it decided on.
struct Swap {
    binder: Binder,
    sets: Vec<String>,
    guard: String,
}

impl Swap {
    fn new() -> Self {
        Self {
            binder: Binder::default(),
            sets: Vec::new(),
            guard: "TRUE".to_owned(),
        }
    }

    fn set(mut self, column: &str, value: impl Into<sea_orm::Value>) -> Self {
        let placeholder = self.binder.bind(value);
        self.sets.push(format!("{column} = {placeholder}"));
        self
    }

    fn null(mut self, column: &str) -> Self {
        self.sets.push(format!("{column} = NULL"));
        self
    }

    /// `guard`, built with the swap's own binder so its placeholders follow the sets'.
    fn guard(mut self, guard: impl FnOnce(&mut Binder) -> String) -> Self {
        self.guard = guard(&mut self.binder);
        self
    }
}

/// A journal entry of an action.
struct Entry {
    event: &'static str,
    actor: Actor,
    reason: Reason,
    details: serde_json::Value,
}

impl Entry {
    fn new(
        event: &'static str,
        actor: &Actor,
        reason: &Reason,
        details: serde_json::Value,
    ) -> Self {
        Self {
            event,
            actor: actor.clone(),
            reason: reason.clone(),
            details,
        }
    }
}

impl Store {
    /// The swap, `also` (further statements of the same decision) and the journal entry, in
    /// one transaction run on its own task (see `detached`): a cancelled caller cannot leave it
    /// half-way. `None`: the row changed since it was read; nothing was written.
    async fn swap_journaled(
        &self,
        row: &connection::Model,
        swap: Swap,
        also: Vec<Statement>,
        entry: Entry,
    ) -> Result<Option<Connection>> {
        let Swap {
            mut binder,
            mut sets,
            guard,
        } = swap;
        let now = self.clock.now();
        sets.push("version = version + 1".to_owned());
        sets.push(format!("updated_at = {}", binder.bind(now)));
        let sql = format!(
            "UPDATE connections SET {} WHERE id = {} AND version = {} AND ({guard}) \
             RETURNING {}",
            sets.join(", "),
            binder.bind(row.id.clone()),
            binder.bind(row.version),
            *CONNECTION_COLUMNS,
        );
        let statement = binder.statement(self.db.get_database_backend(), sql);
        let db = self.db.clone();
        detached(async move {
            let txn = db.begin().await?;
            let Some(after) = connection::Entity::find()
                .from_raw_sql(statement)
                .one(&txn)
                .await?
            else {
                txn.rollback().await?;
                return Ok(None);
            };
            for statement in also {
                txn.execute_raw(statement).await?;
            }
            journal(&txn, &after, &entry, now).await?;
            txn.commit().await?;
            to_domain(after).map(Some)
        })
        .await
    }

    async fn row(&self, id: ConnectionId) -> Result<connection::Model> {
        connection::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Every retry lost to a concurrent writer: a conflict to report.
    async fn lost(&self, id: ConnectionId) -> ActionError {
        match self.row(id).await {
            Ok(row) => StoreError::Conflict {
                expected: row.version,
                actual: row.version,
            }
            .into(),
            Err(err) => err.into(),
        }
    }
}

fn in_flight_refresh() -> ActionError {
    ActionError::Refused(Refusal::StepInFlight("a token refresh is in flight"))
}

fn parse_state(state: &str) -> Result<State> {
    state
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("unknown state {state:?}")))
}

/// The journal entry of an action, at the version its swap moved the row to; the state does
/// not change (`from` = `to`), like any journal-only entry.
async fn journal(
    txn: &DatabaseTransaction,
    after: &connection::Model,
    entry: &Entry,
    now: DateTime<Utc>,
) -> Result<()> {
    connection_event::Entity::insert(connection_event::ActiveModel {
        connection_id: Set(after.id.clone()),
        seq: Set(after.version),
        from_state: Set(Some(after.state.clone())),
        to_state: Set(after.state.clone()),
        event: Set(entry.event.to_owned()),
        actor: Set(entry.actor.as_str().to_owned()),
        reason: Set(Some(entry.reason.as_str().to_owned())),
        details: Set(entry.details.clone()),
        at: Set(now),
    })
    .exec(txn)
    .await?;
    Ok(())
}
