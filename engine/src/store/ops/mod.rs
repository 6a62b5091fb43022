//! What operators see of the fleet (docs/operations.md#stuck): reads only.
//!
//! - `stuck.rs`: the stuck reasons, their thresholds and one predicate each (the doctor's text
//!   where the condition is the doctor's).
//! - `list.rs`: [`ConnectionFilter`] and the keyset-paged list with each row's stuck reasons.
//! - `summary.rs`: [`OpsSummary`], aggregate counts of the whole fleet.
//! - `console_series.rs`: [`RunSeries`], step runs per partner over time (the console's charts).
//!
//! A stuck reason about a lost job looks into the job queue's table (the connections live
//! fetch jobs name); a database whose queue was never set up has no live job at all.

mod console_series;
mod list;
mod stuck;
mod summary;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

use self::stuck::StuckBounds;
pub use self::{
    console_series::{MAX_RUN_BUCKETS, RunBucket, RunSeries},
    list::{
        ConnectionFilter, ConnectionPage, ListedConnection, MAX_LIST_PAGE, ReasonNotStuck,
        StuckFilter,
    },
    stuck::{StuckReason, StuckSettings},
    summary::{OpsSummary, PartnerStateCount, QueueDepth, RecentRuns},
};
use super::{Result, Store};
use crate::jobs::{self, JobError};

fn job_error(e: JobError) -> DbErr {
    DbErr::Custom(format!("cannot read the job queue: {e}"))
}

impl Store {
    /// Whether the job queue's tables exist in this database (`JobQueue::setup` creates them).
    pub(in crate::store) async fn job_tables_present(&self) -> Result<bool> {
        let backend = self.db.get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => {
                "SELECT CASE WHEN to_regclass('apalis.jobs') IS NULL THEN 0 ELSE 1 END AS present"
            }
            _ => {
                "SELECT COUNT(*) AS present FROM sqlite_master WHERE type = 'table' AND name = 'Jobs'"
            }
        };
        let row = self
            .db
            .query_one_raw(Statement::from_string(backend, sql))
            .await?;
        let present: i64 = match row {
            Some(row) => row
                .try_get::<i64>("", "present")
                .or_else(|_| row.try_get::<i32>("", "present").map(i64::from))?,
            None => 0,
        };
        Ok(present != 0)
    }

    /// Whether a queued or running fetch job names connection `id` (false when the job tables
    /// are not there yet).
    pub(in crate::store) async fn fetch_job_live(&self, id: &str) -> Result<bool> {
        if !self.job_tables_present().await? {
            return Ok(false);
        }
        let live = jobs::sql::live_connection_ids(&self.pool, jobs::Step::Fetch)
            .await
            .map_err(job_error)?;
        Ok(live.iter().any(|live| live == id))
    }

    /// The bounds of every stuck reason as of `now`, with the connections live fetch jobs name
    /// (read first: a claim made after this read is younger than the claim grace).
    pub(in crate::store) async fn stuck_bounds(
        &self,
        now: DateTime<Utc>,
        settings: &StuckSettings,
    ) -> Result<StuckBounds> {
        let live = if self.job_tables_present().await? {
            jobs::sql::live_connection_ids(&self.pool, jobs::Step::Fetch)
                .await
                .map_err(job_error)?
        } else {
            Vec::new()
        };
        let mut bounds = StuckBounds::new(now, settings, &live, self.db.get_database_backend());
        // Partners out (their circuit breaker not closed) wait for the partner, like paused
        // ones (docs/operations.md#partner-incidents).
        let out: Vec<String> = self
            .breakers()
            .await?
            .into_iter()
            .filter(|b| b.state != crate::store::BreakerState::Closed)
            .map(|b| b.partner)
            .collect();
        bounds.pauses = self.pause_filter().await?.also_skipping(&out);
        Ok(bounds)
    }
}
