//! The fleet at a glance (docs/operations.md#summary): aggregate queries only, each served by
//! an index but one: the rows holding a lease are found by one scan of `connections`, since
//! the lease columns have no index (docs/operations.md#connection-list says why). Error
//! codes come from their partial index, the last hour of `step_runs` from its `finished_at`
//! index, the queue depths from the job queue's own table.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, QueryResult, Statement};

use super::{
    job_error,
    stuck::{self, StuckBounds, StuckReason, StuckSettings},
};
use crate::{
    jobs,
    state::State,
    store::{PartnerBreaker, Result, Step, Store, StoreError, doctor::checks::Binder},
};

/// Connections of one partner in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerStateCount {
    pub partner: String,
    pub state: State,
    pub count: u64,
}

/// Jobs of one step waiting or running in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    pub step: Step,
    pub pending: u64,
}

/// What one step's runs did in the last hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecentRuns {
    pub runs: u64,
    /// Runs that ended with an error code.
    pub errors: u64,
    pub inserted: u64,
    pub updated: u64,
}

/// Counts of the whole fleet as of `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsSummary {
    pub at: DateTime<Utc>,
    pub total: u64,
    /// Partner, then state, ascending; only the pairs that have connections.
    pub by_partner_state: Vec<PartnerStateCount>,
    pub paused: u64,
    /// May transfer, not paused, and due now.
    pub due_now: u64,
    /// Of those, due for longer than the overdue threshold (`transfer_overdue`).
    pub overdue: u64,
    /// How long the transfer due longest has been due (the scheduling lag; overdue when
    /// beyond the threshold).
    pub oldest_due: Option<Duration>,
    /// Transfers started and holding a live lease.
    pub in_flight: u64,
    /// Claimed by a dispatcher, not started yet, claim live.
    pub claimed: u64,
    /// Every step; zeros when the queue's tables do not exist.
    pub queue: Vec<QueueDepth>,
    /// Every step's runs finished in the hour before `at`.
    pub last_hour: Vec<(Step, RecentRuns)>,
    /// Connections by `last_error_code`, most first.
    pub errors: Vec<(String, u64)>,
    /// Every reason, in [`StuckReason::ALL`] order, with how many connections it holds for.
    pub stuck: Vec<(StuckReason, u64)>,
    /// Connections stuck for at least one reason.
    pub stuck_connections: u64,
    /// The partners' circuit breakers that ever tripped, by partner (a partner without one is
    /// closed; docs/operations.md#partner-incidents).
    pub breakers: Vec<PartnerBreaker>,
}

