//! Connections, their journal, pending OAuth authorizations, pending partner-side revocations
//! and operator alerts.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Connections {
    Table,
    Id,
    UserId,
    Partner,
    State,
    Version,
    CreatedAt,
    UpdatedAt,
    StateChangedAt,
    LastErrorCode,
    LastError,
    FailureCount,
    Paused,
    TokenCiphertext,
    TokenKeyId,
    TokenExpiresAt,
    Scope,
    EarliestDataTime,
    LatestDataTime,
    LastSyncAt,
    NextSyncAt,
}

#[derive(DeriveIden)]
enum ConnectionEvents {
    Table,
    ConnectionId,
    Seq,
    FromState,
    ToState,
    Event,
    Actor,
    Reason,
    Details,
    At,
}

#[derive(DeriveIden)]
enum OauthAuthorizations {
    Table,
    StateHash,
    ConnectionId,
    Partner,
    VerifierCiphertext,
    KeyId,
    CreatedAt,
    ExpiresAt,
    ConsumedAt,
}

#[derive(DeriveIden)]
enum PartnerRevocations {
    Table,
    Id,
    ConnectionId,
    Partner,
    TokenCiphertext,
    KeyId,
    Attempts,
    NextAttemptAt,
    LastError,
    CreatedAt,
    CompletedAt,
    Outcome,
}

#[derive(DeriveIden)]
enum OperatorAlerts {
    Table,
    Id,
    Partner,
    ConnectionId,
    Code,
    Message,
    CreatedAt,
}

fn ts(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).timestamp_with_time_zone().not_null().take()
}

fn ts_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).timestamp_with_time_zone().null().take()
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
                    .table(Connections::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Connections::Id).string_len(36).not_null().primary_key())
                    .col(ColumnDef::new(Connections::UserId).string_len(64).not_null())
                    .col(ColumnDef::new(Connections::Partner).string_len(32).not_null())
                    .col(ColumnDef::new(Connections::State).string_len(16).not_null())
                    .col(ColumnDef::new(Connections::Version).big_integer().not_null())
                    .col(ts(Connections::CreatedAt))
                    .col(ts(Connections::UpdatedAt))
                    .col(ts(Connections::StateChangedAt))
                    .col(ColumnDef::new(Connections::LastErrorCode).string_len(64).null())
                    .col(ColumnDef::new(Connections::LastError).text().null())
                    .col(ColumnDef::new(Connections::FailureCount).integer().not_null().default(0))
                    .col(ColumnDef::new(Connections::Paused).boolean().not_null().default(false))
                    .col(ColumnDef::new(Connections::TokenCiphertext).binary().null())
                    .col(ColumnDef::new(Connections::TokenKeyId).string_len(64).null())
                    .col(ts_null(Connections::TokenExpiresAt))
                    .col(ColumnDef::new(Connections::Scope).text().null())
                    .col(ts_null(Connections::EarliestDataTime))
                    .col(ts_null(Connections::LatestDataTime))
                    .col(ts_null(Connections::LastSyncAt))
                    .col(ts_null(Connections::NextSyncAt))
                    .to_owned(),
            )
            .await?;
        // At most one live connection per user and partner; revoked and failed ones stay as
        // history and are reused on reconnect. Partial indexes exist on both backends.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS ux_connections_live_user_partner \
                 ON connections (user_id, partner) WHERE state NOT IN ('revoked', 'failed')",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_connections_user")
                    .table(Connections::Table)
                    .col(Connections::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_connections_next_sync")
                    .table(Connections::Table)
                    .col(Connections::NextSyncAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ConnectionEvents::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(ConnectionEvents::ConnectionId).string_len(36).not_null())
                    .col(ColumnDef::new(ConnectionEvents::Seq).big_integer().not_null())
                    .col(ColumnDef::new(ConnectionEvents::FromState).string_len(16).null())
                    .col(ColumnDef::new(ConnectionEvents::ToState).string_len(16).not_null())
                    .col(ColumnDef::new(ConnectionEvents::Event).string_len(48).not_null())
                    .col(ColumnDef::new(ConnectionEvents::Actor).string_len(160).not_null())
                    .col(ColumnDef::new(ConnectionEvents::Reason).text().null())
                    .col(ColumnDef::new(ConnectionEvents::Details).json().not_null())
                    .col(ts(ConnectionEvents::At))
                    .primary_key(
                        Index::create()
                            .col(ConnectionEvents::ConnectionId)
                            .col(ConnectionEvents::Seq),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(ConnectionEvents::Table, ConnectionEvents::ConnectionId)
                            .to(Connections::Table, Connections::Id),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(OauthAuthorizations::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(OauthAuthorizations::StateHash)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(OauthAuthorizations::ConnectionId).string_len(36).not_null())
                    .col(ColumnDef::new(OauthAuthorizations::Partner).string_len(32).not_null())
                    .col(ColumnDef::new(OauthAuthorizations::VerifierCiphertext).binary().not_null())
                    .col(ColumnDef::new(OauthAuthorizations::KeyId).string_len(64).not_null())
                    .col(ts(OauthAuthorizations::CreatedAt))
                    .col(ts(OauthAuthorizations::ExpiresAt))
                    .col(ts_null(OauthAuthorizations::ConsumedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(OauthAuthorizations::Table, OauthAuthorizations::ConnectionId)
                            .to(Connections::Table, Connections::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_oauth_authorizations_connection")
                    .table(OauthAuthorizations::Table)
                    .col(OauthAuthorizations::ConnectionId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PartnerRevocations::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(PartnerRevocations::Id).string_len(36).not_null().primary_key())
                    .col(ColumnDef::new(PartnerRevocations::ConnectionId).string_len(36).not_null())
                    .col(ColumnDef::new(PartnerRevocations::Partner).string_len(32).not_null())
                    .col(ColumnDef::new(PartnerRevocations::TokenCiphertext).binary().null())
                    .col(ColumnDef::new(PartnerRevocations::KeyId).string_len(64).null())
                    .col(ColumnDef::new(PartnerRevocations::Attempts).integer().not_null().default(0))
                    .col(ts(PartnerRevocations::NextAttemptAt))
                    .col(ColumnDef::new(PartnerRevocations::LastError).text().null())
                    .col(ts(PartnerRevocations::CreatedAt))
                    .col(ts_null(PartnerRevocations::CompletedAt))
                    .col(ColumnDef::new(PartnerRevocations::Outcome).string_len(16).null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(PartnerRevocations::Table, PartnerRevocations::ConnectionId)
                            .to(Connections::Table, Connections::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_partner_revocations_due")
                    .table(PartnerRevocations::Table)
                    .col(PartnerRevocations::CompletedAt)
                    .col(PartnerRevocations::NextAttemptAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(OperatorAlerts::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(OperatorAlerts::Id).string_len(36).not_null().primary_key())
                    .col(ColumnDef::new(OperatorAlerts::Partner).string_len(32).not_null())
                    .col(ColumnDef::new(OperatorAlerts::ConnectionId).string_len(36).null())
                    .col(ColumnDef::new(OperatorAlerts::Code).string_len(64).not_null())
                    .col(ColumnDef::new(OperatorAlerts::Message).text().not_null())
                    .col(ts(OperatorAlerts::CreatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
