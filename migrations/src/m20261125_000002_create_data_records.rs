//! Transferred data (one row per partner record per connection, in the Tidepool data model) and
//! the columns the transfer needs on connections: a lease so one worker at a time fetches a
//! connection, the fetched-through cursor, and when the current failure streak started.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Connections {
    Table,
    FetchedThrough,
    FailingSince,
    SyncLeaseUntil,
    SyncLeaseToken,
    SyncRequestedAt,
}

#[derive(DeriveIden)]
enum DataRecords {
    Table,
    ConnectionId,
    PartnerRecordId,
    UserId,
    DatumType,
    Time,
    Datum,
    DatumHash,
    Retired,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            ColumnDef::new(Connections::FetchedThrough)
                .timestamp_with_time_zone()
                .null()
                .take(),
            ColumnDef::new(Connections::FailingSince)
                .timestamp_with_time_zone()
                .null()
                .take(),
            ColumnDef::new(Connections::SyncLeaseUntil)
                .timestamp_with_time_zone()
                .null()
                .take(),
            ColumnDef::new(Connections::SyncLeaseToken)
                .string_len(36)
                .null()
                .take(),
            ColumnDef::new(Connections::SyncRequestedAt)
                .timestamp_with_time_zone()
                .null()
                .take(),
        ] {
            // SQLite adds one column per ALTER TABLE.
            manager
                .alter_table(
                    Table::alter()
                        .table(Connections::Table)
                        .add_column_if_not_exists(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(DataRecords::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(DataRecords::ConnectionId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DataRecords::PartnerRecordId)
                            .string_len(160)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DataRecords::UserId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DataRecords::DatumType)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DataRecords::Time)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(DataRecords::Datum).json().not_null())
                    .col(
                        ColumnDef::new(DataRecords::DatumHash)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DataRecords::Retired)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(DataRecords::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DataRecords::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    // Idempotency: a partner record is stored once per connection, for ever.
                    .primary_key(
                        Index::create()
                            .col(DataRecords::ConnectionId)
                            .col(DataRecords::PartnerRecordId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_data_records_user_time")
                    .table(DataRecords::Table)
                    .col(DataRecords::UserId)
                    .col(DataRecords::Time)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
