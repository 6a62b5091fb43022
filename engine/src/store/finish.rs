//! Ending a transfer that did not complete (it yielded or failed), and user-requested syncs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, TransactionTrait,
    sea_query::{Expr, ExprTrait as _, Func},
};

use super::{
    Result, Store, StoreError,
    connections::to_domain,
    entities::connection,
    runs::{insert_runs, observed},
    transfer::{SyncEnd, SyncLease, delta},
};
use crate::{ids::ConnectionId, model::Connection, state::State, text::storable};

/// The states that may transfer, for sea-query filters.
fn transferring() -> Vec<&'static str> {
    State::ALL
        .into_iter()
        .filter(|s| s.may_transfer())
        .map(State::as_str)
        .collect()
}

impl Store {
    /// Ends a transfer and releases the lease. Returns the connection as it now is (`None` if
    /// the lease had been lost meanwhile, e.g. the user disconnected). A counted failure adds
    /// one to the streak in SQL (`failure_count + 1`, `COALESCE(failing_since, now)`), so a
    /// concurrent write is never undone by a value computed from an older read.
    pub async fn finish_sync(&self, lease: &SyncLease, end: SyncEnd) -> Result<Option<Connection>> {
        use connection::Column as C;
        let now = self.clock.now();
        let mut update = connection::Entity::update_many()
            .col_expr(C::SyncLeaseToken, Expr::cust("NULL"))
            .col_expr(C::SyncLeaseUntil, Expr::cust("NULL"));
        match &end {
            SyncEnd::Yielded { next_sync_at } => {
                update = update
                    .col_expr(C::NextSyncAt, Expr::val(*next_sync_at))
                    .col_expr(C::LastSyncAt, Expr::val(now));
            }
            SyncEnd::Failed {
                next_sync_at,
                error,
                count_failure,
            } => {
                update = update
                    .col_expr(C::NextSyncAt, Expr::val(*next_sync_at))
                    .col_expr(C::LastErrorCode, Expr::val(storable(&error.code)))
                    .col_expr(C::LastError, Expr::val(storable(&error.message)));
                if *count_failure {
                    update = update
                        .col_expr(C::FailureCount, Expr::col(C::FailureCount).add(1))
                        .col_expr(
                            C::FailingSince,
                            Func::coalesce([Expr::col(C::FailingSince), Expr::val(now)]).into(),
                        );
                }
            }
        }
        let run = match &end {
            SyncEnd::Yielded { .. } => lease.run.ended(lease.connection.id, now, "yielded", None),
            SyncEnd::Failed { error, .. } => {
                lease
                    .run
                    .ended(lease.connection.id, now, "failed", Some(&error.code))
            }
        };
        // The run is written with the row that ends it (docs/operations.md#step-runs).
        let txn = self.db.begin().await?;
        let rows = update
            .filter(C::Id.eq(lease.connection.id.to_string()))
            .filter(C::SyncLeaseToken.eq(lease.token.as_str()))
            .filter(C::State.is_in(transferring()))
            .exec_with_returning(&txn)
            .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let runs = [run];
        insert_runs(&txn, self.recorded(&runs)).await?;
        txn.commit().await?;
        observed(&runs);
        to_domain(row).map(Some)
    }

    /// A user asks for a sync now: due at once unless one was requested within `min_interval`
    /// (then `Err(retry_at)`). Only a connection that may transfer can sync
    /// ([`StoreError::NotTransferring`]); the state is checked by the `UPDATE` itself.
    pub async fn request_sync(
        &self,
        id: ConnectionId,
        min_interval: Duration,
    ) -> Result<std::result::Result<Connection, DateTime<Utc>>> {
        use connection::Column as C;
        let now = self.clock.now();
        let earliest = now - delta(min_interval);
        let updated = connection::Entity::update_many()
            .col_expr(C::SyncRequestedAt, Expr::val(now))
            .col_expr(C::NextSyncAt, Expr::val(now))
            .filter(C::Id.eq(id.to_string()))
            .filter(C::State.is_in(transferring()))
            .filter(
                sea_orm::Condition::any()
                    .add(C::SyncRequestedAt.is_null())
                    .add(C::SyncRequestedAt.lte(earliest)),
            )
            .exec_with_returning(&self.db)
            .await?;
        if let Some(row) = updated.into_iter().next() {
            return Ok(Ok(to_domain(row)?));
        }
        let row = connection::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        let last = row.sync_requested_at.unwrap_or(now);
        let connection = to_domain(row)?;
        if !connection.state.may_transfer() {
            return Err(StoreError::NotTransferring(connection.state));
        }
        Ok(Err(last + delta(min_interval)))
    }
}
