//! Coverage (docs/coverage.md#coverage): `connections.fetched_from`, the start of the earliest
//! window ever committed, so the range a connection has fetched is `[fetched_from,
//! fetched_through)` (the cursor only advances over committed windows, so the range has no
//! holes). Not indexed: window commits keep their in-place updates.
//!
//! Connections that transferred before this migration get their earliest data time, the best
//! lower bound known (their first window began at or before it).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Connections {
    Table,
    FetchedFrom,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Connections::Table)
                    .add_column(
                        ColumnDef::new(Connections::FetchedFrom)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE connections SET fetched_from = earliest_data_time \
                 WHERE fetched_through IS NOT NULL",
            )
            .await?;
        Ok(())
    }
}
