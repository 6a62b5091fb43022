//! Bulk actions' plans (docs/actions.md#bulk-actions): a dry run stores the connections a
//! filter matched (`bulk_plan_members`) under the sha256 of a random confirmation token
//! (`bulk_plans.id`); the real call acts on those members only, each member's outcome written
//! as it is reached, and keeps its answer (`result`, JSON text) for a second call.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum BulkPlans {
    Table,
    Id,
    Action,
    Filter,
    Reason,
    Actor,
    Count,
    CreatedAt,
    ExpiresAt,
    ExecutedAt,
    Result,
}

#[derive(DeriveIden)]
enum BulkPlanMembers {
    Table,
    PlanId,
    ConnectionId,
    Outcome,
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
                    .table(BulkPlans::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(BulkPlans::Id)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(BulkPlans::Action).string_len(32).not_null())
                    .col(ColumnDef::new(BulkPlans::Filter).text().not_null())
                    .col(ColumnDef::new(BulkPlans::Reason).text().not_null())
                    .col(ColumnDef::new(BulkPlans::Actor).string_len(160).not_null())
                    .col(ColumnDef::new(BulkPlans::Count).big_integer().not_null())
                    .col(
                        ColumnDef::new(BulkPlans::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(BulkPlans::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(BulkPlans::ExecutedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(BulkPlans::Result).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BulkPlanMembers::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(BulkPlanMembers::PlanId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(BulkPlanMembers::ConnectionId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(BulkPlanMembers::Outcome)
                            .string_len(48)
                            .null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(BulkPlanMembers::PlanId)
                            .col(BulkPlanMembers::ConnectionId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(BulkPlanMembers::Table, BulkPlanMembers::PlanId)
                            .to(BulkPlans::Table, BulkPlans::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
