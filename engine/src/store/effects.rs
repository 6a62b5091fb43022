//! The storage effects of a transition, performed inside the transaction that records it
//! (docs/lifecycle.md#events-and-effects): the connection's own columns as part of the
//! compare-and-swap `UPDATE`, then the other tables (authorizations, owed revocations, alerts).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, UpdateMany,
    sea_query::{Expr, ExprTrait as _},
};
use serde::{Deserialize, Serialize};

use super::{
    Result, Store, StoreError, alerts,
    entities::{connection, invitation, oauth_authorization, partner_revocation},
    invitations::contact_aad,
};
use crate::{
    invitation::{InvitationStatus, MessageKind, TARGET_PATIENT},
    model::{Change, ErrorInfo, ErrorUpdate, TokenSet},
    schedule::refresh::refresh_due,
    state::{Effect, Transition},
    text::storable,
};

/// The sealed plaintext of a token set. Short keys: it is never seen outside this module.
#[derive(Serialize, Deserialize)]
pub(super) struct TokenPlain {
    pub(super) a: String,
    pub(super) r: Option<String>,
}

pub(super) fn token_aad(id: &str) -> Vec<u8> {
    format!("tokens:{id}").into_bytes()
}

pub(super) fn revocation_aad(id: &str) -> Vec<u8> {
    format!("revocation:{id}").into_bytes()
}

pub(super) fn verifier_aad(id: &str) -> Vec<u8> {
    format!("verifier:{id}").into_bytes()
}

type Update = UpdateMany<connection::Entity>;

/// Sets a column in the transition's `UPDATE`.
fn set(update: Update, column: connection::Column, value: impl Into<sea_orm::Value>) -> Update {
    update.col_expr(column, Expr::val(value.into()))
}

fn set_null(update: Update, column: connection::Column) -> Update {
    update.col_expr(column, Expr::cust("NULL"))
}

impl Store {
    /// Adds to the transition's compare-and-swap `UPDATE` every column its effects and its error
    /// update write. Counters change by SQL arithmetic on the row being updated, so they are right
    /// even if the transfer path (which never bumps the version) changed the row since it was read.
    pub(super) fn column_effects(
        &self,
        mut update: Update,
        id: &str,
        transition: &Transition<'_>,
        error: &ErrorUpdate,
        now: DateTime<Utc>,
    ) -> Update {
        use connection::Column as C;
        for effect in &transition.effects {
            update = match *effect {
                Effect::StoreTokens(tokens) => {
                    let sealed = self.keyring.seal(&token_aad(id), &token_plaintext(tokens));
                    let update = set(update, C::TokenCiphertext, sealed.blob);
                    let update = set(update, C::TokenKeyId, sealed.key_id);
                    let update = set(update, C::TokenExpiresAt, tokens.expires_at);
                    let update = set(update, C::Scope, tokens.scope.clone().map(|s| storable(&s)));
                    let update = set(update, C::RefreshDueAt, refresh_due(now, tokens.expires_at));
                    set_null(update, C::RefreshOutcomeUnknownAt)
                }
                Effect::DiscardTokens => {
                    let update = set_null(update, C::TokenCiphertext);
                    let update = set_null(update, C::TokenKeyId);
                    let update = set_null(update, C::TokenExpiresAt);
                    set_null(update, C::RefreshDueAt)
                }
                // Due at once: the first transfer after connecting starts within seconds.
                Effect::ScheduleFetch => set(update, C::NextSyncAt, now),
                Effect::CancelFetch => {
                    let update = set_null(update, C::NextSyncAt);
                    let update = set_null(update, C::FailingSince);
                    // A transfer in flight loses its lease: its next write is refused.
                    let update = set_null(update, C::SyncLeaseUntil);
                    set_null(update, C::SyncLeaseToken)
                }
                Effect::ResetFailures => {
                    let update = set(update, C::FailureCount, 0i32);
                    let update = set_null(update, C::FailingSince);
                    set(update, C::RefreshFailures, 0i32)
                }
                Effect::ResetRefreshFailures => set(update, C::RefreshFailures, 0i32),
                Effect::CountRefreshFailure(retry_at) => update
                    .col_expr(C::RefreshFailures, Expr::col(C::RefreshFailures).add(1))
                    .col_expr(C::RefreshDueAt, Expr::val(retry_at)),
                Effect::MarkRefreshOutcomeUnknown => set(update, C::RefreshOutcomeUnknownAt, now),
                // The latest invitation's address is where the patient's notices go.
                Effect::CreateInvitation(new) => {
                    let sealed = self
                        .keyring
                        .seal(&contact_aad(id), new.email.expose().as_bytes());
                    let update = set(update, C::ContactCiphertext, sealed.blob);
                    set(update, C::ContactKeyId, sealed.key_id)
                }
                Effect::SendInvite(_)
                | Effect::AcceptInvitations
                | Effect::DeclineInvitations
                | Effect::EndInvitation(..)
                | Effect::NotifyConnectionLost
                | Effect::RecordDelivery(_)
                | Effect::IssueAuthorization(_)
                | Effect::InvalidateAuthorizations
                | Effect::RevokeAtPartner
                | Effect::AlertOperators(_)
                | Effect::FinishRevocation(_) => update,
            };
        }
        match error {
            ErrorUpdate::Keep => update,
            ErrorUpdate::Clear => {
                let update = set_null(update, C::LastErrorCode);
                set_null(update, C::LastError)
            }
            // A successful refresh clears a refresh error, but not the error of a transfer
            // failure streak still running (the data API may be down while the token endpoint
            // is up): only a successful transfer clears that one.
            ErrorUpdate::ClearUnlessTransfersFailing => update
                .col_expr(
                    C::LastErrorCode,
                    Expr::case(Expr::col(C::FailingSince).is_null(), Expr::cust("NULL"))
                        .finally(Expr::col(C::LastErrorCode))
                        .into(),
                )
                .col_expr(
                    C::LastError,
                    Expr::case(Expr::col(C::FailingSince).is_null(), Expr::cust("NULL"))
                        .finally(Expr::col(C::LastError))
                        .into(),
                ),
            ErrorUpdate::Set(ErrorInfo { code, message }) => {
                let update = set(update, C::LastErrorCode, storable(code));
                set(update, C::LastError, storable(message))
            }
        }
    }

