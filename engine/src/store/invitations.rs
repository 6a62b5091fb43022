//! Clinician invitations (docs/notifications.md#invitations): created, re-sent, accepted,
//! declined and ended by transitions (`effects.rs`); read here for the clinic, always with the
//! address masked.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::{
    Applied, Result, Store, StoreError,
    entities::{connection, invitation},
    is_unique_violation,
};
use crate::{
    ids::{ConnectionId, PartnerName, UserId},
    invitation::{Invitation, InvitationEnd, InvitationStatus, NewInvitation},
    model::{Actor, Change},
    state::{Event, State},
};

/// Filters of a clinic's invitation list.
#[derive(Debug, Clone, Default)]
pub struct InvitationQuery {
    pub status: Option<InvitationStatus>,
    pub partner: Option<String>,
    /// Keyset cursor: invitations with a smaller id (older), newest first.
    pub before_id: Option<String>,
    pub limit: u64,
}

/// How often a change is retried after losing a race with another writer of the connection.
const RETRIES: u32 = 5;

pub(super) fn invite_email_aad(connection_id: &str) -> Vec<u8> {
    format!("invite-email:{connection_id}").into_bytes()
}

pub(super) fn contact_aad(connection_id: &str) -> Vec<u8> {
    format!("contact:{connection_id}").into_bytes()
}

impl Store {
    /// Invites `user` to connect `partner` for the invitation's clinic: a new connection in
    /// `invited`, or the user's existing one (a revoked/failed one keeps its cursor, an invited
    /// one gains this clinic's invitation). `AlreadyDone` when this clinic has a pending
    /// invitation on it already (see [`Store::pending_invitation`]).
    pub async fn invite(
        &self,
        user: &UserId,
        partner: &PartnerName,
        invitation: NewInvitation,
        actor: Actor,
    ) -> Result<(Applied, bool)> {
        let clinic = invitation.clinic_id.clone();
        let change = Change::new(Event::Invite { invitation }, actor)
            .details(serde_json::json!({ "clinicId": clinic }));
        self.open_connection(user, partner, change).await
    }

    /// The clinic's pending invitation of `user` to `partner`, if any.
    pub async fn pending_invitation(
        &self,
        clinic: &str,
        user: &UserId,
        partner: &PartnerName,
    ) -> Result<Option<Invitation>> {
        let row = invitation::Entity::find()
            .filter(invitation::Column::ClinicId.eq(clinic))
            .filter(invitation::Column::PatientUserId.eq(user.as_str()))
            .filter(invitation::Column::Partner.eq(partner.as_str()))
            .filter(invitation::Column::Status.eq(InvitationStatus::Pending.as_str()))
            .one(&self.db)
            .await?;
        match row {
            Some(row) => Ok(Some(self.with_connection_state(row).await?)),
            None => Ok(None),
        }
    }

    /// One invitation of `clinic`; another clinic's is `NotFound`, like a missing one.
    pub async fn invitation(&self, clinic: &str, id: &str) -> Result<Invitation> {
        let row = invitation::Entity::find_by_id(id.to_owned())
            .filter(invitation::Column::ClinicId.eq(clinic))
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        self.with_connection_state(row).await
    }

