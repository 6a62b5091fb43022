//! Pauses of a whole partner or of everything (docs/actions.md#actions): one row per pause,
//! kept after its resume as the record of who paused and resumed, when and why. At most one
//! pause per scope is in force (`resumed_at IS NULL`: a partial unique index, on both
//! backends). A connection's own pause is its `paused` column, journaled on the connection.
//!
//! `scope` is `all` or `partner:<name>`; the dispatcher reads the pauses in force before each
//! claim, so the table stays tiny and the read cheap.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Pauses {
    Table,
    Id,
    Scope,
    Reason,
    Actor,
    Since,
    ResumedAt,
    ResumedBy,
    ResumeReason,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Pauses::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Pauses::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Pauses::Scope).string_len(48).not_null())
                    .col(ColumnDef::new(Pauses::Reason).text().not_null())
                    .col(ColumnDef::new(Pauses::Actor).string_len(160).not_null())
                    .col(
                        ColumnDef::new(Pauses::Since)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Pauses::ResumedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(Pauses::ResumedBy).string_len(160).null())
                    .col(ColumnDef::new(Pauses::ResumeReason).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS ux_pauses_in_force \
                 ON pauses (scope) WHERE resumed_at IS NULL",
            )
            .await?;
        Ok(())
    }
}
