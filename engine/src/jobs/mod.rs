//! The job transport: apalis 1.0 queues on the store's own database (apalis-sqlite or
//! apalis-postgres over the store's sqlx pool).
//!
//! Our own tables hold the truth. A job only says "run step S for connection C at version V";
//! a dispatcher claims due connections from our tables and pushes them here, so only due or
//! in-flight steps sit in apalis's table, and finished jobs are purged. Delivery is at least once:
//! every step fences on the version it was scheduled for.
//!
//! What apalis does and what we do instead (docs/jobs.md#workers and
//! docs/jobs.md#why-the-queue-never-retries):
//! - Retries: the handler's error is logged and the job is marked done; every job is pushed with
//!   `max_attempts = 1` as well, so nothing apalis marks failed is retried at once. Backoff is
//!   scheduled by us in our tables.
//! - Hung handlers: each run is bounded by [`QueueSettings::job_timeout`] inside the job (apalis's
//!   own timeout layer sits outside the status tracking and would ack the job as `Running`).
//! - Liveness: apalis heartbeats only between batches; each worker also refreshes its own
//!   `last_seen` every heartbeat so long handlers never get its jobs re-enqueued elsewhere.
//! - Idle polling: our own interval strategy; apalis's `IntervalStrategy` sometimes loses its
//!   wake-up and the worker then waits for its heartbeat (25–30 s pickups measured).
//! - Worker names: unique per process (host, pid, random suffix) and per worker start, so a
//!   restart never inherits a dead worker's `Running` rows.
//!
//! # Layout
//! - `mod.rs`: job and step types, settings, [`JobQueue`] setup and push.
//! - `sql.rs`: queries on apalis's tables (push, purge, pending counts, live connections).
//! - `worker.rs`: worker pools per step, the handler wrapper, graceful shutdown.

pub(crate) mod sql;
mod worker;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use worker::WorkerHandle;

use crate::{Store, store::Pool};

/// One unit of work: run `step` for `connection_id`, scheduled at connection `version`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct StepJob {
    pub step: Step,
    pub connection_id: String,
    pub version: i64,
    /// Further connections the same job serves: deliver jobs group the outbox of several
    /// connections (docs/notifications.md#at-least-once); empty for every other step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<String>,
}

impl StepJob {
    /// A job for one connection.
    pub fn new(step: Step, connection_id: impl Into<String>, version: i64) -> Self {
        Self {
            step,
            connection_id: connection_id.into(),
            version,
            more: Vec::new(),
        }
    }

    /// Every connection the job serves, the first one first.
    pub fn connection_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.connection_id.as_str()).chain(self.more.iter().map(String::as_str))
    }
}

