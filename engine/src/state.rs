//! The connection lifecycle, declared in one place.
//!
//! | from \ event          | to            | effects                                                 |
//! |-----------------------|---------------|---------------------------------------------------------|
//! | (none) Invite         | invited       | SendInvite                                              |
//! | (none) StartAuth      | authorizing   | IssueAuthorization                                      |
//! | invited Invite        | invited       | SendInvite (a re-sent invitation)                       |
//! | invited StartAuth     | authorizing   | IssueAuthorization                                      |
//! | authorizing StartAuth | authorizing   | InvalidateAuthorizations, IssueAuthorization            |
//! | authorizing Authorized| active        | InvalidateAuthorizations, StoreTokens, ScheduleFetch    |
//! | authorizing Interrupted| authorizing  | (the user may try again)                                |
//! | authorizing Declined  | failed        | InvalidateAuthorizations                                |
//! | authorizing AuthFailed| failed        | InvalidateAuthorizations, AlertOperators                |
//! | active RefreshStarted | refreshing    | —                                                       |
//! | refreshing Refreshed  | active        | StoreTokens                                             |
//! | refreshing RefreshDeferred | active   | — (tokens kept; retried later)                          |
//! | active/refreshing PartnerRevoked | revoked | DiscardTokens, CancelFetch                        |
//! | active/refreshing Fail | failed       | DiscardTokens, RevokeAtPartner, CancelFetch             |
//! | any live Disconnect   | revoked       | InvalidateAuthorizations, DiscardTokens, RevokeAtPartner, CancelFetch |
//! | revoked/failed StartAuth | authorizing | IssueAuthorization (reconnect: same row, cursor kept)  |
//! | revoked/failed Invite | invited       | SendInvite                                              |
//! | any Note              | same          | — (journal-only: e.g. partner revocation confirmed)     |
//!
//! Everything else is an [`InvalidTransition`]. The table is pure: no IO, no clock. The store
//! performs the storage effects in the transaction that records the transition; the caller
//! performs the others.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

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
    /// refresh lock (C9): only the writer that moved `active → refreshing` may refresh.
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

/// Something that happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A clinician asked the patient to connect.
    Invite,
    /// The user starts or restarts an OAuth authorization (also: reconnect).
    StartAuthorization,
    /// The callback's code was exchanged for tokens.
    Authorized,
    /// The partner reported a temporary error on the callback (`server_error`,
    /// `temporarily_unavailable`) or the code exchange failed transiently; the user may retry.
    AuthorizationInterrupted,
    /// The user declined consent (`access_denied`); never retried.
    AuthorizationDeclined,
    /// The authorization cannot succeed as configured (`invalid_scope`, `unauthorized_client`, the
    /// token endpoint rejected the code, …); operators are alerted.
    AuthorizationFailed,
    /// This writer takes the refresh lock.
    RefreshStarted,
    /// New tokens stored.
    Refreshed,
    /// The refresh failed transiently or by misconfiguration; tokens kept, retried later.
    RefreshDeferred,
    /// The partner says the grant is gone (`invalid_grant`).
    PartnerRevoked,
    /// The failure budget is spent.
    Fail,
    /// The user (or an operator) disconnects.
    Disconnect,
    /// A journal-only entry that changes no state (e.g. partner-side revocation confirmed).
    Note,
}

impl Event {
    pub const ALL: [Event; 13] = [
        Event::Invite,
        Event::StartAuthorization,
        Event::Authorized,
        Event::AuthorizationInterrupted,
        Event::AuthorizationDeclined,
        Event::AuthorizationFailed,
        Event::RefreshStarted,
        Event::Refreshed,
        Event::RefreshDeferred,
        Event::PartnerRevoked,
        Event::Fail,
        Event::Disconnect,
        Event::Note,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Invite => "invite",
            Event::StartAuthorization => "start_authorization",
            Event::Authorized => "authorized",
            Event::AuthorizationInterrupted => "authorization_interrupted",
            Event::AuthorizationDeclined => "authorization_declined",
            Event::AuthorizationFailed => "authorization_failed",
            Event::RefreshStarted => "refresh_started",
            Event::Refreshed => "refreshed",
            Event::RefreshDeferred => "refresh_deferred",
            Event::PartnerRevoked => "partner_revoked",
            Event::Fail => "fail",
            Event::Disconnect => "disconnect",
            Event::Note => "note",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the engine must do because of a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Email the patient an invitation.
    SendInvite,
    /// Create a fresh `state` + PKCE verifier and hand out an authorize URL.
    IssueAuthorization,
    /// Pending `state`s of earlier attempts stop being accepted.
    InvalidateAuthorizations,
    /// Persist the new token set (encrypted) in the same transaction.
    StoreTokens,
    /// Remove token material from the connection at once.
    DiscardTokens,
    /// Queue an RFC 7009 revocation of the refresh token at the partner.
    RevokeAtPartner,
    /// Plan the next data transfer.
    ScheduleFetch,
    /// No more data transfers.
    CancelFetch,
    /// Tell operators: this is a configuration fault, not the user's.
    AlertOperators,
}

/// The outcome of an allowed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Option<State>,
    pub to: State,
    pub event: Event,
    pub effects: Vec<Effect>,
}