    /// A clinic's invitations, newest first.
    pub async fn invitations(
        &self,
        clinic: &str,
        query: &InvitationQuery,
    ) -> Result<Vec<Invitation>> {
        let mut select = invitation::Entity::find().filter(invitation::Column::ClinicId.eq(clinic));
        if let Some(status) = query.status {
            select = select.filter(invitation::Column::Status.eq(status.as_str()));
        }
        if let Some(partner) = &query.partner {
            select = select.filter(invitation::Column::Partner.eq(partner.as_str()));
        }
        if let Some(before) = &query.before_id {
            select = select.filter(invitation::Column::Id.lt(before.as_str()));
        }
        let rows = select
            .order_by_desc(invitation::Column::Id)
            .limit(query.limit)
            .all(&self.db)
            .await?;
        let ids: Vec<String> = rows.iter().map(|r| r.connection_id.clone()).collect();
        let states: std::collections::HashMap<String, String> = connection::Entity::find()
            .filter(connection::Column::Id.is_in(ids))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|c| (c.id, c.state))
            .collect();
        rows.into_iter()
            .map(|row| {
                let state = states
                    .get(&row.connection_id)
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("invitation {} has no connection", row.id))
                    })?
                    .clone();
                invitation_to_domain(row, &state)
            })
            .collect()
    }

    async fn with_connection_state(&self, row: invitation::Model) -> Result<Invitation> {
        let state = connection::Entity::find_by_id(row.connection_id.clone())
            .one(&self.db)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("invitation {} has no connection", row.id)))?
            .state;
        invitation_to_domain(row, &state)
    }

    /// Queues the invitation email again (the caller enforces the resend interval).
    pub async fn resend_invitation(
        &self,
        clinic: &str,
        id: &str,
        actor: Actor,
    ) -> Result<Invitation> {
        let invitation = self.invitation(clinic, id).await?;
        let change = Change::new(
            Event::InviteResent {
                invitation_id: id.to_owned(),
            },
            actor,
        )
        .details(serde_json::json!({ "clinicId": clinic, "invitation": id }));
        self.apply(invitation.connection_id, None, change).await?;
        self.invitation(clinic, id).await
    }

    /// Ends a pending invitation (cancelled by its clinic, or expired). The connection leaves
    /// `invited` when it was its last pending invitation: whether it was is read again on every
    /// try, under the connection's version, so two clinics cancelling at once cannot both
    /// believe another invitation remains.
    pub async fn end_invitation(
        &self,
        clinic: &str,
        id: &str,
        end: InvitationEnd,
        actor: Actor,
    ) -> Result<Invitation> {
        let mut attempt = 0;
        loop {
            let invitation = self.invitation(clinic, id).await?;
            if invitation.status != InvitationStatus::Pending {
                return Err(StoreError::AlreadyDone);
            }
            let connection = self.get(invitation.connection_id).await?;
            let others = invitation::Entity::find()
                .filter(invitation::Column::ConnectionId.eq(invitation.connection_id.to_string()))
                .filter(invitation::Column::Status.eq(InvitationStatus::Pending.as_str()))
                .filter(invitation::Column::Id.ne(id))
                .count(&self.db)
                .await?;
            let change = Change::new(
                Event::InvitationEnded {
                    invitation_id: id.to_owned(),
                    end,
                    last: others == 0,
                },
                actor.clone(),
            )
            .reason(end.reason())
            .details(serde_json::json!({ "clinicId": clinic, "invitation": id }));
            match self
                .apply(invitation.connection_id, Some(connection.version), change)
                .await
            {
                Err(StoreError::Conflict { .. }) if attempt < RETRIES => attempt += 1,
                Err(err) => return Err(err),
                Ok(_) => return self.invitation(clinic, id).await,
            }
        }
    }

    /// Pending invitations past their expiry: (clinic, id), oldest first.
    pub async fn expired_invitations(&self, limit: u64) -> Result<Vec<(String, String)>> {
        Ok(invitation::Entity::find()
            .filter(invitation::Column::Status.eq(InvitationStatus::Pending.as_str()))
            .filter(invitation::Column::ExpiresAt.lte(self.clock.now()))
            .order_by_asc(invitation::Column::ExpiresAt)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| (row.clinic_id, row.id))
            .collect())
    }

    /// The address an invitation was sent to (for the deliver step only).
    pub async fn invitation_address(&self, id: &str) -> Result<Option<String>> {
        let Some(row) = invitation::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let plain = self.keyring.open(
            &row.email_key_id,
            &row.email_ciphertext,
            &invite_email_aad(&row.connection_id),
        )?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| StoreError::Corrupt("invitation address is not UTF-8".into()))
    }

    /// The patient's contact address of a connection (for the deliver step only).
    pub async fn contact_address(&self, id: ConnectionId) -> Result<Option<String>> {
        let row = connection::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        let (Some(blob), Some(key_id)) = (&row.contact_ciphertext, &row.contact_key_id) else {
            return Ok(None);
        };
        let plain = self.keyring.open(key_id, blob, &contact_aad(&row.id))?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| StoreError::Corrupt("contact address is not UTF-8".into()))
    }

    /// `CreateInvitation`'s row, in the transition's transaction.
    pub(super) async fn insert_invitation(
        &self,
        txn: &DatabaseTransaction,
        connection_id: &str,
        user_id: &str,
        partner: &str,
        new: &NewInvitation,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let sealed = self.keyring.seal(
            &invite_email_aad(connection_id),
            new.email.expose().as_bytes(),
        );
        let inserted = invitation::Entity::insert(invitation::ActiveModel {
            id: Set(new.id.clone()),
            connection_id: Set(connection_id.to_owned()),
            clinic_id: Set(new.clinic_id.clone()),
            clinician: Set(new.clinician.clone()),
            partner: Set(partner.to_owned()),
            patient_user_id: Set(user_id.to_owned()),
            email_ciphertext: Set(sealed.blob),
            email_key_id: Set(sealed.key_id),
            email_masked: Set(new.email.masked()),
            status: Set(InvitationStatus::Pending.as_str().to_owned()),
            created_at: Set(now),
            expires_at: Set(new.expires_at),
            last_sent_at: Set(now),
            sent_count: Set(0),
            closed_at: Set(None),
        })
        .exec(txn)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            // This clinic has a pending invitation on the connection already (a concurrent
            // request won): the whole transition is a no-op.
            Err(err) if is_unique_violation(&err) => Err(StoreError::AlreadyDone),
            Err(err) => Err(err.into()),
        }
    }

    /// Closes the connection's pending invitations (accepted or declined), or one of them.
    pub(super) async fn close_invitations(
        &self,
        txn: &DatabaseTransaction,
        connection_id: &str,
        only: Option<&str>,
        status: InvitationStatus,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let mut update = invitation::Entity::update_many()
            .set(invitation::ActiveModel {
                status: Set(status.as_str().to_owned()),
                closed_at: Set(Some(now)),
                ..Default::default()
            })
            .filter(invitation::Column::ConnectionId.eq(connection_id))
            .filter(invitation::Column::Status.eq(InvitationStatus::Pending.as_str()));
        if let Some(id) = only {
            update = update.filter(invitation::Column::Id.eq(id));
        }
        Ok(update.exec(txn).await?.rows_affected)
    }
}

fn invitation_to_domain(row: invitation::Model, state: &str) -> Result<Invitation> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("{what} of invitation {}", row.id));
    Ok(Invitation {
        connection_id: row
            .connection_id
            .parse()
            .map_err(|_| corrupt("connection id"))?,
        status: InvitationStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?,
        connection_state: state
            .parse::<State>()
            .map_err(|_| corrupt("connection state"))?,
        sent_count: u32::try_from(row.sent_count).unwrap_or(0),
        id: row.id,
        clinic_id: row.clinic_id,
        clinician: row.clinician,
        partner: row.partner,
        patient_user_id: row.patient_user_id,
        email_masked: row.email_masked,
        created_at: row.created_at,
        expires_at: row.expires_at,
        last_sent_at: row.last_sent_at,
        closed_at: row.closed_at,
    })
}
