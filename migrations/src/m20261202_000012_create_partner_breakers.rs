//! The per-partner circuit breaker (docs/operations.md#partner-incidents): one row per partner
//! whose breaker ever tripped, shared by every worker process on the database, and the latest
//! outage-class failure of each connection, from which the breaker counts distinct failing
//! connections over its window.
//!
//! - `partner_breakers`: `state` is `closed`, `open` or `half_open`; every transition is a
//!   compare-and-swap on `generation`. `since` is the incident's first counted failure (the
//!   failure streaks that began from then on are cleared when it closes); `probe_at` the next
//!   probe while open; `probe_connection` / `probe_started_at` the probe in flight while
//!   half-open.
//! - `partner_breaker_failures`: one row per connection (its latest outage-class failure,
//!   upserted), indexed by partner and time so the count over the window is an index range.
//!   Successes write nothing here: a connection whose `last_sync_at` is later than its
//!   failure is not failing any more.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PartnerBreakers {
    Table,
    Partner,
    State,
    Generation,
    OpenedAt,
    Since,
    ProbeAt,
    Probes,
    ProbeConnection,
    ProbeStartedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PartnerBreakerFailures {
    Table,
    Partner,
    ConnectionId,
    FailedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use PartnerBreakers as B;
        manager
            .create_table(
                Table::create()
                    .table(B::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(B::Partner)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(B::State).string_len(16).not_null())
                    .col(ColumnDef::new(B::Generation).big_integer().not_null())
                    .col(
                        ColumnDef::new(B::OpenedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(B::Since).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(B::ProbeAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(B::Probes).integer().not_null().default(0))
                    .col(ColumnDef::new(B::ProbeConnection).string_len(36).null())
                    .col(
                        ColumnDef::new(B::ProbeStartedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(B::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        use PartnerBreakerFailures as F;
        manager
            .create_table(
                Table::create()
                    .table(F::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(F::Partner).string_len(64).not_null())
                    .col(ColumnDef::new(F::ConnectionId).string_len(36).not_null())
                    .col(
                        ColumnDef::new(F::FailedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(F::Partner).col(F::ConnectionId))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS ix_partner_breaker_failures_time \
                 ON partner_breaker_failures (partner, failed_at)",
            )
            .await?;
        Ok(())
    }
}
