//! Operator alerts fold: one open alert per partner and code, with a count and when it was last
//! seen, so a fault that repeats (or a user replaying a callback error) raises one alert whose
//! count grows instead of a flood of rows (docs/lifecycle.md#alerts). `fold_key` is unique;
//! alerts stored before this migration keep a NULL key and stay as they are.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum OperatorAlerts {
    Table,
    FoldKey,
    Count,
    LastSeenAt,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            ColumnDef::new(OperatorAlerts::FoldKey)
                .string_len(128)
                .null()
                .take(),
            ColumnDef::new(OperatorAlerts::Count)
                .big_integer()
                .not_null()
                .default(1)
                .take(),
            ColumnDef::new(OperatorAlerts::LastSeenAt)
                .timestamp_with_time_zone()
                .null()
                .take(),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(OperatorAlerts::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .exec_stmt(
                Query::update()
                    .table(OperatorAlerts::Table)
                    .value(
                        OperatorAlerts::LastSeenAt,
                        Expr::col(OperatorAlerts::CreatedAt),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .unique()
                    .name("ux_operator_alerts_fold_key")
                    .table(OperatorAlerts::Table)
                    .col(OperatorAlerts::FoldKey)
                    .to_owned(),
            )
            .await
    }
}
