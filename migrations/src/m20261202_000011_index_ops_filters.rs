//! Indexes for the operators' connection list and summary (docs/operations.md#connection-list):
//! each filter a range of an index at a million connections, and as little as possible added to
//! the transfer path's writes.
//!
//! - `(state, id)` only for the states other than `active`: the rare states are found and
//!   paged from it, `active` (most rows) from the primary key; a row only enters it when a
//!   transition takes it out of `active`, so transfers of active connections never write it.
//! - `(partner, state, id)`: a partner (and state) paged by id. The one full index added: its
//!   columns change only by transitions, so window commits keep their in-place updates; an
//!   update that is not in place anyway (a run's end moves the indexed `next_sync_at`) writes
//!   one entry more.
//! - Partial indexes on what is rarely set: `last_error_code`, `paused`, `failing_since`,
//!   `idle_runs > 0`. A row outside the condition has no entry to maintain, and the columns
//!   change only when a run ends (an update that already moves `next_sync_at`, which is
//!   indexed), so window commits keep their in-place updates.
//!
//! The lease columns (`sync_lease_until`, `sync_lease_token`) get no index: every claim, start
//! and window commit changes them, and an index on them would make each of those updates
//! write every index of the table.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The same text on both backends (partial indexes exist on both).
const INDEXES: [&str; 6] = [
    "CREATE INDEX IF NOT EXISTS ix_connections_state_id ON connections (state, id) \
     WHERE state <> 'active'",
    "CREATE INDEX IF NOT EXISTS ix_connections_partner_state_id \
     ON connections (partner, state, id)",
    "CREATE INDEX IF NOT EXISTS ix_connections_error ON connections (last_error_code, id) \
     WHERE last_error_code IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS ix_connections_paused ON connections (id) WHERE paused = TRUE",
    "CREATE INDEX IF NOT EXISTS ix_connections_failing_since ON connections (failing_since) \
     WHERE failing_since IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS ix_connections_idle_runs ON connections (idle_runs) \
     WHERE idle_runs > 0",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for sql in INDEXES {
            manager.get_connection().execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