    /// The effects on other tables, after the connection's row was swapped. `before` is the row
    /// as it was (its tokens are the ones a partner revocation must revoke).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn table_effects(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
        user_id: &str,
        partner: &str,
        before: Option<&connection::Model>,
        transition: &Transition<'_>,
        change: &Change,
        now: DateTime<Utc>,
    ) -> Result<()> {
        for effect in &transition.effects {
            match *effect {
                Effect::CreateInvitation(new) => {
                    self.insert_invitation(txn, id, user_id, partner, new, now)
                        .await?;
                }
                Effect::SendInvite(invitation_id) => {
                    let counted = invitation::Entity::update_many()
                        .col_expr(
                            invitation::Column::SentCount,
                            Expr::col(invitation::Column::SentCount).add(1),
                        )
                        .col_expr(invitation::Column::LastSentAt, Expr::val(now))
                        .filter(invitation::Column::Id.eq(invitation_id))
                        .filter(invitation::Column::ConnectionId.eq(id))
                        .filter(invitation::Column::Status.eq(InvitationStatus::Pending.as_str()))
                        .exec(txn)
                        .await?;
                    if counted.rows_affected != 1 {
                        // Not a pending invitation of this connection: nothing to send.
                        return Err(StoreError::AlreadyDone);
                    }
                    let clinic = invitation::Entity::find_by_id(invitation_id.to_owned())
                        .one(txn)
                        .await?
                        .map(|row| row.clinic_id);
                    let payload = serde_json::json!({
                        "template": "invite",
                        "partner": partner,
                        "clinicId": clinic,
                        "invitationId": invitation_id,
                    });
                    self.queue_message(
                        txn,
                        id,
                        MessageKind::InviteEmail,
                        TARGET_PATIENT,
                        Some(invitation_id),
                        payload,
                        now,
                    )
                    .await?;
                }
                Effect::AcceptInvitations => {
                    self.close_invitations(txn, id, None, InvitationStatus::Accepted, now)
                        .await?;
                }
                Effect::DeclineInvitations => {
                    self.close_invitations(txn, id, None, InvitationStatus::Declined, now)
                        .await?;
                }
                Effect::EndInvitation(invitation_id, end) => {
                    let closed = self
                        .close_invitations(txn, id, Some(invitation_id), end.status(), now)
                        .await?;
                    if closed != 1 {
                        return Err(StoreError::AlreadyDone);
                    }
                }
                Effect::NotifyConnectionLost => {
                    if let Some(before) = before {
                        let reason = change.reason.as_deref().or(match &change.error {
                            ErrorUpdate::Set(info) => Some(info.code.as_str()),
                            _ => before.last_error_code.as_deref(),
                        });
                        self.queue_connection_lost(txn, before, transition.to, reason, now)
                            .await?;
                    }
                }
                Effect::RecordDelivery(record) => {
                    self.record_delivery_in(txn, record, now).await?;
                }
                Effect::InvalidateAuthorizations => {
                    oauth_authorization::Entity::update_many()
                        .set(oauth_authorization::ActiveModel {
                            consumed_at: Set(Some(now)),
                            ..Default::default()
                        })
                        .filter(oauth_authorization::Column::ConnectionId.eq(id))
                        .filter(oauth_authorization::Column::ConsumedAt.is_null())
                        .exec(txn)
                        .await?;
                }
                Effect::IssueAuthorization(auth) => {
                    let sealed = self
                        .keyring
                        .seal(&verifier_aad(id), auth.pkce_verifier.expose().as_bytes());
                    oauth_authorization::Entity::insert(oauth_authorization::ActiveModel {
                        state_hash: Set(auth.state_hash.clone()),
                        connection_id: Set(id.to_owned()),
                        partner: Set(partner.to_owned()),
                        verifier_ciphertext: Set(sealed.blob),
                        key_id: Set(sealed.key_id),
                        created_at: Set(now),
                        expires_at: Set(auth.expires_at),
                        consumed_at: Set(None),
                    })
                    .exec(txn)
                    .await?;
                }
                Effect::RevokeAtPartner => {
                    let refresh = before
                        .map(|row| self.decrypt_tokens(row))
                        .transpose()?
                        .flatten()
                        .and_then(|t| t.refresh_token);
                    if let Some(refresh) = refresh {
                        self.queue_revocation(txn, id, partner, refresh.expose(), now)
                            .await?;
                    }
                }
                Effect::AlertOperators(alert) => {
                    alerts::insert_folded(txn, partner, Some(id), alert, now).await?;
                }
                Effect::FinishRevocation(finish) => {
                    let done = partner_revocation::Entity::update_many()
                        .set(partner_revocation::ActiveModel {
                            token_ciphertext: Set(None),
                            key_id: Set(None),
                            attempts: Set(i32::try_from(finish.attempts).unwrap_or(i32::MAX)),
                            completed_at: Set(Some(now)),
                            outcome: Set(Some(
                                if finish.confirmed {
                                    "revoked"
                                } else {
                                    "abandoned"
                                }
                                .to_owned(),
                            )),
                            last_error: Set(finish.error.as_deref().map(storable)),
                            ..Default::default()
                        })
                        .filter(partner_revocation::Column::Id.eq(finish.revocation_id.as_str()))
                        .filter(partner_revocation::Column::ConnectionId.eq(id))
                        .filter(partner_revocation::Column::CompletedAt.is_null())
                        .exec(txn)
                        .await?;
                    if done.rows_affected != 1 {
                        // Finished already (a job run twice): the whole transition is a no-op.
                        return Err(StoreError::AlreadyDone);
                    }
                }
                Effect::StoreTokens(_)
                | Effect::DiscardTokens
                | Effect::ScheduleFetch
                | Effect::CancelFetch
                | Effect::ResetFailures
                | Effect::ResetRefreshFailures
                | Effect::CountRefreshFailure(_)
                | Effect::MarkRefreshOutcomeUnknown => {}
            }
        }
        Ok(())
    }

    /// Owes a partner-side revocation of `refresh_token`, sealed, due at once, in the caller's
    /// transaction (the revoker's queue: docs/lifecycle.md).
    pub(super) async fn queue_revocation(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
        partner: &str,
        refresh_token: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let revocation_id = uuid::Uuid::now_v7().to_string();
        let sealed = self
            .keyring
            .seal(&revocation_aad(&revocation_id), refresh_token.as_bytes());
        partner_revocation::Entity::insert(partner_revocation::ActiveModel {
            id: Set(revocation_id),
            connection_id: Set(id.to_owned()),
            partner: Set(partner.to_owned()),
            token_ciphertext: Set(Some(sealed.blob)),
            key_id: Set(Some(sealed.key_id)),
            attempts: Set(0),
            next_attempt_at: Set(now),
            last_error: Set(None),
            created_at: Set(now),
            completed_at: Set(None),
            outcome: Set(None),
        })
        .exec(txn)
        .await?;
        Ok(())
    }
}

fn token_plaintext(tokens: &TokenSet) -> Vec<u8> {
    serde_json::to_vec(&TokenPlain {
        a: tokens.access_token.expose().clone(),
        r: tokens.refresh_token.as_ref().map(|r| r.expose().clone()),
    })
    .expect("token JSON serializes")
}
