//! The connection lifecycle, declared in one place (docs/lifecycle.md explains it in prose).
//!
//! | from \ event              | to          | effects (all performed by the store, in the transition's transaction) |
//! |---------------------------|-------------|------------------------------------------------------|
//! | (none)/revoked/failed/invited Invite | invited | CreateInvitation, SendInvite                 |
//! | invited InviteResent      | invited     | SendInvite                                           |
//! | invited InvitationEnded (last, cancelled) | revoked | EndInvitation                           |
//! | invited InvitationEnded (last, expired) | failed | EndInvitation                              |
//! | invited InvitationEnded (not last) | invited | EndInvitation                                 |
//! | (none) StartAuthorization | authorizing | IssueAuthorization                                   |
//! | invited StartAuthorization| authorizing | AcceptInvitations, IssueAuthorization                |
//! | authorizing StartAuthorization | authorizing | InvalidateAuthorizations, IssueAuthorization    |
//! | authorizing Authorized    | active      | InvalidateAuthorizations, StoreTokens, ResetFailures, ScheduleFetch |
//! | authorizing AuthorizationInterrupted | authorizing | — (the user may try again)            |
//! | authorizing AuthorizationDeclined | failed | InvalidateAuthorizations                        |
//! | authorizing AuthorizationFailed | failed | InvalidateAuthorizations, AlertOperators          |
//! | active RefreshStarted     | refreshing  | —                                                    |
//! | refreshing Refreshed      | active      | StoreTokens, ResetRefreshFailures                    |
//! | refreshing RefreshDeferred | active     | CountRefreshFailure (tokens kept; retried then)      |
//! | refreshing RefreshMisconfigured | active | CountRefreshFailure, AlertOperators                 |
//! | refreshing RefreshAbandoned | active    | MarkRefreshOutcomeUnknown, CountRefreshFailure       |
//! | active/refreshing PartnerRevoked | revoked | DiscardTokens, CancelFetch, NotifyConnectionLost (+ AlertOperators when it carries an alert) |
//! | active/refreshing Fail    | failed      | DiscardTokens, RevokeAtPartner, CancelFetch, NotifyConnectionLost |
//! | invited Disconnect        | revoked     | DeclineInvitations                                   |
//! | other live Disconnect     | revoked     | InvalidateAuthorizations, DiscardTokens, RevokeAtPartner, CancelFetch |
//! | revoked/failed StartAuthorization | authorizing | IssueAuthorization (reconnect: same row, cursor kept) |
//! | any RevocationFinished    | same        | FinishRevocation                                     |
//! | any DeliveryRecorded      | same        | RecordDelivery                                       |
//! | any Note                  | same        | — (journal-only)                                     |
//!
//! Beside the table's effects, every transition that changes the state queues a
//! `connection.state_changed` event for each configured webhook endpoint, in the same
//! transaction (docs/notifications.md#webhooks).
//!
//! Everything else is an [`InvalidTransition`]. The table is pure: no IO, no clock. Events carry
//! the data their effects need ([`Effect`] borrows it), so a transition that stores tokens cannot
//! be asked for without the tokens. The store performs every effect in the transaction that
//! records the transition; what leaves the process (emails, webhooks) is written to the outbox
//! there and delivered afterwards by the deliver step.

mod effects;
mod events;

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

pub use self::{
    effects::{Effect, EffectKind},
    events::{Event, EventKind},
};
use crate::invitation::InvitationEnd;

/// Where a connection is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A clinician invited the patient; nothing authorized yet.
    Invited,
    /// An OAuth authorization is in progress (the user is at the partner's consent page).
    Authorizing,
    /// Tokens held; data are transferred.
    Active,
    /// One refresh of the access token is in flight; the state doubles as the per-connection
    /// refresh lock: only the writer that moved `active → refreshing` may refresh
    /// (docs/oauth.md).
    Refreshing,
    /// Disconnected by the user or revoked by the partner; tokens discarded.
    Revoked,
    /// Gave up (declined consent, misconfiguration, failure budget spent); tokens discarded.
    Failed,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Invited,
        State::Authorizing,
        State::Active,
        State::Refreshing,
        State::Revoked,
        State::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Invited => "invited",
            State::Authorizing => "authorizing",
            State::Active => "active",
            State::Refreshing => "refreshing",
            State::Revoked => "revoked",
            State::Failed => "failed",
        }
    }

    /// Revoked and failed are terminal: only a reconnect (or a new invitation) leaves them.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Revoked | State::Failed)
    }

    /// Live connections are the ones the one-per-user-and-partner rule counts.
    pub fn is_live(self) -> bool {
        !self.is_terminal()
    }

    /// States in which the connection holds usable tokens.
    pub fn holds_tokens(self) -> bool {
        matches!(self, State::Active | State::Refreshing)
    }

    /// States in which a data transfer may be claimed, started, and commit its windows. A
    /// refresh in flight does not stop a transfer: the transfer holds tokens read at its start,
    /// which stay valid until the refresh commits, and its windows are still its own. Every SQL
    /// guard on a transfer is built from this list ([`State::transfer_guard_sql`]).
    pub fn may_transfer(self) -> bool {
        self.holds_tokens()
    }

    /// The states that [`State::may_transfer`], as an SQL list: `('active', 'refreshing')`.
    pub fn transfer_guard_sql() -> String {
        let states: Vec<String> = State::ALL
            .into_iter()
            .filter(|s| s.may_transfer())
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        format!("({})", states.join(", "))
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown connection state {0:?}")]
pub struct UnknownState(pub String);

/// The outcome of an allowed event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition<'e> {
    pub from: Option<State>,
    pub to: State,
    pub event: EventKind,
    pub effects: Vec<Effect<'e>>,
}

