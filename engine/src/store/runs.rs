//! Step runs (docs/operations.md#step-runs): what each run of a step did, for operators.
//!
//! A transfer's run is tallied on its lease ([`FetchRun`]) as its windows commit and written
//! in the transaction that ends the run: the last window's group commit for a completed run,
//! `finish_sync`'s transaction for one that yielded or failed. No round trip of its own on the
//! hot path. Refresh, revoke and deliver runs (an hour apart per connection, not per window)
//! are written by [`Store::record_runs`] after the step. A run that lost its lease, or a crash,
//! records nothing: the run that takes over records its own.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::{Result, Store, StoreError, entities::step_run, transfer::ChunkStats};
use crate::ids::ConnectionId;

/// The steps that record runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Fetch,
    Refresh,
    Revoke,
    Deliver,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::Fetch, Step::Refresh, Step::Revoke, Step::Deliver];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Fetch => "fetch",
            Step::Refresh => "refresh",
            Step::Revoke => "revoke",
            Step::Deliver => "deliver",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|step| step.as_str() == s)
    }
}

/// Records a run wrote, summed over its windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Partner records skipped for the first time.
    pub skipped: u64,
    /// Windows committed.
    pub windows: u64,
}

impl RunCounts {
    /// Adds one committed window's counts.
    pub fn add_window(&mut self, stats: ChunkStats) {
        self.inserted += stats.inserted;
        self.updated += stats.updated;
        self.unchanged += stats.unchanged;
        self.skipped += stats.newly_skipped;
        self.windows += 1;
    }
}

/// The partner's answers during a run: HTTP status (or `timeout`, `transport`) → count.
pub type Statuses = BTreeMap<String, u32>;

/// The partner's answers during a run as they come: shared by the step's HTTP clients, which
/// add to it, and the run's lease, which writes it when the run ends.
#[derive(Debug, Clone, Default)]
pub struct StatusTally(Arc<Mutex<Statuses>>);

impl StatusTally {
    pub fn add(&self, answer: &str) {
        let mut statuses = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *statuses.entry(answer.to_owned()).or_default() += 1;
    }

