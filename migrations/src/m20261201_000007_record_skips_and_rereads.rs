//! Per-record bookkeeping of transfers (docs/transfers.md):
//! - `skipped_records`: one row per partner record a transfer could not store (unreadable,
//!   unmappable, implausible time), keyed by connection and the record's stable key (its partner
//!   id, or a hash of its bytes), with the reason. Re-reading the same bad record (the overlap,
//!   the late-change horizon) finds its row, so `connections.records_skipped` counts each bad
//!   record once, not once per read.
//! - `connections.records_conflicting`: records that came twice in one window with different
//!   contents (the last one is kept).
//! - `connections.reread_at`: when the partner's late-change horizon (e.g. the last days of
//!   Dexcom events, which are corrected and deleted long after their time) was last re-read.
//! - `data_records.revision`: 1 when inserted, + 1 on every change; one upsert statement tells
//!   inserts from updates by it on both backends.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SkippedRecords {
    Table,
    ConnectionId,
    RecordKey,
    Kind,
    PartnerRecordId,
    Reason,
    FirstSeenAt,
    LastSeenAt,
    SeenCount,
}

#[derive(DeriveIden)]
enum Connections {
    Table,
    RecordsConflicting,
    RereadAt,
}

#[derive(DeriveIden)]
enum DataRecords {
    Table,
    Revision,
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
                    .table(SkippedRecords::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(SkippedRecords::ConnectionId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SkippedRecords::RecordKey)
                            .string_len(160)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SkippedRecords::Kind)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SkippedRecords::PartnerRecordId)
                            .string_len(160)
                            .null(),
                    )
                    .col(ColumnDef::new(SkippedRecords::Reason).text().not_null())
                    .col(
                        ColumnDef::new(SkippedRecords::FirstSeenAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SkippedRecords::LastSeenAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SkippedRecords::SeenCount)
                            .big_integer()
                            .not_null()
                            .default(1),
                    )
                    .primary_key(
                        Index::create()
                            .col(SkippedRecords::ConnectionId)
                            .col(SkippedRecords::RecordKey),
                    )
                    .to_owned(),
            )
            .await?;
        for (table, column) in [
            (
                Connections::Table.into_iden(),
                ColumnDef::new(Connections::RecordsConflicting)
                    .big_integer()
                    .not_null()
                    .default(0)
                    .take(),
            ),
            (
                Connections::Table.into_iden(),
                ColumnDef::new(Connections::RereadAt)
                    .timestamp_with_time_zone()
                    .null()
                    .take(),
            ),
            (
                DataRecords::Table.into_iden(),
                ColumnDef::new(DataRecords::Revision)
                    .big_integer()
                    .not_null()
                    .default(1)
                    .take(),
            ),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