impl Transition<'_> {
    /// What happened, without the event's data.
    pub fn summary(&self) -> TransitionSummary {
        TransitionSummary {
            from: self.from,
            to: self.to,
            event: self.event,
            effects: self.effects.iter().map(Effect::kind).collect(),
        }
    }

    pub fn has(&self, kind: EffectKind) -> bool {
        self.effects.iter().any(|e| e.kind() == kind)
    }
}

/// A [`Transition`] without the event's data, as returned to callers of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionSummary {
    pub from: Option<State>,
    pub to: State,
    pub event: EventKind,
    pub effects: Vec<EffectKind>,
}

/// An event that the current state does not allow. Changes nothing (HTTP 409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event} is not allowed in state {}", from.map_or("(new)", State::as_str))]
pub struct InvalidTransition {
    pub from: Option<State>,
    pub event: EventKind,
}

/// The transition table. `from` is `None` for a connection that does not exist yet.
pub fn transition(from: Option<State>, event: &Event) -> Result<Transition<'_>, InvalidTransition> {
    use Effect::*;
    use State::*;

    let (to, effects): (State, Vec<Effect<'_>>) = match (from, event) {
        (None | Some(Invited | Revoked | Failed), Event::Invite { invitation }) => (
            Invited,
            vec![CreateInvitation(invitation), SendInvite(&invitation.id)],
        ),
        (Some(Invited), Event::InviteResent { invitation_id }) => {
            (Invited, vec![SendInvite(invitation_id)])
        }
        (
            Some(Invited),
            Event::InvitationEnded {
                invitation_id,
                end,
                last,
            },
        ) => {
            let to = match (last, end) {
                (false, _) => Invited,
                (true, InvitationEnd::Cancelled) => Revoked,
                (true, InvitationEnd::Expired) => Failed,
            };
            (to, vec![EndInvitation(invitation_id, *end)])
        }
        (None | Some(Revoked | Failed), Event::StartAuthorization { authorization }) => {
            (Authorizing, vec![IssueAuthorization(authorization)])
        }
        (Some(Invited), Event::StartAuthorization { authorization }) => (
            Authorizing,
            vec![AcceptInvitations, IssueAuthorization(authorization)],
        ),

        (Some(Authorizing), Event::StartAuthorization { authorization }) => (
            Authorizing,
            vec![InvalidateAuthorizations, IssueAuthorization(authorization)],
        ),
        (Some(Authorizing), Event::Authorized { tokens }) => (
            Active,
            vec![
                InvalidateAuthorizations,
                StoreTokens(tokens),
                ResetFailures,
                ScheduleFetch,
            ],
        ),
        (Some(Authorizing), Event::AuthorizationInterrupted) => (Authorizing, vec![]),
        (Some(Authorizing), Event::AuthorizationDeclined) => {
            (Failed, vec![InvalidateAuthorizations])
        }
        (Some(Authorizing), Event::AuthorizationFailed { alert }) => (
            Failed,
            vec![InvalidateAuthorizations, AlertOperators(alert)],
        ),

        (Some(Active), Event::RefreshStarted) => (Refreshing, vec![]),
        (Some(Refreshing), Event::Refreshed { tokens }) => {
            (Active, vec![StoreTokens(tokens), ResetRefreshFailures])
        }
        (Some(Refreshing), Event::RefreshDeferred { retry_at }) => {
            (Active, vec![CountRefreshFailure(*retry_at)])
        }
        (Some(Refreshing), Event::RefreshMisconfigured { retry_at, alert }) => (
            Active,
            vec![CountRefreshFailure(*retry_at), AlertOperators(alert)],
        ),
        (Some(Refreshing), Event::RefreshAbandoned { retry_at }) => (
            Active,
            vec![MarkRefreshOutcomeUnknown, CountRefreshFailure(*retry_at)],
        ),

        (Some(Active | Refreshing), Event::PartnerRevoked { alert }) => {
            let mut effects = vec![DiscardTokens, CancelFetch, NotifyConnectionLost];
            if let Some(alert) = alert {
                effects.push(AlertOperators(alert));
            }
            (Revoked, effects)
        }
        (Some(Active | Refreshing), Event::Fail) => (
            Failed,
            vec![
                DiscardTokens,
                RevokeAtPartner,
                CancelFetch,
                NotifyConnectionLost,
            ],
        ),

        (Some(Invited), Event::Disconnect) => (Revoked, vec![DeclineInvitations]),
        (Some(Authorizing | Active | Refreshing), Event::Disconnect) => (
            Revoked,
            vec![
                InvalidateAuthorizations,
                DiscardTokens,
                RevokeAtPartner,
                CancelFetch,
            ],
        ),

        (Some(state), Event::RevocationFinished { finish }) => {
            (state, vec![FinishRevocation(finish)])
        }
        (Some(state), Event::DeliveryRecorded { record }) => (state, vec![RecordDelivery(record)]),
        (Some(state), Event::Note { .. }) => (state, vec![]),

        _ => {
            return Err(InvalidTransition {
                from,
                event: event.kind(),
            });
        }
    };
    Ok(Transition {
        from,
        to,
        event: event.kind(),
        effects,
    })
}

#[cfg(test)]
mod tests;
