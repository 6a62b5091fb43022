use chrono::{TimeDelta, Utc};

use super::*;
use crate::{
    invitation::{EmailAddress, NewInvitation},
    model::{ErrorInfo, NewAuthorization, TokenSet},
    secret::SecretString,
};

fn invite() -> Event {
    Event::Invite {
        invitation: NewInvitation {
            id: "i1".to_owned(),
            clinic_id: "c1".to_owned(),
            clinician: "dr".to_owned(),
            email: EmailAddress::parse("p@example.org").unwrap(),
            expires_at: Utc::now(),
        },
    }
}

fn tokens() -> TokenSet {
    TokenSet {
        access_token: SecretString::from("a"),
        refresh_token: Some(SecretString::from("r")),
        expires_at: Some(Utc::now() + TimeDelta::hours(2)),
        scope: None,
    }
}

fn authorization() -> NewAuthorization {
    NewAuthorization {
        state_hash: "h".to_owned(),
        pkce_verifier: SecretString::from("v"),
        expires_at: Utc::now(),
    }
}

#[test]
fn states_round_trip_through_strings() {
    for state in State::ALL {
        assert_eq!(state.as_str().parse::<State>().unwrap(), state);
    }
    assert!("paused".parse::<State>().is_err());
}

#[test]
fn transfer_guard_lists_exactly_the_states_that_may_transfer() {
    assert_eq!(State::transfer_guard_sql(), "('active', 'refreshing')");
    for state in State::ALL {
        assert_eq!(
            State::transfer_guard_sql().contains(&format!("'{state}'")),
            state.may_transfer()
        );
    }
}

#[test]
fn connect_flow() {
    let start = Event::StartAuthorization {
        authorization: authorization(),
    };
    let t = transition(None, &start).unwrap();
    assert_eq!(t.to, State::Authorizing);
    assert_eq!(t.summary().effects, vec![EffectKind::IssueAuthorization]);
    let authorized = Event::Authorized { tokens: tokens() };
    let t = transition(Some(State::Authorizing), &authorized).unwrap();
    assert_eq!(t.to, State::Active);
    assert!(t.has(EffectKind::StoreTokens));
    assert!(t.has(EffectKind::ScheduleFetch));
    assert!(t.has(EffectKind::ResetFailures));
    // The effect carries the event's tokens: the store cannot be asked to store none.
    assert!(
        t.effects
            .iter()
            .any(|e| matches!(e, Effect::StoreTokens(t) if t.access_token.expose() == "a"))
    );
}

#[test]
fn already_active_cannot_start_authorization() {
    let start = Event::StartAuthorization {
        authorization: authorization(),
    };
    let err = transition(Some(State::Active), &start).unwrap_err();
    assert_eq!(err.from, Some(State::Active));
    assert_eq!(
        err.to_string(),
        "event start_authorization is not allowed in state active"
    );
}

#[test]
fn declined_consent_fails_without_alert_and_misconfiguration_alerts() {
    let declined = transition(Some(State::Authorizing), &Event::AuthorizationDeclined).unwrap();
    assert_eq!(declined.to, State::Failed);
    assert!(!declined.has(EffectKind::AlertOperators));
    let failed = Event::AuthorizationFailed {
        alert: ErrorInfo::new("invalid_scope", "x"),
    };
    let broken = transition(Some(State::Authorizing), &failed).unwrap();
    assert!(broken.has(EffectKind::AlertOperators));
}

#[test]
fn refresh_outcomes_count_and_alert_in_the_transition_itself() {
    let at = Utc::now();
    let deferred = Event::RefreshDeferred { retry_at: at };
    let t = transition(Some(State::Refreshing), &deferred).unwrap();
    assert_eq!(t.to, State::Active);
    assert_eq!(t.summary().effects, vec![EffectKind::CountRefreshFailure]);
    let misconfigured = Event::RefreshMisconfigured {
        retry_at: at,
        alert: ErrorInfo::new("invalid_client", "x"),
    };
    let t = transition(Some(State::Refreshing), &misconfigured).unwrap();
    assert!(t.has(EffectKind::AlertOperators) && t.has(EffectKind::CountRefreshFailure));
    let abandoned = Event::RefreshAbandoned { retry_at: at };
    let t = transition(Some(State::Refreshing), &abandoned).unwrap();
    assert!(t.has(EffectKind::MarkRefreshOutcomeUnknown));
    let refreshed = Event::Refreshed { tokens: tokens() };
    let t = transition(Some(State::Refreshing), &refreshed).unwrap();
    assert!(t.has(EffectKind::ResetRefreshFailures) && !t.has(EffectKind::ResetFailures));
}

