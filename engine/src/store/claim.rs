//! Claims: a dispatcher takes due work out of our tables (the durable timers) as a lease, so
//! dispatchers of many processes share it without ever handing one item to two of them
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer).

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::{Result, Store, StoreError, transfer::delta};
use crate::{ids::ConnectionId, state::State, store::Claimed};

fn skip_locked(backend: DbBackend) -> &'static str {
    if backend == DbBackend::Postgres {
        "FOR UPDATE SKIP LOCKED"
    } else {
        ""
    }
}

impl Store {
    /// Claims up to `limit` due, unpaused connections that may transfer and whose lease is free
    /// or expired. Unpaused: neither the connection, nor its partner, nor everything
    /// (docs/actions.md#actions); with everything paused nothing is read at all. A partner
    /// whose circuit breaker is open gives at most its one probe.
    pub async fn claim_due(&self, limit: u64, dispatch_lease: Duration) -> Result<Vec<Claimed>> {
        let pauses = self.pause_filter().await?;
        if pauses.all {
            return Ok(Vec::new());
        }
        // Partners out (circuit breakers open or probing) are skipped like paused ones, but
        // for their probe (docs/operations.md#partner-incidents).
        let breakers = self.breaker_pass(&pauses, dispatch_lease).await?;
        let limit = limit.saturating_sub(breakers.probes.len() as u64);
        let (partners, skipped) = pauses.also_skipping(&breakers.skip).skip_partners(5);
        let now = self.clock.now();
        let until = now + delta(dispatch_lease);
        let backend = self.db.get_database_backend();
        let sql = format!(
            "UPDATE connections SET sync_lease_until = $1, sync_lease_token = NULL \
             WHERE id IN (SELECT id FROM connections \
                WHERE state IN {states} AND paused = $2 AND next_sync_at <= $3 \
                AND (sync_lease_until IS NULL OR sync_lease_until < $3){partners} \
                ORDER BY next_sync_at LIMIT $4 {lock}) \
             RETURNING id, version",
            states = State::transfer_guard_sql(),
            lock = skip_locked(backend),
        );
        let mut values = vec![until.into(), false.into(), now.into(), limit_value(limit)];
        values.extend(skipped);
        let mut claimed = breakers.probes;
        claimed.extend(self.claimed(backend, sql, values).await?);
        Ok(claimed)
    }

    /// Claims up to `limit` active connections whose refresh is due: their `refresh_due_at`
    /// moves `lease` ahead, so a job lost after the claim is simply due again then, and a
    /// connection is offered to one refresh job at a time across processes. The job is fenced
    /// by the version returned. Paused connections (on their own, by partner or all) are not
    /// refreshed: their access tokens lapse while paused (docs/actions.md#pauses-and-tokens).
    pub async fn claim_due_refreshes(&self, limit: u64, lease: Duration) -> Result<Vec<Claimed>> {
        let pauses = self.pause_filter().await?;
        if pauses.all {
            return Ok(Vec::new());
        }
        let (partners, skipped) = pauses.skip_partners(6);
        let now = self.clock.now();
        let until = now + delta(lease);
        let backend = self.db.get_database_backend();
        let sql = format!(
            "UPDATE connections SET refresh_due_at = $1 \
             WHERE id IN (SELECT id FROM connections \
                WHERE refresh_due_at <= $2 AND state = $3 AND paused = $5{partners} \
                ORDER BY refresh_due_at LIMIT $4 {lock}) \
             RETURNING id, version",
            lock = skip_locked(backend),
        );
        let mut values = vec![
            until.into(),
            now.into(),
            State::Active.as_str().into(),
            limit_value(limit),
            false.into(),
        ];
        values.extend(skipped);
        self.claimed(backend, sql, values).await
    }

    pub(in crate::store) async fn claimed(
        &self,
        backend: DbBackend,
        sql: String,
        values: Vec<sea_orm::Value>,
    ) -> Result<Vec<Claimed>> {
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        rows.into_iter()
            .map(|row| {
                let id: String = row.try_get("", "id")?;
                let version: i64 = row.try_get("", "version")?;
                Ok(Claimed {
                    id: id
                        .parse::<ConnectionId>()
                        .map_err(|_| StoreError::Corrupt(format!("connection id {id:?}")))?,
                    version,
                })
            })
            .collect()
    }
}

fn limit_value(limit: u64) -> sea_orm::Value {
    i64::try_from(limit).unwrap_or(i64::MAX).into()
}
