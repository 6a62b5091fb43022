//! Storage: one sea-orm connection over one sqlx pool (SQLite file or PostgreSQL, chosen by
//! URL), the same code for both. The raw pool is kept so the job queue can share it.
//!
//! # Layout
//! - `entities/`: rows as stored.
//! - `connections.rs`: create/reconnect, compare-and-swap transitions with their journal row.
//! - `effects.rs`: the storage effects of a transition, in its transaction.
//! - `authorizations.rs`: single-use OAuth `state`s.
//! - `revocations.rs`: partner-side revocations still owed.
//! - `alerts.rs`: operator alerts.
//! - `coverage.rs`: which part of a range a connection fetched, what it did not and why, and
//!   where the partner had no data.
//! - `preview.rs`: what a window's commit would write (a re-fetch's dry run).
//! - `breaker/`: the partners' circuit breakers (partner outages) and what claims do with them.
//! - `actions.rs`: operators' actions: replay, pause/resume, move to failed, clear an error.
//! - `invitations.rs`: clinician invitations; `outbox.rs`: messages transitions owe, their
//!   claims and leases; `delivery.rs`: what a delivery attempt came to.
//! - `transfer.rs`: the transfer's types and its lease protocol; by operation:
//!   `claim.rs` (due transfers and refreshes), `start.rs`, `commit.rs` (window commits; `advance.rs`, their lease checks and cursor advances),
//!   `upsert.rs` (records and skipped records), `finish.rs` (yields, failures, sync requests),
//!   `records.rs` (reading stored data back).
//! - `rows.rs`: statements written once for both backends (rows as one JSON parameter).
//! - `runs.rs`: step runs (what each run of a step did), written by the steps' own
//!   transactions.
//! - `ops/`: what operators see: stuck connections, the filtered list, the summary.
//! - `group.rs`: group commit (concurrent transfers' starts and commits share statements).

mod actions;
mod advance;
mod alerts;
mod authorizations;
mod breaker;
mod claim;
mod commit;
mod connections;
mod coverage;
mod delivery;
mod doctor;
mod effects;
pub mod entities;
mod finish;
mod group;
mod invitations;
mod ops;
mod outbox;
mod preview;
mod records;
mod revocations;
mod rows;
mod runs;
mod start;
mod transfer;
mod upsert;

use std::{str::FromStr, sync::Arc, time::Duration};

pub use actions::{
    Acted, ActionError, ActionSettings, CLEAR_ERROR_EVENT, ConnectionAction, FAILED_BY_OPERATOR,
    InvalidReason, MAX_REASON_CHARS, PAUSE_EVENT, Pause, PauseScope, REFETCH_EVENT, REPLAY_EVENT,
    RESUME_EVENT, Reason, Refetched, Refusal, Replay, ReplayStep, ScopeResumed,
};
pub use actions::{BULK_SAMPLE, BulkAction, BulkError, BulkPlan, BulkResult, BulkSettings};
pub use authorizations::{AuthorizationPeek, AuthorizationRejected, ConsumedAuthorization};
pub use breaker::{
    BreakerPass, BreakerPolicy, BreakerSettings, BreakerState, BreakerTransition, PartnerBreaker,
};
pub use commit::GroupStats;
pub use connections::Applied;
pub use coverage::{Coverage, InvalidRange, MAX_COVERAGE_DAYS, TimeSpan, TypeCoverage, Unfetched};
pub use doctor::{
    DoctorCode, DoctorReport, DoctorSettings, DoctorSubject, Finding, REPAIR_EVENT, SAMPLE_SIZE,
};
pub use invitations::InvitationQuery;
use migrations::{Migrator, MigratorTrait};
pub use ops::{
    ConnectionFilter, ConnectionPage, ListedConnection, MAX_LIST_PAGE, MAX_RUN_BUCKETS, OpsSummary,
    PartnerStateCount, QueueDepth, ReasonNotStuck, RecentRuns, RunBucket, RunSeries, StuckFilter,
    StuckReason, StuckSettings,
};
pub use outbox::{DataSynced, DeliveryAttempt, OutboxMessage, OutboxQuery, OutboxSettings};
pub use preview::Preview;
pub use revocations::{DueRevocation, RevocationStatus};
pub use runs::{FetchRun, RunCounts, RunRetention, StatusTally, Statuses, Step, StepRun};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbErr, SqlxPostgresConnector, SqlxSqliteConnector,
};
use sqlx::{
    Connection as _,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
pub use transfer::{Chunk, ChunkStats, Claimed, RecordQuery, SkippedRecord, SyncEnd, SyncLease};

use crate::{
    clock::{SharedClock, SystemClock},
    crypto::{CryptoError, Keyring},
    failpoint::Failpoints,
    state::{InvalidTransition, State},
};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("connection not found")]
    NotFound,
    /// Someone else changed the connection first (compare-and-swap lost). Nothing was written.
    #[error(
        "the connection was changed concurrently (expected version {expected}, found {actual})"
    )]
    Conflict { expected: i64, actual: i64 },
    /// A live connection for this user and partner already exists (unique index).
    #[error("a live connection for this user and partner already exists")]
    AlreadyLive,
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// The change was already made (a revocation finished twice): nothing was written.
    #[error("already done")]
    AlreadyDone,
    /// Only a connection that may transfer data (active, or refreshing its token) can be asked
    /// to sync; this one is in `state`. Nothing was written.
    #[error("only active connections transfer data; this one is {0}")]
    NotTransferring(State),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("stored data are corrupt: {0}")]
    Corrupt(String),
    /// The transfer lease was taken over (expired and reclaimed) or the connection left
    /// `active`: stop without writing.
    #[error("the transfer lease was lost")]
    LeaseLost,
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// A test stopped the step at a named boundary (see `failpoint`).
    #[error(transparent)]
    Injected(#[from] crate::failpoint::Injected),
}

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The raw sqlx pool, for components (the job queue) that speak sqlx directly.
#[derive(Debug, Clone)]
pub enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// How to open the database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// SQLite: how long a writer waits for the lock before failing. SQLite has one writer at a
    /// time; under a busy transfer load a group commit can hold the lock for seconds, and a
    /// dispatcher pass (claims, job pushes) must wait its turn rather than fail.
    pub busy_timeout: Duration,
    /// PostgreSQL: how long [`Store::open`]'s first connection may take.
    pub connect_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            busy_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    pool: Pool,
    keyring: Arc<Keyring>,
    clock: SharedClock,
    failpoints: Failpoints,
    groups: Arc<commit::Groups>,
    /// Woken by a transition that queued a partner revocation (see `connections::after_commit`).
    revocations_queued: Arc<tokio::sync::Notify>,
    /// What transitions fan out to through the outbox.
    outbox: Arc<OutboxSettings>,
    /// Woken by a transition that queued an outbox message.
    deliveries_queued: Arc<tokio::sync::Notify>,
    /// Whether step runs are written (docs/operations.md#step-runs); off only to measure
    /// their cost.
    record_runs: bool,
    /// The partners' circuit breakers' policies (docs/operations.md#partner-incidents).
    breakers: Arc<breaker::BreakerSettings>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish()
    }
}

