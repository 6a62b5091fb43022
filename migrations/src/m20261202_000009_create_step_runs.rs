//! What every step did (docs/operations.md#step-runs):
//! - `step_runs`: one row per run of a step (fetch, refresh, revoke, deliver) on a connection:
//!   when it started and ended, its outcome, the records it inserted, updated, left unchanged
//!   and skipped, the windows it committed, the partner's status codes (a JSON object of
//!   status → count), its error code. Transfers write theirs in the transaction that ends the
//!   run (the group commit), so recording costs no round trip of its own. Bounded by age and
//!   count; purged in the background.
//! - `connections.idle_runs`: consecutive completed transfers that did not move the
//!   connection's newest data time (the partner stopped sending data while transfers
//!   "succeed"); set to 0 by a run that did.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StepRuns {
    Table,
    Id,
    ConnectionId,
    Step,
    StartedAt,
    FinishedAt,
    Outcome,
    Inserted,
    Updated,
    Unchanged,
    Skipped,
    Windows,
    Statuses,
    ErrorCode,
    DurationMs,
}

#[derive(DeriveIden)]
enum Connections {
    Table,
    IdleRuns,
}

fn count(column: StepRuns) -> ColumnDef {
    ColumnDef::new(column)
        .big_integer()
        .not_null()
        .default(0)
        .take()
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
                    .table(StepRuns::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(StepRuns::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(StepRuns::ConnectionId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(ColumnDef::new(StepRuns::Step).string_len(16).not_null())
                    .col(
                        ColumnDef::new(StepRuns::StartedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(StepRuns::FinishedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(StepRuns::Outcome).string_len(16).not_null())
                    .col(count(StepRuns::Inserted))
                    .col(count(StepRuns::Updated))
                    .col(count(StepRuns::Unchanged))
                    .col(count(StepRuns::Skipped))
                    .col(count(StepRuns::Windows))
                    .col(ColumnDef::new(StepRuns::Statuses).text().null())
                    .col(ColumnDef::new(StepRuns::ErrorCode).string_len(64).null())
                    .col(count(StepRuns::DurationMs))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            (
                "idx_step_runs_connection",
                vec![StepRuns::ConnectionId, StepRuns::Id],
            ),
            ("idx_step_runs_finished", vec![StepRuns::FinishedAt]),
        ] {
            let mut index = Index::create();
            index.name(name).table(StepRuns::Table).if_not_exists();
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Connections::Table)
                    .add_column(
                        ColumnDef::new(Connections::IdleRuns)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
