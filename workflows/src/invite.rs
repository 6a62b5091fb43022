//! Clinician invitations (docs/notifications.md#invitations): a clinic invites a patient to
//! connect a partner; the invitation email goes out through the outbox; the patient completes
//! the ordinary authorization; the clinic can re-send (at most once per interval), cancel, and
//! sees the invitation expire.

use std::time::Duration;

use chrono::TimeDelta;
use engine::{
    StoreError,
    ids::{PartnerName, UserId},
    invitation::{EmailAddress, Invitation, InvitationEnd, NewInvitation},
    model::Actor,
    state::State,
    store::InvitationQuery,
};

use crate::{Workflows, error::WorkflowError};

/// Invitation tunables.
#[derive(Debug, Clone)]
pub struct InvitationSettings {
    /// How long an invitation stays open. Default 30 days.
    pub expiry: Duration,
    /// Least time between two emails of one invitation. Default 1 hour.
    pub resend_interval: Duration,
}

impl Default for InvitationSettings {
    fn default() -> Self {
        Self {
            expiry: Duration::from_secs(30 * 24 * 3600),
            resend_interval: Duration::from_secs(3600),
        }
    }
}

/// What an invite request did.
#[derive(Debug, Clone)]
pub enum InviteOutcome {
    /// A new invitation; its email is queued.
    Created(Invitation),
    /// This clinic's pending invitation of the patient to this partner (nothing sent again).
    Existing(Invitation),
}

/// Who invites.
#[derive(Debug, Clone)]
pub struct Inviter {
    pub clinic_id: String,
    pub clinician: String,
    pub actor: Actor,
}

impl Workflows {
    /// `POST /v1/clinics/{clinicId}/invites`.
    pub async fn invite(
        &self,
        inviter: &Inviter,
        user: &UserId,
        partner: &str,
        email: EmailAddress,
    ) -> Result<InviteOutcome, WorkflowError> {
        let name = PartnerName::parse(partner)
            .ok()
            .filter(|name| self.partners.get(name.as_str()).is_some())
            .ok_or_else(|| WorkflowError::UnknownPartner(partner.to_owned()))?;
        if self.settings.delivery.email.is_none() {
            return Err(WorkflowError::EmailNotConfigured);
        }
        if let Some(existing) = self
            .store
            .pending_invitation(&inviter.clinic_id, user, &name)
            .await?
        {
            return Ok(InviteOutcome::Existing(existing));
        }
        let expires_at = self.store.clock().now()
            + TimeDelta::from_std(self.settings.invitations.expiry).unwrap_or(TimeDelta::days(30));
        let invitation = NewInvitation {
            id: uuid::Uuid::now_v7().to_string(),
            clinic_id: inviter.clinic_id.clone(),
            clinician: inviter.clinician.clone(),
            email,
            expires_at,
        };
        let id = invitation.id.clone();
        match self
            .store
            .invite(user, &name, invitation, inviter.actor.clone())
            .await
        {
            Ok(_) => Ok(InviteOutcome::Created(
                self.store.invitation(&inviter.clinic_id, &id).await?,
            )),
            // A concurrent request of the same clinic won: answer with its invitation.
            Err(StoreError::AlreadyDone) => self
                .store
                .pending_invitation(&inviter.clinic_id, user, &name)
                .await?
                .map(InviteOutcome::Existing)
                .ok_or(WorkflowError::Conflict),
            Err(StoreError::InvalidTransition(t))
                if matches!(t.from, Some(State::Active | State::Refreshing)) =>
            {
                Err(WorkflowError::AlreadyActive)
            }
            Err(err) => Err(err.into()),
        }
    }

    pub async fn invitation(&self, clinic: &str, id: &str) -> Result<Invitation, WorkflowError> {
        Ok(self.store.invitation(clinic, id).await?)
    }

    pub async fn invitations(
        &self,
        clinic: &str,
        query: &InvitationQuery,
    ) -> Result<Vec<Invitation>, WorkflowError> {
        Ok(self.store.invitations(clinic, query).await?)
    }

    /// `POST …/invites/{id}/resend`: `TooSoon` within the resend interval of the last email.
    pub async fn resend_invitation(
        &self,
        clinic: &str,
        id: &str,
        actor: Actor,
    ) -> Result<Invitation, WorkflowError> {
        let invitation = self.store.invitation(clinic, id).await?;
        if invitation.status != engine::invitation::InvitationStatus::Pending {
            return Err(WorkflowError::InvitationClosed);
        }
        let next = invitation.last_sent_at
            + TimeDelta::from_std(self.settings.invitations.resend_interval)
                .unwrap_or(TimeDelta::hours(1));
        let now = self.store.clock().now();
        if now < next {
            let wait = (next - now).to_std().unwrap_or_default();
            return Err(WorkflowError::TooSoon {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            });
        }
        match self.store.resend_invitation(clinic, id, actor).await {
            Err(StoreError::AlreadyDone | StoreError::InvalidTransition(_)) => {
                Err(WorkflowError::InvitationClosed)
            }
            other => Ok(other?),
        }
    }

    /// `POST …/invites/{id}/cancel`.
    pub async fn cancel_invitation(
        &self,
        clinic: &str,
        id: &str,
        actor: Actor,
    ) -> Result<Invitation, WorkflowError> {
        match self
            .store
            .end_invitation(clinic, id, InvitationEnd::Cancelled, actor)
            .await
        {
            Err(StoreError::AlreadyDone | StoreError::InvalidTransition(_)) => {
                Err(WorkflowError::InvitationClosed)
            }
            other => Ok(other?),
        }
    }

    /// Ends the pending invitations past their expiry (the maintenance loop). Returns how many.
    pub async fn expire_invitations(&self) -> Result<usize, WorkflowError> {
        let mut expired = 0;
        for (clinic, id) in self.store.expired_invitations(500).await? {
            match self
                .store
                .end_invitation(
                    &clinic,
                    &id,
                    InvitationEnd::Expired,
                    Actor::system("invitations"),
                )
                .await
            {
                Ok(_) => expired += 1,
                // Accepted or cancelled meanwhile.
                Err(StoreError::AlreadyDone | StoreError::InvalidTransition(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(expired)
    }
}
