//! Step runs over time, per partner, for the ops console's charts (docs/console.md#console):
//! fetch throughput and errors by partner, in fixed time buckets. One aggregate query over the
//! `finished_at` index of `step_runs`; the bucket of a run is found by comparing its end with
//! the bucket bounds (bound values, so the same text serves SQLite and PostgreSQL).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::ConnectionTrait;

use crate::store::{Result, Store, doctor::checks::Binder};

/// Most buckets one read returns.
pub const MAX_RUN_BUCKETS: u32 = 96;

/// What one partner's step runs did in one time bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunBucket {
    /// Fetch runs that ended in the bucket.
    pub fetch_runs: u64,
    /// Records those fetch runs inserted or updated.
    pub records: u64,
    /// Runs of any step that ended with an error code.
    pub errors: u64,
}

/// Step runs per partner and bucket: `buckets[i]` covers `[start + i·width, start + (i+1)·width)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSeries {
    pub start: DateTime<Utc>,
    pub width: Duration,
    /// Partner name, then one entry per bucket (zeros included); partners ascending.
    pub partners: Vec<(String, Vec<RunBucket>)>,
}

fn count(row: &sea_orm::QueryResult, column: &str) -> Result<u64> {
    let n: Option<i64> = row.try_get("", column)?;
    Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

impl Store {
    /// The step runs that ended in the `buckets` buckets of `width` ending at `end`, by the
    /// partner of their connection. Runs are kept `workers.run_retention_days`, so older
    /// buckets are empty. Reads only.
    pub async fn run_series(
        &self,
        end: DateTime<Utc>,
        width: Duration,
        buckets: u32,
    ) -> Result<RunSeries> {
        let buckets = buckets.clamp(1, MAX_RUN_BUCKETS);
        let step = TimeDelta::from_std(width).unwrap_or(TimeDelta::hours(1));
        let start = end - step * i32::try_from(buckets).unwrap_or(1);
        let mut b = Binder::default();
        let from = b.bind(start);
        let to = b.bind(end);
        // The bucket of a run: the first upper bound its end is below.
        let arms: Vec<String> = (1..buckets)
            .map(|i| {
                let bound = start + step * i32::try_from(i).unwrap_or(0);
                format!("WHEN r.finished_at < {} THEN {}", b.bind(bound), i - 1)
            })
            .collect();
        let bucket = if arms.is_empty() {
            "0".to_owned()
        } else {
            format!("CASE {} ELSE {} END", arms.join(" "), buckets - 1)
        };
        let sql = format!(
            "SELECT c.partner AS partner, {bucket} AS bucket, \
             CAST(SUM(CASE WHEN r.step = 'fetch' THEN 1 ELSE 0 END) AS BIGINT) AS fetch_runs, \
             CAST(SUM(CASE WHEN r.step = 'fetch' THEN r.inserted + r.updated ELSE 0 END) \
             AS BIGINT) AS records, \
             CAST(SUM(CASE WHEN r.error_code IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS errors \
             FROM step_runs r JOIN connections c ON c.id = r.connection_id \
             WHERE r.finished_at >= {from} AND r.finished_at < {to} \
             GROUP BY c.partner, {bucket} ORDER BY c.partner"
        );
        let backend = self.db.get_database_backend();
        let rows = self.db.query_all_raw(b.statement(backend, sql)).await?;
        let mut partners: Vec<(String, Vec<RunBucket>)> = Vec::new();
        for row in &rows {
            let partner: String = row.try_get("", "partner")?;
            let index: i64 = row
                .try_get::<i64>("", "bucket")
                .or_else(|_| row.try_get::<i32>("", "bucket").map(i64::from))?;
            if partners.last().is_none_or(|(p, _)| *p != partner) {
                partners.push((partner, vec![RunBucket::default(); buckets as usize]));
            }
            let Some(slot) = partners.last_mut().and_then(|(_, series)| {
                usize::try_from(index).ok().and_then(|i| series.get_mut(i))
            }) else {
                continue;
            };
            *slot = RunBucket {
                fetch_runs: count(row, "fetch_runs")?,
                records: count(row, "records")?,
                errors: count(row, "errors")?,
            };
        }
        Ok(RunSeries {
            start,
            width,
            partners,
        })
    }
}