fn count(row: &QueryResult, column: &str) -> Result<u64> {
    let n: Option<i64> = row.try_get("", column)?;
    Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

fn sum(expr: &str) -> String {
    format!("CAST(SUM(CASE WHEN {expr} THEN 1 ELSE 0 END) AS BIGINT)")
}

impl Store {
    /// Counts of the whole fleet as of `now`. Reads only.
    pub async fn ops_summary(
        &self,
        now: DateTime<Utc>,
        settings: &StuckSettings,
    ) -> Result<OpsSummary> {
        let k = self.stuck_bounds(now, settings).await?;
        let mut summary = OpsSummary {
            at: now,
            total: 0,
            by_partner_state: Vec::new(),
            paused: 0,
            due_now: 0,
            overdue: 0,
            oldest_due: None,
            in_flight: 0,
            claimed: 0,
            queue: Vec::new(),
            last_hour: Vec::new(),
            errors: Vec::new(),
            stuck: StuckReason::ALL.into_iter().map(|r| (r, 0)).collect(),
            stuck_connections: 0,
            breakers: Vec::new(),
        };
        self.count_states(&mut summary).await?;
        self.count_due(&mut summary, &k).await?;
        self.count_stuck(&mut summary, &k).await?;
        summary.errors = self.error_counts().await?;
        summary.last_hour = self.recent_runs(now - TimeDelta::hours(1)).await?;
        summary.queue = self.queue_depths().await?;
        summary.breakers = self.breakers().await?;
        Ok(summary)
    }

    /// Connections by partner and state (an index-only count where the backend can), and the
    /// paused ones (their partial index).
    async fn count_states(&self, summary: &mut OpsSummary) -> Result<()> {
        let backend = self.db.get_database_backend();
        let sql = "SELECT connections.partner AS partner, connections.state AS state, \
             COUNT(*) AS n FROM connections GROUP BY connections.partner, connections.state \
             ORDER BY connections.partner, connections.state";
        let rows = self
            .db
            .query_all_raw(Statement::from_string(backend, sql))
            .await?;
        for row in &rows {
            let state: String = row.try_get("", "state")?;
            let state = state
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("unknown state {state:?}")))?;
            let n = count(row, "n")?;
            summary.total += n;
            summary.by_partner_state.push(PartnerStateCount {
                partner: row.try_get("", "partner")?,
                state,
                count: n,
            });
        }
        let sql = "SELECT COUNT(*) AS n FROM connections WHERE connections.paused = TRUE";
        if let Some(row) = self
            .db
            .query_one_raw(Statement::from_string(backend, sql))
            .await?
        {
            summary.paused = count(&row, "n")?;
        }
        Ok(())
    }

    /// Due and overdue transfers (a range of the `next_sync_at` index).
    async fn count_due(&self, summary: &mut OpsSummary, k: &StuckBounds) -> Result<()> {
        let backend = self.db.get_database_backend();
        let mut b = Binder::default();
        let overdue = stuck::overdue(&mut b, k, k.overdue_before);
        let sql = format!(
            "SELECT COUNT(*) AS due, {sum} AS overdue, \
             MIN(connections.next_sync_at) AS oldest \
             FROM connections WHERE connections.state IN {states} \
             AND {unpaused} AND connections.next_sync_at <= {now}",
            sum = sum(&overdue),
            unpaused = stuck::unpaused(&mut b, k),
            states = State::transfer_guard_sql(),
            now = b.bind(summary.at),
        );
        if let Some(row) = self.db.query_one_raw(b.statement(backend, sql)).await? {
            summary.due_now = count(&row, "due")?;
            summary.overdue = count(&row, "overdue")?;
            let oldest: Option<DateTime<Utc>> = row.try_get("", "oldest")?;
            summary.oldest_due = oldest.map(|due| (summary.at - due).to_std().unwrap_or_default());
        }
        Ok(())
    }

    /// Live leases and claims, and the connections of each stuck reason and of any: the rows
    /// holding a lease read among the due ones (their own columns have no index), one index
    /// range per other reason, in one statement.
    async fn count_stuck(&self, summary: &mut OpsSummary, k: &StuckBounds) -> Result<()> {
        let backend = self.db.get_database_backend();
        let mut b = Binder::default();
        let now = summary.at;
        let mut leased = vec![
            "connections.id AS id".to_owned(),
            format!(
                "CASE WHEN connections.sync_lease_token IS NOT NULL \
                 AND connections.sync_lease_until >= {} THEN 1 ELSE 0 END AS running",
                b.bind(now)
            ),
            format!(
                "CASE WHEN connections.sync_lease_token IS NULL \
                 AND connections.sync_lease_until >= {} THEN 1 ELSE 0 END AS claimed",
                b.bind(now)
            ),
        ];
        let mut hits = Vec::new();
        for (i, reason) in StuckReason::ALL.into_iter().enumerate() {
            if stuck::needs_scan(reason) {
                leased.push(format!("{} AS stuck_{i}", stuck::flag(reason, &mut b, k)));
                hits.push(format!(
                    "SELECT id, {i} AS r FROM leased WHERE stuck_{i} = 1"
                ));
            } else {
                hits.push(format!(
                    "SELECT connections.id AS id, {i} AS r FROM connections WHERE {}",
                    stuck::predicate(reason, &mut b, k)
                ));
            }
        }
        // Held leases are on due rows only (`stuck::due_now`): the `next_sync_at` index.
        let due = stuck::due_now(&mut b, k);
        let sql = format!(
            "WITH leased AS MATERIALIZED (SELECT {leased} FROM connections \
             WHERE {due} AND {lease}), \
             hits AS MATERIALIZED ({hits}) \
             SELECT r AS k, COUNT(*) AS n FROM hits GROUP BY r \
             UNION ALL SELECT -1, COUNT(DISTINCT id) FROM hits \
             UNION ALL SELECT -2, CAST(SUM(running) AS BIGINT) FROM leased \
             UNION ALL SELECT -3, CAST(SUM(claimed) AS BIGINT) FROM leased",
            leased = leased.join(", "),
            lease = stuck::LEASED,
            hits = hits.join(" UNION ALL "),
        );
        let rows = self.db.query_all_raw(b.statement(backend, sql)).await?;
        for row in &rows {
            let key: i64 = row
                .try_get::<i64>("", "k")
                .or_else(|_| row.try_get::<i32>("", "k").map(i64::from))?;
            let n = count(row, "n")?;
            match key {
                -1 => summary.stuck_connections = n,
                -2 => summary.in_flight = n,
                -3 => summary.claimed = n,
                i => {
                    if let Some((_, total)) = usize::try_from(i)
                        .ok()
                        .and_then(|i| summary.stuck.get_mut(i))
                    {
                        *total = n;
                    }
                }
            }
        }
        Ok(())
    }

    async fn error_counts(&self) -> Result<Vec<(String, u64)>> {
        let backend = self.db.get_database_backend();
        let sql = "SELECT connections.last_error_code AS code, COUNT(*) AS n FROM connections \
             WHERE connections.last_error_code IS NOT NULL \
             GROUP BY connections.last_error_code ORDER BY n DESC, code";
        let rows = self
            .db
            .query_all_raw(Statement::from_string(backend, sql))
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("", "code")?, count(row, "n")?)))
            .collect()
    }

    async fn recent_runs(&self, since: DateTime<Utc>) -> Result<Vec<(Step, RecentRuns)>> {
        let backend = self.db.get_database_backend();
        let mut b = Binder::default();
        let sql = format!(
            "SELECT step, COUNT(*) AS runs, {errors} AS errors, \
             CAST(SUM(inserted) AS BIGINT) AS inserted, CAST(SUM(updated) AS BIGINT) AS updated \
             FROM step_runs WHERE finished_at >= {since} GROUP BY step",
            errors = sum("error_code IS NOT NULL"),
            since = b.bind(since),
        );
        let rows = self.db.query_all_raw(b.statement(backend, sql)).await?;
        let mut out: Vec<(Step, RecentRuns)> = Step::ALL
            .into_iter()
            .map(|s| (s, RecentRuns::default()))
            .collect();
        for row in &rows {
            let step: String = row.try_get("", "step")?;
            if let Some((_, runs)) = out.iter_mut().find(|(s, _)| s.as_str() == step) {
                *runs = RecentRuns {
                    runs: count(row, "runs")?,
                    errors: count(row, "errors")?,
                    inserted: count(row, "inserted")?,
                    updated: count(row, "updated")?,
                };
            }
        }
        Ok(out)
    }

    async fn queue_depths(&self) -> Result<Vec<QueueDepth>> {
        let present = self.job_tables_present().await?;
        let mut out = Vec::with_capacity(Step::ALL.len());
        for step in Step::ALL {
            let queue = match step {
                Step::Fetch => jobs::Step::Fetch,
                Step::Refresh => jobs::Step::Refresh,
                Step::Revoke => jobs::Step::Revoke,
                Step::Deliver => jobs::Step::Deliver,
            };
            let pending = if present {
                jobs::sql::pending(&self.pool, queue)
                    .await
                    .map_err(job_error)?
            } else {
                0
            };
            out.push(QueueDepth { step, pending });
        }
        Ok(out)
    }
}
