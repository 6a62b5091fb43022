//! Queries on apalis's tables: `apalis.jobs` / `apalis.workers` on PostgreSQL, `Jobs` /
//! `Workers` on SQLite. Statuses are apalis's: `Pending`, `Queued` (claimed, not started),
//! `Running`, `Done`, `Failed`, `Killed`. Only rows of our queues (`tributary.*`) are touched.

use std::{collections::BTreeSet, time::Duration};

use apalis::prelude::TaskBuilder;
use sqlx::Row as _;

use super::{JobError, Step, StepJob};
use crate::store::Pool;

/// Rows deleted per statement, so a large purge never holds long locks.
const PURGE_CHUNK: i64 = 5_000;
/// Worker rows unseen for this long, with no job referring to them, are deleted.
const STALE_WORKER_SECS: i64 = 86_400;

fn queues() -> Vec<&'static str> {
    Step::ALL.iter().map(|s| s.queue()).collect()
}

/// Encoded payloads of one step's jobs.
type Payloads = Vec<Vec<u8>>;

/// Groups by step in a stable order and drops exact duplicates.
fn group(jobs: &[StepJob]) -> Result<Vec<(Step, Payloads)>, JobError> {
    let mut seen = std::collections::HashSet::new();
    let mut groups: Vec<(Step, Payloads)> = Step::ALL.iter().map(|s| (*s, vec![])).collect();
    for job in jobs {
        if seen.insert(job) {
            let bytes = serde_json::to_vec(job)?;
            let slot = groups.iter_mut().find(|(s, _)| *s == job.step);
            if let Some((_, payloads)) = slot {
                payloads.push(bytes);
            }
        }
    }
    groups.retain(|(_, p)| !p.is_empty());
    Ok(groups)
}

/// One attempt only: a job apalis marks `Failed` is finished, never retried immediately.
fn task(payload: Vec<u8>) -> apalis::prelude::Task<Vec<u8>> {
    TaskBuilder::new(payload).max_attempts(1).build()
}

pub(super) async fn push(pool: &Pool, jobs: &[StepJob]) -> Result<(), JobError> {
    let groups = group(jobs)?;
    if groups.is_empty() {
        return Ok(());
    }
    match pool {
        Pool::Postgres(p) => {
            let mut tx = p.begin().await?;
            for (step, payloads) in groups {
                let tasks = payloads.into_iter().map(task).collect();
                apalis_postgres::queries::push_tasks(&mut *tx, step.queue(), tasks).await?;
            }
            tx.commit().await?;
        }
        Pool::Sqlite(p) => {
            let mut tx = p.begin().await?;
            for (step, payloads) in groups {
                let tasks: Vec<_> = payloads.into_iter().map(task).collect();
                apalis_sqlite::queries::push_tasks(&mut *tx, step.queue(), &tasks).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

const PG_PURGE: &str = "DELETE FROM apalis.jobs WHERE id IN (
    SELECT id FROM apalis.jobs
    WHERE job_type = ANY($1)
      AND (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))
      AND done_at <= now() - make_interval(secs => $2)
    LIMIT $3)";

const PG_PURGE_WORKERS: &str = "DELETE FROM apalis.workers w
    WHERE w.worker_type = ANY($1)
      AND w.last_seen < now() - make_interval(secs => $2)
      AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.lock_by = w.id)";

const SQLITE_PURGE: &str = "DELETE FROM Jobs WHERE id IN (
    SELECT id FROM Jobs
    WHERE job_type IN (?1, ?2, ?3, ?4)
      AND (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))
      AND done_at <= CAST(strftime('%s', 'now') AS INTEGER) - ?5
    LIMIT ?6)";

const SQLITE_PURGE_WORKERS: &str = "DELETE FROM Workers
    WHERE worker_type IN (?1, ?2, ?3, ?4)
      AND last_seen < CAST(strftime('%s', 'now') AS INTEGER) - ?5
      AND NOT EXISTS (SELECT 1 FROM Jobs WHERE Jobs.lock_by = Workers.id)";

/// PostgreSQL: reclaims the dead row versions that every job leaves behind (insert, two
/// updates, a delete). Autovacuum visits a table at most once a minute by default; at 1,000
/// jobs/s that is 60,000+ dead versions, which apalis's fetch and ack and our pending count
/// wade through (measured: 6–10 ms per statement instead of well under 1 ms). `SKIP_LOCKED`:
/// when another process is vacuuming it already, skip. SQLite has nothing to reclaim.
pub(super) async fn vacuum(pool: &Pool) -> Result<(), JobError> {
    if let Pool::Postgres(p) = pool {
        // The simple protocol: VACUUM cannot run in the extended protocol's implicit block.
        sqlx::raw_sql("VACUUM (SKIP_LOCKED) apalis.jobs, apalis.workers")
            .execute(p)
            .await?;
    }
    Ok(())
}

