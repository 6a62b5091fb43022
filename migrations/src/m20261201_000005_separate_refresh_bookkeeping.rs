//! Refreshes get their own bookkeeping, apart from transfers' (docs/lifecycle.md):
//! - `refresh_failures`: consecutive failed refreshes (the transfer streak stays in
//!   `failure_count`/`failing_since`, so a successful refresh during a data-API outage no longer
//!   resets the transfer backoff);
//! - `refresh_due_at`: when the next refresh is due; the refresh dispatcher claims due rows by
//!   moving it ahead (a lease, like partner revocations' `next_attempt_at`), so processes share
//!   the work and a lost job is simply due again later;
//! - `refresh_outcome_unknown_at`: set when a refresh was abandoned after the request went out
//!   (a stopped worker, a lost response), so a later `invalid_grant` is labelled for what it
//!   probably is: a grant lost to a rotation we never saw.
//!
//! Rows holding tokens get `refresh_due_at = token_expires_at` (refreshed at the latest when the
//! token expires; the next stored token plans its own margin).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Connections {
    Table,
    RefreshFailures,
    RefreshDueAt,
    RefreshOutcomeUnknownAt,
    TokenExpiresAt,
    TokenCiphertext,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [
            ColumnDef::new(Connections::RefreshFailures)
                .integer()
                .not_null()
                .default(0)
                .take(),
            ColumnDef::new(Connections::RefreshDueAt)
                .timestamp_with_time_zone()
                .null()
                .take(),
            ColumnDef::new(Connections::RefreshOutcomeUnknownAt)
                .timestamp_with_time_zone()
                .null()
                .take(),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(Connections::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .exec_stmt(
                Query::update()
                    .table(Connections::Table)
                    .value(
                        Connections::RefreshDueAt,
                        Expr::col(Connections::TokenExpiresAt),
                    )
                    .and_where(Expr::col(Connections::TokenCiphertext).is_not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_connections_refresh_due_at")
                    .table(Connections::Table)
                    .col(Connections::RefreshDueAt)
                    .to_owned(),
            )
            .await
    }
}