/// An event that the current state does not allow. Changes nothing (HTTP 409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event} is not allowed in state {}", from.map_or("(new)", State::as_str))]
pub struct InvalidTransition {
    pub from: Option<State>,
    pub event: Event,
}

/// The transition table. `from` is `None` for a connection that does not exist yet.
pub fn transition(from: Option<State>, event: Event) -> Result<Transition, InvalidTransition> {
    use Effect::*;
    use State::*;

    let (to, effects): (State, &[Effect]) = match (from, event) {
        (None, Event::Invite) => (Invited, &[SendInvite]),
        (None, Event::StartAuthorization) => (Authorizing, &[IssueAuthorization]),

        (Some(Invited), Event::Invite) => (Invited, &[SendInvite]),
        (Some(Invited), Event::StartAuthorization) => (Authorizing, &[IssueAuthorization]),

        (Some(Authorizing), Event::StartAuthorization) => {
            (Authorizing, &[InvalidateAuthorizations, IssueAuthorization])
        }
        (Some(Authorizing), Event::Authorized) => (
            Active,
            &[InvalidateAuthorizations, StoreTokens, ScheduleFetch],
        ),
        (Some(Authorizing), Event::AuthorizationInterrupted) => (Authorizing, &[]),
        (Some(Authorizing), Event::AuthorizationDeclined) => (Failed, &[InvalidateAuthorizations]),
        (Some(Authorizing), Event::AuthorizationFailed) => {
            (Failed, &[InvalidateAuthorizations, AlertOperators])
        }

        (Some(Active), Event::RefreshStarted) => (Refreshing, &[]),
        (Some(Refreshing), Event::Refreshed) => (Active, &[StoreTokens]),
        (Some(Refreshing), Event::RefreshDeferred) => (Active, &[]),

        (Some(Active | Refreshing), Event::PartnerRevoked) => {
            (Revoked, &[DiscardTokens, CancelFetch])
        }
        (Some(Active | Refreshing), Event::Fail) => {
            (Failed, &[DiscardTokens, RevokeAtPartner, CancelFetch])
        }

        (Some(Invited | Authorizing | Active | Refreshing), Event::Disconnect) => (
            Revoked,
            &[
                InvalidateAuthorizations,
                DiscardTokens,
                RevokeAtPartner,
                CancelFetch,
            ],
        ),

        (Some(Revoked | Failed), Event::StartAuthorization) => (Authorizing, &[IssueAuthorization]),
        (Some(Revoked | Failed), Event::Invite) => (Invited, &[SendInvite]),

        (Some(state), Event::Note) => (state, &[]),

        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(Transition {
        from,
        to,
        event,
        effects: effects.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_strings() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>().unwrap(), state);
        }
        assert!("paused".parse::<State>().is_err());
    }

    #[test]
    fn connect_flow() {
        let t = transition(None, Event::StartAuthorization).unwrap();
        assert_eq!(t.to, State::Authorizing);
        assert_eq!(t.effects, vec![Effect::IssueAuthorization]);
        let t = transition(Some(State::Authorizing), Event::Authorized).unwrap();
        assert_eq!(t.to, State::Active);
        assert!(t.effects.contains(&Effect::StoreTokens));
        assert!(t.effects.contains(&Effect::ScheduleFetch));
    }

    #[test]
    fn already_active_cannot_start_authorization() {
        let err = transition(Some(State::Active), Event::StartAuthorization).unwrap_err();
        assert_eq!(err.from, Some(State::Active));
        assert_eq!(
            err.to_string(),
            "event start_authorization is not allowed in state active"
        );
    }

    #[test]
    fn declined_consent_fails_without_alert_and_misconfiguration_alerts() {
        let declined = transition(Some(State::Authorizing), Event::AuthorizationDeclined).unwrap();
        assert_eq!(declined.to, State::Failed);
        assert!(!declined.effects.contains(&Effect::AlertOperators));
        let broken = transition(Some(State::Authorizing), Event::AuthorizationFailed).unwrap();
        assert!(broken.effects.contains(&Effect::AlertOperators));
    }

    #[test]
    fn disconnect_discards_and_revokes_but_partner_revocation_does_not_call_partner() {
        let t = transition(Some(State::Active), Event::Disconnect).unwrap();
        assert_eq!(t.to, State::Revoked);
        assert!(t.effects.contains(&Effect::DiscardTokens));
        assert!(t.effects.contains(&Effect::RevokeAtPartner));
        let t = transition(Some(State::Refreshing), Event::PartnerRevoked).unwrap();
        assert_eq!(t.to, State::Revoked);
        assert!(!t.effects.contains(&Effect::RevokeAtPartner));
    }

    #[test]
    fn terminal_states_only_left_by_reconnect_or_invite() {
        for from in [State::Revoked, State::Failed] {
            for event in Event::ALL {
                match transition(Some(from), event) {
                    Ok(t) if t.to != from => assert!(
                        matches!(event, Event::StartAuthorization | Event::Invite),
                        "{from} left by {event}"
                    ),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn refresh_lock_is_exclusive() {
        assert!(transition(Some(State::Refreshing), Event::RefreshStarted).is_err());
        assert!(transition(Some(State::Authorizing), Event::RefreshStarted).is_err());
    }
}
