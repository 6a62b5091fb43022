//! Effects: what the store must do because of a transition.

use chrono::{DateTime, Utc};

use crate::{
    invitation::{DeliveryRecord, InvitationEnd, NewInvitation},
    model::{ErrorInfo, NewAuthorization, RevocationFinish, TokenSet},
};

/// What the store must do because of a transition; borrows what it needs from the event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect<'e> {
    /// Record a new invitation (its address sealed) and make its address the patient's
    /// contact address for notices.
    CreateInvitation(&'e NewInvitation),
    /// Queue the invitation email (outbox) and count it on the invitation.
    SendInvite(&'e str),
    /// The connection's pending invitations were accepted (the patient started connecting).
    AcceptInvitations,
    /// The connection's pending invitations were declined (the patient disconnected).
    DeclineInvitations,
    /// One pending invitation ends (cancelled or expired).
    EndInvitation(&'e str, InvitationEnd),
    /// Queue the notices that an active connection stopped: the patient, and the clinics whose
    /// invitation it came from (docs/notifications.md#the-outbox).
    NotifyConnectionLost,
    /// Record a delivery attempt on its outbox message.
    RecordDelivery(&'e DeliveryRecord),
    /// Store a fresh `state` + PKCE verifier (the caller hands out the authorize URL).
    IssueAuthorization(&'e NewAuthorization),
    /// Pending `state`s of earlier attempts stop being accepted.
    InvalidateAuthorizations,
    /// Persist the new token set (encrypted) and plan its refresh.
    StoreTokens(&'e TokenSet),
    /// Remove token material from the connection at once.
    DiscardTokens,
    /// Queue an RFC 7009 revocation of the refresh token at the partner and wake the revoker.
    RevokeAtPartner,
    /// Plan the next data transfer (due at once).
    ScheduleFetch,
    /// No more data transfers; a transfer in flight loses its lease.
    CancelFetch,
    /// A new grant: the transfer failure streak and the refresh failures start from zero.
    ResetFailures,
    /// A refresh succeeded: refresh failures start from zero (the transfer streak is the
    /// transfer's own).
    ResetRefreshFailures,
    /// A refresh failed: one more refresh failure; next attempt at the time given.
    CountRefreshFailure(DateTime<Utc>),
    /// Record that the outcome of the last refresh is unknown.
    MarkRefreshOutcomeUnknown,
    /// Tell operators: a configuration fault, not the user's (folded by partner and code).
    AlertOperators(&'e ErrorInfo),
    /// Record a partner-side revocation's outcome and delete its sealed token.
    FinishRevocation(&'e RevocationFinish),
}

impl Effect<'_> {
    /// The effect without its data (for comparisons and summaries).
    pub fn kind(&self) -> EffectKind {
        match self {
            Effect::CreateInvitation(_) => EffectKind::CreateInvitation,
            Effect::SendInvite(_) => EffectKind::SendInvite,
            Effect::AcceptInvitations => EffectKind::AcceptInvitations,
            Effect::DeclineInvitations => EffectKind::DeclineInvitations,
            Effect::EndInvitation(..) => EffectKind::EndInvitation,
            Effect::NotifyConnectionLost => EffectKind::NotifyConnectionLost,
            Effect::RecordDelivery(_) => EffectKind::RecordDelivery,
            Effect::IssueAuthorization(_) => EffectKind::IssueAuthorization,
            Effect::InvalidateAuthorizations => EffectKind::InvalidateAuthorizations,
            Effect::StoreTokens(_) => EffectKind::StoreTokens,
            Effect::DiscardTokens => EffectKind::DiscardTokens,
            Effect::RevokeAtPartner => EffectKind::RevokeAtPartner,
            Effect::ScheduleFetch => EffectKind::ScheduleFetch,
            Effect::CancelFetch => EffectKind::CancelFetch,
            Effect::ResetFailures => EffectKind::ResetFailures,
            Effect::ResetRefreshFailures => EffectKind::ResetRefreshFailures,
            Effect::CountRefreshFailure(_) => EffectKind::CountRefreshFailure,
            Effect::MarkRefreshOutcomeUnknown => EffectKind::MarkRefreshOutcomeUnknown,
            Effect::AlertOperators(_) => EffectKind::AlertOperators,
            Effect::FinishRevocation(_) => EffectKind::FinishRevocation,
        }
    }
}

/// [`Effect`] without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EffectKind {
    CreateInvitation,
    SendInvite,
    AcceptInvitations,
    DeclineInvitations,
    EndInvitation,
    NotifyConnectionLost,
    RecordDelivery,
    IssueAuthorization,
    InvalidateAuthorizations,
    StoreTokens,
    DiscardTokens,
    RevokeAtPartner,
    ScheduleFetch,
    CancelFetch,
    ResetFailures,
    ResetRefreshFailures,
    CountRefreshFailure,
    MarkRefreshOutcomeUnknown,
    AlertOperators,
    FinishRevocation,
}