pub(super) async fn purge_finished(pool: &Pool, older_than: Duration) -> Result<u64, JobError> {
    let queues = queues();
    let mut total = 0;
    match pool {
        Pool::Postgres(p) => {
            loop {
                let n = sqlx::query(PG_PURGE)
                    .bind(&queues)
                    .bind(older_than.as_secs_f64())
                    .bind(PURGE_CHUNK)
                    .execute(p)
                    .await?
                    .rows_affected();
                total += n;
                if n < PURGE_CHUNK as u64 {
                    break;
                }
            }
            sqlx::query(PG_PURGE_WORKERS)
                .bind(&queues)
                .bind(STALE_WORKER_SECS as f64)
                .execute(p)
                .await?;
        }
        Pool::Sqlite(p) => {
            let secs = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
            loop {
                let n = bind_queues(sqlx::query(SQLITE_PURGE), &queues)
                    .bind(secs)
                    .bind(PURGE_CHUNK)
                    .execute(p)
                    .await?
                    .rows_affected();
                total += n;
                if n < PURGE_CHUNK as u64 {
                    break;
                }
            }
            bind_queues(sqlx::query(SQLITE_PURGE_WORKERS), &queues)
                .bind(STALE_WORKER_SECS)
                .execute(p)
                .await?;
        }
    }
    Ok(total)
}

fn bind_queues<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    queues: &[&'static str],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    for queue in queues {
        q = q.bind(*queue);
    }
    q
}

/// Waiting (`Pending`, or `Failed` with attempts left), claimed (`Queued`) or `Running`.
macro_rules! live {
    ($p:literal) => {
        concat!(
            "job_type = ",
            $p,
            " AND (status IN ('Pending', 'Queued', 'Running') \
             OR (status = 'Failed' AND attempts < max_attempts))"
        )
    };
}

const PG_PENDING: &str = concat!("SELECT COUNT(*) FROM apalis.jobs WHERE ", live!("$1"));
const SQLITE_PENDING: &str = concat!("SELECT COUNT(*) FROM Jobs WHERE ", live!("?1"));
const PG_LIVE_JOBS: &str = concat!("SELECT job FROM apalis.jobs WHERE ", live!("$1"));
const SQLITE_LIVE_JOBS: &str = concat!("SELECT job FROM Jobs WHERE ", live!("?1"));

pub(crate) async fn pending(pool: &Pool, step: Step) -> Result<u64, JobError> {
    let count: i64 = match pool {
        Pool::Postgres(p) => sqlx::query(PG_PENDING)
            .bind(step.queue())
            .fetch_one(p)
            .await?
            .try_get(0)?,
        Pool::Sqlite(p) => sqlx::query(SQLITE_PENDING)
            .bind(step.queue())
            .fetch_one(p)
            .await?
            .try_get(0)?,
    };
    Ok(u64::try_from(count).unwrap_or(0))
}

pub(crate) async fn live_connection_ids(pool: &Pool, step: Step) -> Result<Vec<String>, JobError> {
    let payloads: Vec<Vec<u8>> = match pool {
        Pool::Postgres(p) => {
            sqlx::query_scalar(PG_LIVE_JOBS)
                .bind(step.queue())
                .fetch_all(p)
                .await?
        }
        Pool::Sqlite(p) => {
            sqlx::query_scalar(SQLITE_LIVE_JOBS)
                .bind(step.queue())
                .fetch_all(p)
                .await?
        }
    };
    let mut ids = BTreeSet::new();
    for payload in payloads {
        match serde_json::from_slice::<StepJob>(&payload) {
            Ok(job) => {
                ids.extend(job.connection_ids().map(str::to_owned));
            }
            Err(e) => tracing::warn!(queue = step.queue(), error = %e, "undecodable job payload"),
        }
    }
    Ok(ids.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(step: Step, id: &str, version: i64) -> StepJob {
        StepJob::new(step, id, version)
    }

    #[test]
    fn groups_by_step_and_drops_duplicates() {
        let jobs = [
            job(Step::Refresh, "a", 1),
            job(Step::Fetch, "a", 1),
            job(Step::Fetch, "a", 1),
            job(Step::Fetch, "a", 2),
        ];
        let groups = group(&jobs).unwrap();
        let sizes: Vec<_> = groups.iter().map(|(s, p)| (*s, p.len())).collect();
        assert_eq!(sizes, vec![(Step::Fetch, 2), (Step::Refresh, 1)]);
    }

    #[test]
    fn payload_is_plain_json() {
        let bytes = serde_json::to_vec(&job(Step::Deliver, "c", 7)).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"step":"deliver","connection_id":"c","version":7}"#
        );
    }
}