impl Store {
    /// Opens (creating a SQLite file if needed) without migrating.
    pub async fn open(url: &str, options: &StoreOptions, keyring: Keyring) -> Result<Self> {
        let (db, pool) = if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(|e| DbErr::Custom(format!("invalid SQLite URL: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(options.busy_timeout)
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections)
                .connect_with(connect)
                .await
                .map_err(|e| DbErr::Custom(format!("cannot open SQLite database: {e}")))?;
            (
                SqlxSqliteConnector::from_sqlx_sqlite_pool(pool.clone()),
                Pool::Sqlite(pool),
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let connect = PgConnectOptions::from_str(url)
                .map_err(|e| DbErr::Custom(format!("invalid PostgreSQL URL: {e}")))?
                // Safety net: a transaction abandoned half-way (a cancelled task) must not hold
                // row locks for ever; the server ends such a session after a minute, which
                // bounds how long a `SKIP LOCKED` claim can skip the row.
                .options([("idle_in_transaction_session_timeout", "60s")]);
            // One connection first, on its own: the pool retries a refused connection quietly
            // until its acquire timeout and then reports only that it timed out, so a server
            // that is down or unreachable would cost 30 s and never name the cause.
            match tokio::time::timeout(
                options.connect_timeout,
                PgConnection::connect_with(&connect),
            )
            .await
            {
                Ok(Ok(probe)) => {
                    let _ = probe.close().await;
                }
                Ok(Err(e)) => {
                    return Err(DbErr::Custom(format!("cannot connect to PostgreSQL: {e}")).into());
                }
                Err(_) => {
                    return Err(DbErr::Custom(format!(
                        "cannot connect to PostgreSQL: no connection within {} s",
                        options.connect_timeout.as_secs_f32()
                    ))
                    .into());
                }
            }
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .connect_with(connect)
                .await
                .map_err(|e| DbErr::Custom(format!("cannot connect to PostgreSQL: {e}")))?;
            (
                SqlxPostgresConnector::from_sqlx_postgres_pool(pool.clone()),
                Pool::Postgres(pool),
            )
        } else {
            return Err(DbErr::Custom(
                "database URL must start with sqlite: or postgres:".to_owned(),
            )
            .into());
        };
        let groups = Arc::new(commit::Groups::new(db.get_database_backend()));
        Ok(Self {
            db,
            pool,
            groups,
            keyring: Arc::new(keyring),
            clock: Arc::new(SystemClock),
            failpoints: Failpoints::default(),
            revocations_queued: Arc::new(tokio::sync::Notify::new()),
            outbox: Arc::new(OutboxSettings::default()),
            deliveries_queued: Arc::new(tokio::sync::Notify::new()),
            record_runs: true,
            breakers: Arc::new(breaker::BreakerSettings::default()),
        })
    }

    /// Opens and applies pending migrations (a no-op when there are none).
    pub async fn open_and_migrate(
        url: &str,
        options: &StoreOptions,
        keyring: Keyring,
    ) -> Result<Self> {
        // Migrations run on a connection of their own, closed before the pool opens: a pooled
        // SQLite connection that had prepared statements against the old schema could keep
        // their stale column lists after an `ALTER TABLE` (seen as "missing value for column").
        let migrator = Self::open(
            url,
            &StoreOptions {
                max_connections: 1,
                ..options.clone()
            },
            keyring.clone(),
        )
        .await?;
        migrator.migrate().await?;
        migrator.close().await;
        Self::open(url, options, keyring).await
    }

    pub async fn migrate(&self) -> Result<()> {
        Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        // Its own group-commit queues: a group runs with its leader's clock.
        self.groups = Arc::new(commit::Groups::new(self.db.get_database_backend()));
        self
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The step boundaries armed to stop (crash tests); unarmed in production.
    pub fn failpoints(&self) -> &Failpoints {
        &self.failpoints
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.db.execute_unprepared("SELECT 1").await?;
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}

fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}
