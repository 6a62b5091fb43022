//! Clinician invitations and the outbox (docs/notifications.md):
//! - `invitations`: one row per clinician invitation of a patient to connect a partner, on the
//!   patient's connection. The address it is sent to is sealed (AES-GCM, the connection id in
//!   the associated data); only a masked form is kept in the clear, for the clinic.
//! - `outbox`: every message a transition owes (an invitation email, a notice to the patient or
//!   the clinic, a webhook event), written in the transition's own transaction and delivered by
//!   the deliver step. `seq` orders a connection's messages; `id` is the message's stable id
//!   (the webhook's `webhook-id`). `claimed_until` is the dispatcher's claim (not dispatched
//!   again before), `lease_until` the sending step's (nobody else sends it before).
//! - `delivery_attempts`: each attempt at delivering an outbox message, for operators.
//! - `connections.contact_ciphertext`: the patient's email address for notices (from an
//!   invitation or given at connect), sealed like the tokens.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Invitations {
    Table,
    Id,
    ConnectionId,
    ClinicId,
    Clinician,
    Partner,
    PatientUserId,
    EmailCiphertext,
    EmailKeyId,
    EmailMasked,
    Status,
    CreatedAt,
    ExpiresAt,
    LastSentAt,
    SentCount,
    ClosedAt,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Seq,
    Id,
    ConnectionId,
    Kind,
    Target,
    InvitationId,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    ClaimedUntil,
    LeaseUntil,
    LastError,
    CreatedAt,
    SentAt,
}

#[derive(DeriveIden)]
enum DeliveryAttempts {
    Table,
    Id,
    OutboxSeq,
    Attempt,
    At,
    Outcome,
    Detail,
}

#[derive(DeriveIden)]
enum Connections {
    Table,
    ContactCiphertext,
    ContactKeyId,
}

fn text_id(name: impl IntoIden, len: u32) -> ColumnDef {
    ColumnDef::new(name).string_len(len).not_null().take()
}

fn time(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
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
                    .table(Invitations::Table)
                    .if_not_exists()
                    .col(text_id(Invitations::Id, 36).primary_key().take())
                    .col(text_id(Invitations::ConnectionId, 36))
                    .col(text_id(Invitations::ClinicId, 128))
                    .col(text_id(Invitations::Clinician, 128))
                    .col(text_id(Invitations::Partner, 64))
                    .col(text_id(Invitations::PatientUserId, 128))
                    .col(
                        ColumnDef::new(Invitations::EmailCiphertext)
                            .binary()
                            .not_null(),
                    )
                    .col(text_id(Invitations::EmailKeyId, 64))
                    .col(text_id(Invitations::EmailMasked, 320))
                    .col(text_id(Invitations::Status, 16))
                    .col(time(Invitations::CreatedAt))
                    .col(time(Invitations::ExpiresAt))
                    .col(time(Invitations::LastSentAt))
                    .col(
                        ColumnDef::new(Invitations::SentCount)
                            .integer()
                            .not_null()
                            .default(1),
                    )
                    .col(
                        ColumnDef::new(Invitations::ClosedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            (
                "idx_invitations_clinic",
                vec![Invitations::ClinicId, Invitations::Id],
            ),
            (
                "idx_invitations_connection",
                vec![Invitations::ConnectionId, Invitations::Status],
            ),
            (
                "idx_invitations_expiry",
                vec![Invitations::Status, Invitations::ExpiresAt],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(Invitations::Table).if_not_exists();
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        // One pending invitation per clinic and connection: a clinic inviting twice at once
        // gets the first one back.
        manager
            .create_index(
                Index::create()
                    .name("idx_invitations_one_pending")
                    .table(Invitations::Table)
                    .col(Invitations::ConnectionId)
                    .col(Invitations::ClinicId)
                    .unique()
                    .and_where(Expr::col(Invitations::Status).eq("pending"))
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Outbox::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(text_id(Outbox::Id, 36).unique_key().take())
                    .col(text_id(Outbox::ConnectionId, 36))
                    .col(text_id(Outbox::Kind, 32))
                    .col(text_id(Outbox::Target, 160))
                    .col(ColumnDef::new(Outbox::InvitationId).string_len(36).null())
                    .col(ColumnDef::new(Outbox::Payload).json_binary().not_null())
                    .col(text_id(Outbox::Status, 16))
                    .col(
                        ColumnDef::new(Outbox::Attempts)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(time(Outbox::NextAttemptAt))
                    .col(
                        ColumnDef::new(Outbox::ClaimedUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Outbox::LeaseUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(Outbox::LastError).text().null())
                    .col(time(Outbox::CreatedAt))
                    .col(
                        ColumnDef::new(Outbox::SentAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            (
                "idx_outbox_due",
                vec![Outbox::Status, Outbox::NextAttemptAt],
            ),
            (
                "idx_outbox_connection",
                vec![Outbox::ConnectionId, Outbox::Seq],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(Outbox::Table).if_not_exists();
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(DeliveryAttempts::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(DeliveryAttempts::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(DeliveryAttempts::OutboxSeq)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DeliveryAttempts::Attempt)
                            .integer()
                            .not_null(),
                    )
                    .col(time(DeliveryAttempts::At))
                    .col(text_id(DeliveryAttempts::Outcome, 16))
                    .col(ColumnDef::new(DeliveryAttempts::Detail).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_delivery_attempts_message")
                    .table(DeliveryAttempts::Table)
                    .col(DeliveryAttempts::OutboxSeq)
                    .col(DeliveryAttempts::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        for column in [
            ColumnDef::new(Connections::ContactCiphertext)
                .binary()
                .null()
                .take(),
            ColumnDef::new(Connections::ContactKeyId)
                .string_len(64)
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
        Ok(())
    }
}
