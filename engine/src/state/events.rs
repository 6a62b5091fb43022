//! Events: what happened to a connection, with the data their effects need.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    invitation::{DeliveryRecord, InvitationEnd, NewInvitation},
    model::{ErrorInfo, NewAuthorization, RevocationFinish, TokenSet},
};

/// Something that happened to a connection, with the data its effects need.
#[derive(Debug, Clone)]
pub enum Event {
    /// A clinician asked the patient to connect (also: another clinic, or the same clinic
    /// again after the invitation ended).
    Invite { invitation: NewInvitation },
    /// The clinic asked for the invitation email again.
    InviteResent { invitation_id: String },
    /// A pending invitation was cancelled or expired; `last`: it was the connection's only
    /// pending one, so the connection leaves `invited`.
    InvitationEnded {
        invitation_id: String,
        end: InvitationEnd,
        last: bool,
    },
    /// The user starts or restarts an OAuth authorization (also: reconnect).
    StartAuthorization { authorization: NewAuthorization },
    /// The callback's code was exchanged for tokens.
    Authorized { tokens: TokenSet },
    /// The partner reported a temporary error on the callback, or the code exchange failed
    /// transiently; the user may retry.
    AuthorizationInterrupted,
    /// The user declined consent (`access_denied`); never retried.
    AuthorizationDeclined,
    /// The authorization cannot succeed as configured; operators are told `alert`.
    AuthorizationFailed { alert: ErrorInfo },
    /// This writer takes the refresh lock.
    RefreshStarted,
    /// New tokens stored.
    Refreshed { tokens: TokenSet },
    /// The refresh failed transiently; tokens kept, the next attempt at `retry_at`.
    RefreshDeferred { retry_at: DateTime<Utc> },
    /// The token endpoint rejected our client (a configuration fault, not the user's);
    /// operators are told `alert`; the next attempt at `retry_at`.
    RefreshMisconfigured {
        retry_at: DateTime<Utc>,
        alert: ErrorInfo,
    },
    /// A refresh was abandoned half-way by a stopped worker: whether the partner rotated the
    /// refresh token is unknown (docs/oauth.md#lost-refresh). Next attempt at `retry_at`.
    RefreshAbandoned { retry_at: DateTime<Utc> },
    /// The partner says the grant is gone (`invalid_grant`); `alert` when operators must know
    /// (e.g. the grant was lost to a refresh whose outcome was unknown).
    PartnerRevoked { alert: Option<ErrorInfo> },
    /// The failure budget is spent.
    Fail,
    /// The user (or an operator) disconnects.
    Disconnect,
    /// A partner-side revocation owed by this connection ended (confirmed or abandoned).
    RevocationFinished { finish: RevocationFinish },
    /// A delivery attempt of an outbox message, recorded on the message with its journal
    /// entry.
    DeliveryRecorded { record: DeliveryRecord },
    /// A journal-only entry that changes nothing; `name` is the journal's event name.
    Note { name: &'static str },
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Invite { .. } => EventKind::Invite,
            Event::InviteResent { .. } => EventKind::InviteResent,
            Event::InvitationEnded { .. } => EventKind::InvitationEnded,
            Event::StartAuthorization { .. } => EventKind::StartAuthorization,
            Event::Authorized { .. } => EventKind::Authorized,
            Event::AuthorizationInterrupted => EventKind::AuthorizationInterrupted,
            Event::AuthorizationDeclined => EventKind::AuthorizationDeclined,
            Event::AuthorizationFailed { .. } => EventKind::AuthorizationFailed,
            Event::RefreshStarted => EventKind::RefreshStarted,
            Event::Refreshed { .. } => EventKind::Refreshed,
            Event::RefreshDeferred { .. } => EventKind::RefreshDeferred,
            Event::RefreshMisconfigured { .. } => EventKind::RefreshMisconfigured,
            Event::RefreshAbandoned { .. } => EventKind::RefreshAbandoned,
            Event::PartnerRevoked { .. } => EventKind::PartnerRevoked,
            Event::Fail => EventKind::Fail,
            Event::Disconnect => EventKind::Disconnect,
            Event::RevocationFinished { .. } => EventKind::RevocationFinished,
            Event::DeliveryRecorded { .. } => EventKind::DeliveryRecorded,
            Event::Note { .. } => EventKind::Note,
        }
    }

    /// The journal's name for the event (a note's own name).
    pub fn journal_name(&self) -> &'static str {
        match self {
            Event::Note { name } => name,
            Event::DeliveryRecorded { record } => record.journal_name(),
            Event::RevocationFinished { finish } if finish.confirmed => {
                "partner_revocation_confirmed"
            }
            Event::RevocationFinished { .. } => "partner_revocation_abandoned",
            Event::InvitationEnded { end, .. } => match end {
                InvitationEnd::Cancelled => "invitation_cancelled",
                InvitationEnd::Expired => "invitation_expired",
            },
            other => other.kind().as_str(),
        }
    }
}

/// What kind of event: what the table matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Invite,
    InviteResent,
    InvitationEnded,
    StartAuthorization,
    Authorized,
    AuthorizationInterrupted,
    AuthorizationDeclined,
    AuthorizationFailed,
    RefreshStarted,
    Refreshed,
    RefreshDeferred,
    RefreshMisconfigured,
    RefreshAbandoned,
    PartnerRevoked,
    Fail,
    Disconnect,
    RevocationFinished,
    DeliveryRecorded,
    Note,
}

impl EventKind {
    pub const ALL: [EventKind; 19] = [
        EventKind::Invite,
        EventKind::InviteResent,
        EventKind::InvitationEnded,
        EventKind::StartAuthorization,
        EventKind::Authorized,
        EventKind::AuthorizationInterrupted,
        EventKind::AuthorizationDeclined,
        EventKind::AuthorizationFailed,
        EventKind::RefreshStarted,
        EventKind::Refreshed,
        EventKind::RefreshDeferred,
        EventKind::RefreshMisconfigured,
        EventKind::RefreshAbandoned,
        EventKind::PartnerRevoked,
        EventKind::Fail,
        EventKind::Disconnect,
        EventKind::RevocationFinished,
        EventKind::DeliveryRecorded,
        EventKind::Note,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Invite => "invite",
            EventKind::InviteResent => "invite_resent",
            EventKind::InvitationEnded => "invitation_ended",
            EventKind::StartAuthorization => "start_authorization",
            EventKind::Authorized => "authorized",
            EventKind::AuthorizationInterrupted => "authorization_interrupted",
            EventKind::AuthorizationDeclined => "authorization_declined",
            EventKind::AuthorizationFailed => "authorization_failed",
            EventKind::RefreshStarted => "refresh_started",
            EventKind::Refreshed => "refreshed",
            EventKind::RefreshDeferred => "refresh_deferred",
            EventKind::RefreshMisconfigured => "refresh_misconfigured",
            EventKind::RefreshAbandoned => "refresh_abandoned",
            EventKind::PartnerRevoked => "partner_revoked",
            EventKind::Fail => "fail",
            EventKind::Disconnect => "disconnect",
            EventKind::RevocationFinished => "revocation_finished",
            EventKind::DeliveryRecorded => "delivery_recorded",
            EventKind::Note => "note",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
