//! The connection lifecycle, declared in one place (docs/lifecycle.md explains it in prose).
//!
//! | from \ event              | to          | effects (all performed by the store, in the transition's transaction) |
//! |---------------------------|-------------|------------------------------------------------------|
//! | (none) Invite             | invited     | SendInvite                                           |
//! | (none) StartAuthorization | authorizing | IssueAuthorization                                   |
//! | invited Invite            | invited     | SendInvite (a re-sent invitation)                    |
//! | invited StartAuthorization| authorizing | IssueAuthorization                                   |
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
//! | active/refreshing PartnerRevoked | revoked | DiscardTokens, CancelFetch (+ AlertOperators when it carries an alert) |
//! | active/refreshing Fail    | failed      | DiscardTokens, RevokeAtPartner, CancelFetch          |
//! | any live Disconnect       | revoked     | InvalidateAuthorizations, DiscardTokens, RevokeAtPartner, CancelFetch |
//! | revoked/failed StartAuthorization | authorizing | IssueAuthorization (reconnect: same row, cursor kept) |
//! | revoked/failed Invite     | invited     | SendInvite                                           |
//! | any RevocationFinished    | same        | FinishRevocation                                     |
//! | any Note                  | same        | — (journal-only)                                     |
//!
//! Everything else is an [`InvalidTransition`]. The table is pure: no IO, no clock. Events carry
//! the data their effects need ([`Effect`] borrows it), so a transition that stores tokens cannot
//! be asked for without the tokens. The store performs every effect in the transaction that
//! records the transition; `SendInvite` is the one exception still open: it is recorded in the
//! journal, and the email itself belongs to the invitation workflow, which is not built yet.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{ErrorInfo, NewAuthorization, RevocationFinish, TokenSet};

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

/// Something that happened to a connection, with the data its effects need.
#[derive(Debug, Clone)]
pub enum Event {
    /// A clinician asked the patient to connect.
    Invite,
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
    /// A journal-only entry that changes nothing; `name` is the journal's event name.
    Note { name: &'static str },
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Invite => EventKind::Invite,
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
            Event::Note { .. } => EventKind::Note,
        }
    }

    /// The journal's name for the event (a note's own name).
    pub fn journal_name(&self) -> &'static str {
        match self {
            Event::Note { name } => name,
            Event::RevocationFinished { finish } if finish.confirmed => {
                "partner_revocation_confirmed"
            }
            Event::RevocationFinished { .. } => "partner_revocation_abandoned",
            other => other.kind().as_str(),
        }
    }
}

/// What kind of event: what the table matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Invite,
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
    Note,
}

impl EventKind {
    pub const ALL: [EventKind; 16] = [
        EventKind::Invite,
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
        EventKind::Note,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Invite => "invite",
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
            EventKind::Note => "note",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the store must do because of a transition; borrows what it needs from the event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect<'e> {
    /// Email the patient an invitation (the invitation workflow; not built yet).
    SendInvite,
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
            Effect::SendInvite => EffectKind::SendInvite,
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
    SendInvite,
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
        (None | Some(Invited | Revoked | Failed), Event::Invite) => (Invited, vec![SendInvite]),
        (None | Some(Invited | Revoked | Failed), Event::StartAuthorization { authorization }) => {
            (Authorizing, vec![IssueAuthorization(authorization)])
        }

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
            let mut effects = vec![DiscardTokens, CancelFetch];
            if let Some(alert) = alert {
                effects.push(AlertOperators(alert));
            }
            (Revoked, effects)
        }
        (Some(Active | Refreshing), Event::Fail) => {
            (Failed, vec![DiscardTokens, RevokeAtPartner, CancelFetch])
        }

        (Some(Invited | Authorizing | Active | Refreshing), Event::Disconnect) => (
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