#[test]
fn disconnect_discards_and_revokes_but_partner_revocation_does_not_call_partner() {
    let t = transition(Some(State::Active), &Event::Disconnect).unwrap();
    assert_eq!(t.to, State::Revoked);
    assert!(t.has(EffectKind::DiscardTokens));
    assert!(t.has(EffectKind::RevokeAtPartner));
    let revoked = Event::PartnerRevoked { alert: None };
    let t = transition(Some(State::Refreshing), &revoked).unwrap();
    assert_eq!(t.to, State::Revoked);
    assert!(!t.has(EffectKind::RevokeAtPartner));
    assert!(!t.has(EffectKind::AlertOperators));
    let lost = Event::PartnerRevoked {
        alert: Some(ErrorInfo::new("refresh_token_reuse", "x")),
    };
    assert!(
        transition(Some(State::Active), &lost)
            .unwrap()
            .has(EffectKind::AlertOperators)
    );
}

#[test]
fn terminal_states_only_left_by_reconnect_or_invite() {
    let start = Event::StartAuthorization {
        authorization: authorization(),
    };
    for from in [State::Revoked, State::Failed] {
        assert_eq!(
            transition(Some(from), &start).unwrap().to,
            State::Authorizing
        );
        assert_eq!(
            transition(Some(from), &invite()).unwrap().to,
            State::Invited
        );
        for event in [Event::RefreshStarted, Event::Fail, Event::Disconnect] {
            assert!(transition(Some(from), &event).is_err(), "{from} {event:?}");
        }
    }
}

#[test]
fn refresh_lock_is_exclusive() {
    assert!(transition(Some(State::Refreshing), &Event::RefreshStarted).is_err());
    assert!(transition(Some(State::Authorizing), &Event::RefreshStarted).is_err());
}

#[test]
fn invitations_create_send_and_end() {
    let event = invite();
    let t = transition(None, &event).unwrap();
    assert_eq!(t.to, State::Invited);
    assert_eq!(
        t.summary().effects,
        [EffectKind::CreateInvitation, EffectKind::SendInvite]
    );
    let ended = |end, last| Event::InvitationEnded {
        invitation_id: "i1".to_owned(),
        end,
        last,
    };
    let invited = Some(State::Invited);
    assert_eq!(
        transition(invited, &ended(InvitationEnd::Cancelled, true))
            .unwrap()
            .to,
        State::Revoked
    );
    assert_eq!(
        transition(invited, &ended(InvitationEnd::Expired, true))
            .unwrap()
            .to,
        State::Failed
    );
    assert_eq!(
        transition(invited, &ended(InvitationEnd::Expired, false))
            .unwrap()
            .to,
        State::Invited
    );
    assert!(transition(Some(State::Active), &ended(InvitationEnd::Expired, true)).is_err());
    let start = Event::StartAuthorization {
        authorization: authorization(),
    };
    assert!(
        transition(invited, &start)
            .unwrap()
            .has(EffectKind::AcceptInvitations)
    );
    assert!(
        !transition(Some(State::Revoked), &start)
            .unwrap()
            .has(EffectKind::AcceptInvitations)
    );
    assert_eq!(
        transition(invited, &Event::Disconnect)
            .unwrap()
            .summary()
            .effects,
        [EffectKind::DeclineInvitations]
    );
    assert!(transition(Some(State::Active), &invite()).is_err());
}

#[test]
fn a_stopped_active_connection_notifies_once() {
    for from in [State::Active, State::Refreshing] {
        for event in [Event::PartnerRevoked { alert: None }, Event::Fail] {
            assert!(
                transition(Some(from), &event)
                    .unwrap()
                    .has(EffectKind::NotifyConnectionLost),
                "{from} {event:?}"
            );
        }
        assert!(
            !transition(Some(from), &Event::Disconnect)
                .unwrap()
                .has(EffectKind::NotifyConnectionLost)
        );
    }
    let declined = transition(Some(State::Authorizing), &Event::AuthorizationDeclined).unwrap();
    assert!(!declined.has(EffectKind::NotifyConnectionLost));
}