    pub fn snapshot(&self) -> Statuses {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One run of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRun {
    pub connection_id: ConnectionId,
    pub step: Step,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// How it ended: `completed`, `yielded`, `failed` (fetch); `refreshed`, `deferred`,
    /// `revoked` (refresh); `revoked`, `retrying`, `abandoned` (revoke); `sent`, `retrying`,
    /// `abandoned` (deliver).
    pub outcome: String,
    pub counts: RunCounts,
    pub statuses: Statuses,
    /// The error's stable code when it did not succeed.
    pub error_code: Option<String>,
}

impl StepRun {
    pub fn duration(&self) -> Duration {
        (self.finished_at - self.started_at)
            .to_std()
            .unwrap_or_default()
    }

    pub(super) fn active_model(&self) -> step_run::ActiveModel {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        step_run::ActiveModel {
            id: NotSet,
            connection_id: Set(self.connection_id.to_string()),
            step: Set(self.step.as_str().to_owned()),
            started_at: Set(self.started_at),
            finished_at: Set(self.finished_at),
            outcome: Set(self.outcome.clone()),
            inserted: Set(count(self.counts.inserted)),
            updated: Set(count(self.counts.updated)),
            unchanged: Set(count(self.counts.unchanged)),
            skipped: Set(count(self.counts.skipped)),
            windows: Set(count(self.counts.windows)),
            statuses: Set((!self.statuses.is_empty())
                .then(|| serde_json::to_string(&self.statuses).unwrap_or_default())),
            error_code: Set(self.error_code.as_deref().map(crate::text::storable)),
            duration_ms: Set(i64::try_from(self.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }

    fn from_row(row: step_run::Model) -> Result<(i64, Self)> {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let corrupt = |what: &str| StoreError::Corrupt(format!("step run {}: {what}", row.id));
        let run = StepRun {
            connection_id: row
                .connection_id
                .parse::<ConnectionId>()
                .map_err(|_| corrupt("connection id"))?,
            step: Step::parse(&row.step).ok_or_else(|| corrupt("step"))?,
            started_at: row.started_at,
            finished_at: row.finished_at,
            outcome: row.outcome.clone(),
            counts: RunCounts {
                inserted: count(row.inserted),
                updated: count(row.updated),
                unchanged: count(row.unchanged),
                skipped: count(row.skipped),
                windows: count(row.windows),
            },
            statuses: match &row.statuses {
                Some(text) => serde_json::from_str(text).map_err(|_| corrupt("statuses"))?,
                None => Statuses::new(),
            },
            error_code: row.error_code.clone(),
        };
        Ok((row.id, run))
    }
}

/// A transfer's run so far, kept on its lease.
#[derive(Debug, Clone)]
pub struct FetchRun {
    pub started_at: DateTime<Utc>,
    /// The connection's newest data time when the run started (did the run move it?).
    pub(super) started_latest: Option<DateTime<Utc>>,
    pub counts: RunCounts,
    /// The partner's answers so far; the fetch step's clients add to it.
    pub statuses: StatusTally,
}

impl FetchRun {
    pub(super) fn new(started_at: DateTime<Utc>, latest: Option<DateTime<Utc>>) -> Self {
        Self {
            started_at,
            started_latest: latest,
            counts: RunCounts::default(),
            statuses: StatusTally::default(),
        }
    }

    /// The run as it ends now.
    pub(super) fn ended(
        &self,
        id: ConnectionId,
        now: DateTime<Utc>,
        outcome: &str,
        error_code: Option<&str>,
    ) -> StepRun {
        StepRun {
            connection_id: id,
            step: Step::Fetch,
            started_at: self.started_at,
            finished_at: now,
            outcome: outcome.to_owned(),
            counts: self.counts,
            statuses: self.statuses.snapshot(),
            error_code: error_code.map(str::to_owned),
        }
    }
}

/// How long and how many step runs are kept (docs/operations.md#step-runs).
#[derive(Debug, Clone, Copy)]
pub struct RunRetention {
    pub keep_for: Duration,
    pub max_rows: u64,
}

impl Default for RunRetention {
    fn default() -> Self {
        Self {
            keep_for: Duration::from_secs(7 * 24 * 3600),
            max_rows: 5_000_000,
        }
    }
}

/// Rows one purge statement deletes at most (short transactions beside the transfers).
const PURGE_BATCH: u64 = 10_000;

impl Store {
    /// With `false`, no step run is written: the benchmark measures their cost this way
    /// (`workers.record_step_runs`, docs/operations.md#step-runs).
    pub fn with_step_runs(mut self, record: bool) -> Self {
        self.record_runs = record;
        self
    }

    /// The runs this store writes: `runs`, or none when recording is off.
    pub(super) fn recorded<'a>(&self, runs: &'a [StepRun]) -> &'a [StepRun] {
        if self.record_runs { runs } else { &[] }
    }

    /// Writes runs (one statement).
    pub async fn record_runs(&self, runs: &[StepRun]) -> Result<()> {
        insert_runs(&self.db, self.recorded(runs)).await?;
        observed(runs);
        Ok(())
    }

    /// A connection's runs, newest first: `before` a run id (keyset paging), at most `limit`.
    pub async fn step_runs(
        &self,
        id: &ConnectionId,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<(i64, StepRun)>> {
        use step_run::Column as C;
        let mut query = step_run::Entity::find().filter(C::ConnectionId.eq(id.to_string()));
        if let Some(before) = before {
            query = query.filter(C::Id.lt(before));
        }
        query
            .order_by_desc(C::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(StepRun::from_row)
            .collect()
    }

    /// Deletes runs that finished before `now - keep_for`, and the oldest beyond `max_rows`,
    /// in batches; returns how many.
    pub async fn purge_runs(&self, now: DateTime<Utc>, retention: RunRetention) -> Result<u64> {
        use step_run::Column as C;
        let cutoff = now - super::transfer::delta(retention.keep_for);
        let mut purged = 0;
        loop {
            // Ids only grow with time, so the oldest runs are the lowest ids.
            let expired: Vec<i64> = step_run::Entity::find()
                .select_only()
                .column(C::Id)
                .filter(C::FinishedAt.lt(cutoff))
                .order_by_asc(C::Id)
                .limit(PURGE_BATCH)
                .into_tuple()
                .all(&self.db)
                .await?;
            let beyond_cap = match expired.is_empty() {
                false => None,
                true => {
                    step_run::Entity::find()
                        .select_only()
                        .column(C::Id)
                        .order_by_desc(C::Id)
                        .offset(retention.max_rows)
                        .limit(1)
                        .into_tuple::<i64>()
                        .one(&self.db)
                        .await?
                }
            };
            let deleted = match (expired.last(), beyond_cap) {
                (Some(&last), _) => {
                    step_run::Entity::delete_many()
                        .filter(C::Id.lte(last))
                        .filter(C::FinishedAt.lt(cutoff))
                        .exec(&self.db)
                        .await?
                        .rows_affected
                }
                (None, Some(last)) => {
                    let first = last.saturating_sub(i64::try_from(PURGE_BATCH).unwrap_or(0));
                    step_run::Entity::delete_many()
                        .filter(C::Id.lte(last))
                        .filter(C::Id.gt(first))
                        .exec(&self.db)
                        .await?
                        .rows_affected
                }
                (None, None) => 0,
            };
            purged += deleted;
            if deleted == 0 {
                return Ok(purged);
            }
        }
    }
}

/// Inserts runs with any connection or transaction.
pub(super) async fn insert_runs(db: &impl ConnectionTrait, runs: &[StepRun]) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    step_run::Entity::insert_many(runs.iter().map(StepRun::active_model))
        .exec(db)
        .await?;
    Ok(())
}

/// Counts ended runs in the metrics, once their end is committed (docs/operations.md#metrics).
pub(super) fn observed(runs: &[StepRun]) {
    for run in runs {
        crate::metrics::step_run(run.step, &run.outcome, run.duration());
    }
}
