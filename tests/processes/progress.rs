//! What the database shows: progress counts over all connections, and which worker process
//! runs or finished which fetch job (from apalis's `lock_by`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::CONNECTIONS;

/// Counts over all connections.
#[derive(Debug)]
pub struct Progress {
    /// Committed at least one window.
    pub started: i64,
    /// Finished a transfer: `last_sync_at` set, no lease, next run the interval ahead (a
    /// yielded transfer is due again at once).
    pub completed: i64,
    /// A lease (claim or transfer) is held.
    pub leased: i64,
    /// Not active, or an error or failure recorded.
    pub troubled: i64,
}

impl Progress {
    pub async fn read(pool: &PgPool, cursor: DateTime<Utc>) -> Self {
        let (started, completed, leased, troubled): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT \
               count(*) FILTER (WHERE fetched_through > $1), \
               count(*) FILTER (WHERE last_sync_at IS NOT NULL AND sync_lease_token IS NULL \
                 AND sync_lease_until IS NULL AND next_sync_at > now() + interval '30 minutes'), \
               count(*) FILTER (WHERE sync_lease_until IS NOT NULL), \
               count(*) FILTER (WHERE state <> 'active' OR failure_count > 0 \
                 OR last_error_code IS NOT NULL) \
             FROM connections",
        )
        .bind(cursor)
        .fetch_one(pool)
        .await
        .unwrap();
        Self {
            started,
            completed,
            leased,
            troubled,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} of {CONNECTIONS} connections started, {} completed, {} leased, {} troubled",
            self.started, self.completed, self.leased, self.troubled
        )
    }
}

/// The process id in an apalis worker name (`{host}-{pid}-{suffix}/{step}/{n}`).
fn pid_of(lock_by: &str) -> Option<u32> {
    let process = lock_by.split('/').next()?;
    let mut parts = process.rsplitn(3, '-');
    let _suffix = parts.next()?;
    parts.next()?.parse().ok()
}

/// Per process: the connections it is transferring right now with windows already committed
/// (its fetch job running, the transfer lease held, cursor moved, not finished).
pub async fn mid_transfer(pool: &PgPool, cursor: DateTime<Utc>) -> BTreeMap<u32, Vec<String>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT j.lock_by, c.id FROM apalis.jobs j \
         JOIN connections c ON c.id = convert_from(j.job, 'UTF8')::jsonb ->> 'connection_id' \
         WHERE j.job_type = 'tributary.fetch' AND j.status = 'Running' \
           AND j.lock_by IS NOT NULL AND c.sync_lease_token IS NOT NULL \
           AND c.fetched_through > $1 AND c.last_sync_at IS NULL",
    )
    .bind(cursor)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (lock_by, id) in rows {
        if let Some(pid) = pid_of(&lock_by) {
            out.entry(pid).or_default().push(id);
        }
    }
    out
}

/// Finished fetch jobs per worker process.
pub async fn finished_jobs_by_process(pool: &PgPool) -> BTreeMap<u32, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT lock_by, count(*) FROM apalis.jobs \
         WHERE job_type = 'tributary.fetch' AND status = 'Done' AND lock_by IS NOT NULL \
         GROUP BY lock_by",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for (lock_by, n) in rows {
        if let Some(pid) = pid_of(&lock_by) {
            *out.entry(pid).or_insert(0) += n;
        }
    }
    out
}