/// The kinds of step; each has its own queue and worker pool, so a slow kind cannot starve
/// another.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Fetch,
    Refresh,
    Revoke,
    /// Send a connection's due outbox messages (emails, webhooks).
    Deliver,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::Fetch, Step::Refresh, Step::Revoke, Step::Deliver];

    /// The apalis queue (its `job_type` column) of this step.
    pub fn queue(self) -> &'static str {
        match self {
            Step::Fetch => "tributary.fetch",
            Step::Refresh => "tributary.refresh",
            Step::Revoke => "tributary.revoke",
            Step::Deliver => "tributary.deliver",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Step::Fetch => "fetch",
            Step::Refresh => "refresh",
            Step::Revoke => "revoke",
            Step::Deliver => "deliver",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How workers poll and run jobs. The same settings apply to each step's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// How often an idle worker looks for new jobs; this is the pickup latency.
    pub poll_interval: Duration,
    /// Jobs claimed per fetch (apalis's default, 10, is 4–5× slower). Claimed jobs beyond the
    /// free handler slots wait, `Queued`, in this process, where no other process can take them:
    /// for slow steps keep it near `concurrency`. Must be at least `concurrency / 2` (apalis
    /// buffers 4 × `batch_size` lock/ack events and drains them only between batches).
    pub batch_size: usize,
    /// Handlers running at once, per step queue. The default is `workers.concurrency`'s: a
    /// transfer mostly waits on the partner, so many in flight cost little.
    pub concurrency: usize,
    /// Longest a handler may run; it is then cancelled and the job marked done.
    pub job_timeout: Duration,
    /// How often a worker proves it is alive.
    pub heartbeat: Duration,
    /// Heartbeats a worker may miss before its jobs are re-enqueued by another worker.
    pub missed_heartbeats: usize,
    /// How long [`WorkerHandle::shutdown`] waits for in-flight jobs before cancelling them.
    pub shutdown_timeout: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(250),
            batch_size: 100,
            concurrency: 64,
            job_timeout: Duration::from_secs(300),
            heartbeat: Duration::from_secs(10),
            missed_heartbeats: 3,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl QueueSettings {
    /// The most handlers a worker can keep busy with `batch_size` jobs per fetch: apalis buffers
    /// 4 × `batch_size` lock/ack events and drains them only between batches, so more handlers
    /// than twice the batch stall on that buffer. Configuration checks `workers.concurrency`
    /// against this at start.
    pub fn max_concurrency(batch_size: usize) -> usize {
        batch_size.saturating_mul(2)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid queue settings: {0}")]
    InvalidSettings(&'static str),
    #[error("job queue setup failed: {0}")]
    Setup(String),
    #[error("job queue database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("job queue error: {0}")]
    Backend(String),
    #[error("cannot encode job: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<apalis_postgres::Error> for JobError {
    fn from(e: apalis_postgres::Error) -> Self {
        match e {
            apalis_postgres::Error::Database(e) => Self::Db(e),
            e => Self::Backend(e.to_string()),
        }
    }
}

impl From<apalis_sqlite::Error> for JobError {
    fn from(e: apalis_sqlite::Error) -> Self {
        match e {
            apalis_sqlite::Error::Database(e) => Self::Db(e),
            e => Self::Backend(e.to_string()),
        }
    }
}

/// The job queues of one process, over the store's pool.
#[derive(Clone, Debug)]
pub struct JobQueue {
    pool: Pool,
    settings: Arc<QueueSettings>,
    name: Arc<str>,
    starts: Arc<AtomicU64>,
}

impl JobQueue {
    /// Runs apalis's own migrations for the backend (idempotent) and returns the queue.
    ///
    /// SQLite: the migrations are run directly rather than through `SqliteStorage::setup`, which
    /// would also set `synchronous = OFF` on whichever pooled connection it ran on.
    /// PostgreSQL: `apalis` schema, its own `apalis._sqlx_migrations`, `CREATE EXTENSION hstore`.
    pub async fn setup(store: &Store, settings: QueueSettings) -> Result<Self, JobError> {
        validate(&settings)?;
        let pool = store.pool().clone();
        match &pool {
            Pool::Sqlite(p) => apalis_sqlite::SqliteStorage::migrations()
                .run(p)
                .await
                .map_err(|e| JobError::Setup(e.to_string()))?,
            Pool::Postgres(p) => apalis_postgres::PostgresStorage::setup(p)
                .await
                .map_err(|e| JobError::Setup(e.to_string()))?,
        }
        Ok(Self {
            pool,
            settings: Arc::new(settings),
            name: process_worker_name().into(),
            starts: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Pushes jobs in one transaction, each on its step's queue. Duplicates within one call are
    /// pushed once; across calls they are pushed again (harmless: the step fences on version).
    pub async fn push(&self, jobs: &[StepJob]) -> Result<(), JobError> {
        sql::push(&self.pool, jobs).await
    }

    /// Deletes our finished jobs (done, killed, failed without attempts left) whose `done_at`
    /// is at least `older_than` ago; returns how many. Also drops worker rows unseen for a day
    /// that no job refers to. Our own step-run history is what operators read.
    pub async fn purge_finished(&self, older_than: Duration) -> Result<u64, JobError> {
        sql::purge_finished(&self.pool, older_than).await
    }

    /// Reclaims the space of purged and updated jobs now rather than at autovacuum's next
    /// visit (PostgreSQL; a no-op on SQLite). Run it after purging.
    pub async fn vacuum(&self) -> Result<(), JobError> {
        sql::vacuum(&self.pool).await
    }

    /// Jobs of this step waiting or running.
    pub async fn pending(&self, step: Step) -> Result<u64, JobError> {
        sql::pending(&self.pool, step).await
    }

    /// Connection ids (sorted, distinct) that have a waiting or running job of this step.
    pub async fn live_connection_ids(&self, step: Step) -> Result<Vec<String>, JobError> {
        sql::live_connection_ids(&self.pool, step).await
    }

    /// Starts one worker pool per given step; each job calls `handler(job)`.
    ///
    /// The handler's error is logged and the job marked done (not retried by apalis). A handler
    /// that panics or exceeds `job_timeout` is treated the same way. A worker whose database
    /// connection fails is restarted under a new name (with backoff); its claimed jobs are
    /// re-enqueued once its heartbeat is stale. Dropping the handle stops the workers gracefully
    /// in the background; [`WorkerHandle::shutdown`] waits for them.
    pub fn start_workers<H, Fut>(&self, steps: &[Step], handler: H) -> WorkerHandle
    where
        H: Fn(StepJob) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        worker::start(self, steps, handler)
    }

    /// This process's worker name: `host-pid-suffix`. Each step's worker is named
    /// `{worker_name}/{step}/{n}`.
    pub fn worker_name(&self) -> &str {
        &self.name
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    fn next_worker_name(&self, step: Step) -> String {
        let n = self.starts.fetch_add(1, Ordering::Relaxed);
        format!("{}/{}/{}", self.name, step.name(), n)
    }
}

fn validate(s: &QueueSettings) -> Result<(), JobError> {
    if s.batch_size == 0 || s.concurrency == 0 {
        return Err(JobError::InvalidSettings(
            "batch_size and concurrency must be positive",
        ));
    }
    if s.concurrency > QueueSettings::max_concurrency(s.batch_size) {
        return Err(JobError::InvalidSettings(
            "concurrency must be at most twice batch_size",
        ));
    }
    if s.poll_interval < Duration::from_millis(10) || s.heartbeat < Duration::from_secs(1) {
        return Err(JobError::InvalidSettings(
            "poll_interval must be at least 10 ms and heartbeat at least 1 s (apalis keeps seconds)",
        ));
    }
    if s.missed_heartbeats == 0 {
        return Err(JobError::InvalidSettings(
            "missed_heartbeats must be positive",
        ));
    }
    Ok(())
}

/// `host-pid-suffix`: unique per process even when a container restarts with the same host
/// name and pid (apalis keeps a dead worker's jobs `Running` if its name is reused).
fn process_worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{host}-{}-{suffix}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_explicit_and_distinct() {
        let names: std::collections::HashSet<_> = Step::ALL.iter().map(|s| s.queue()).collect();
        assert_eq!(names.len(), 4);
        assert!(names.iter().all(|n| n.starts_with("tributary.")));
        assert_eq!(Step::Fetch.queue(), "tributary.fetch");
    }

    #[test]
    fn settings_are_validated() {
        assert!(validate(&QueueSettings::default()).is_ok());
        let bad = [
            QueueSettings {
                batch_size: 0,
                ..QueueSettings::default()
            },
            QueueSettings {
                concurrency: 64,
                batch_size: 10,
                ..QueueSettings::default()
            },
            QueueSettings {
                poll_interval: Duration::ZERO,
                ..QueueSettings::default()
            },
            QueueSettings {
                heartbeat: Duration::from_millis(500),
                ..QueueSettings::default()
            },
        ];
        for settings in bad {
            assert!(validate(&settings).is_err(), "{settings:?}");
        }
    }

    #[test]
    fn worker_names_are_unique_per_process_start() {
        let (a, b) = (process_worker_name(), process_worker_name());
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())));
    }
}
