//! Property tests of the connection lifecycle: the pure transition table, and the store applying
//! random event sequences on SQLite and PostgreSQL against the table as a model.

use std::{
    collections::HashSet,
    sync::atomic::{AtomicU64, Ordering},
};

use chrono::{TimeDelta, Utc};
use engine::{
    Store, StoreError,
    ids::{PartnerName, UserId},
    invitation::{
        DeliveryRecord, DeliveryResult, EmailAddress, InvitationEnd, MessageKind, NewInvitation,
    },
    model::{Actor, Change, ErrorInfo, NewAuthorization, RevocationFinish, TokenSet},
    secret::SecretString,
    state::{
        EffectKind as Effect, Event as EventData, EventKind as Event, InvalidTransition, State,
        TransitionSummary as Transition,
    },
    testing::TestDb,
};

/// The table, by event kind: each kind with sample data (the table only looks at the data to
/// borrow it into effects, and at whether a revocation carries an alert).
fn transition(from: Option<State>, event: Event) -> Result<Transition, InvalidTransition> {
    engine::state::transition(from, &sample(event, 0)).map(|t| t.summary())
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// An event of `kind` with the data its effects need (unique per call where storage needs it).
fn sample(kind: Event, n: u64) -> EventData {
    let now = Utc::now();
    match kind {
        Event::Invite => EventData::Invite {
            invitation: NewInvitation {
                id: uuid::Uuid::now_v7().to_string(),
                // A clinic of its own per call: the store allows one pending invitation per
                // clinic and connection.
                clinic_id: format!("prop-clinic-{n}"),
                clinician: "dr-prop".to_owned(),
                email: EmailAddress::parse("patient@example.org").unwrap(),
                expires_at: now + TimeDelta::days(30),
            },
        },
        // Invitations and messages the connection does not have: no-ops in the store
        // (`AlreadyDone`), like a revocation it does not owe.
        Event::InviteResent => EventData::InviteResent {
            invitation_id: format!("none-{n}"),
        },
        Event::InvitationEnded => EventData::InvitationEnded {
            invitation_id: format!("none-{n}"),
            end: InvitationEnd::Cancelled,
            last: true,
        },
        Event::DeliveryRecorded => EventData::DeliveryRecorded {
            record: DeliveryRecord {
                seq: -1,
                kind: MessageKind::Webhook,
                attempt: 1,
                result: DeliveryResult::Sent {
                    detail: "HTTP 204".to_owned(),
                },
            },
        },
        Event::StartAuthorization => EventData::StartAuthorization {
            authorization: NewAuthorization {
                state_hash: format!("prop-state-{n}"),
                pkce_verifier: SecretString::from(format!("verifier-{n}")),
                expires_at: now + TimeDelta::minutes(10),
            },
        },
        Event::Authorized => EventData::Authorized {
            tokens: token_set(n),
        },
        Event::AuthorizationInterrupted => EventData::AuthorizationInterrupted,
        Event::AuthorizationDeclined => EventData::AuthorizationDeclined,
        Event::AuthorizationFailed => EventData::AuthorizationFailed {
            alert: ErrorInfo::new("invalid_scope", "proptest"),
        },
        Event::RefreshStarted => EventData::RefreshStarted,
        Event::Refreshed => EventData::Refreshed {
            tokens: token_set(n),
        },
        Event::RefreshDeferred => EventData::RefreshDeferred { retry_at: now },
        Event::RefreshMisconfigured => EventData::RefreshMisconfigured {
            retry_at: now,
            alert: ErrorInfo::new("invalid_client", "proptest"),
        },
        Event::RefreshAbandoned => EventData::RefreshAbandoned { retry_at: now },
        Event::PartnerRevoked => EventData::PartnerRevoked { alert: None },
        Event::Fail => EventData::Fail,
        Event::Disconnect => EventData::Disconnect,
        // A revocation this connection does not owe: finishing it is a no-op (`AlreadyDone`).
        Event::RevocationFinished => EventData::RevocationFinished {
            finish: RevocationFinish {
                revocation_id: format!("none-{n}"),
                confirmed: true,
                attempts: 1,
                error: None,
            },
        },
        Event::Note => EventData::Note {
            name: "proptest_note",
        },
    }
}

fn token_set(n: u64) -> TokenSet {
    TokenSet {
        access_token: SecretString::from(format!("access-{n}")),
        refresh_token: Some(SecretString::from(format!("refresh-{n}"))),
        expires_at: Some(Utc::now() + TimeDelta::hours(1)),
        scope: Some("offline_access".to_owned()),
    }
}
use proptest::{
    prelude::*,
    test_runner::{TestCaseError, TestRunner},
};

/// Event sequences that mostly follow the table (so walks get deep) with random events mixed in
/// (so rejections are exercised). Each step picks among the allowed events that change the
/// state (60%), among all allowed events (15%) or among all events (25%).
fn events(max_len: usize) -> impl Strategy<Value = Vec<Event>> {
    let step = (0u8..20, any::<prop::sample::Index>());
    prop::collection::vec(step, 0..max_len).prop_map(|steps| {
        let mut state = None;
        let mut events = Vec::with_capacity(steps.len());
        for (mode, pick) in steps {
            // Events into token-holding states count thrice, so refreshes are reached often.
            let choices: Vec<Event> = Event::ALL
                .into_iter()
                .flat_map(|e| {
                    let n = match (mode, transition(state, e)) {
                        (15.., _) => 1,
                        (12.., result) => usize::from(result.is_ok()),
                        (_, Ok(t)) if t.from == Some(t.to) => 0,
                        (_, Ok(t)) if t.to.holds_tokens() => 3,
                        (_, result) => usize::from(result.is_ok()),
                    };
                    std::iter::repeat_n(e, n)
                })
                .collect();
            let event = *pick.get(&choices);
            state = transition(state, event).map_or(state, |t| Some(t.to));
            events.push(event);
        }
        events
    })
}

/// Every state a connection can be "in", including not existing yet.
fn all_from() -> impl Iterator<Item = Option<State>> {
    std::iter::once(None).chain(State::ALL.into_iter().map(Some))
}

/// The properties every single step of the table must satisfy, allowed or not.
fn check_step(
    from: Option<State>,
    event: Event,
    result: &Result<Transition, InvalidTransition>,
) -> Result<(), TestCaseError> {
    let t = match result {
        Err(err) => {
            // (e) a rejection echoes its input.
            prop_assert_eq!(err, &InvalidTransition { from, event });
            // (a) a connection can always be created; (d) a Note is allowed in every state.
            let creates = matches!(event, Event::Invite | Event::StartAuthorization);
            prop_assert!(from.is_some() || !creates, "{event} rejected from none");
            let journal_only = matches!(
                event,
                Event::Note | Event::RevocationFinished | Event::DeliveryRecorded
            );
            prop_assert!(from.is_none() || !journal_only, "{event} rejected");
            return Ok(());
        }
        Ok(t) => t,
    };
    // (e) an allowed transition echoes its input.
    prop_assert_eq!(t.from, from);
    prop_assert_eq!(t.event, event);
    let entering = from != Some(t.to);
    let has = |e: Effect| t.effects.contains(&e);
    // (a) no transition out of nowhere.
    if from.is_none() {
        prop_assert!(
            matches!(event, Event::Invite | Event::StartAuthorization),
            "{event} from none"
        );
    }
    // (b) terminal states are left only by a reconnect or a new invitation.
    if let Some(f) = from.filter(|f| f.is_terminal())
        && t.to != f
    {
        prop_assert!(
            matches!(event, Event::StartAuthorization | Event::Invite),
            "{f} left by {event}"
        );
    }
    // (c) Active is entered only by Authorized (from Authorizing) or from Refreshing; Refreshing
    // only by RefreshStarted from Active.
    if t.to == State::Active && entering && from != Some(State::Refreshing) {
        prop_assert_eq!((from, event), (Some(State::Authorizing), Event::Authorized));
    }
    if t.to == State::Refreshing && entering {
        prop_assert_eq!((from, event), (Some(State::Active), Event::RefreshStarted));
    }
    // (d) effects agree with the states.
    if has(Effect::StoreTokens) {
        prop_assert!(t.to == State::Active && entering, "{t:?}");
    }
    let held = from.is_some_and(State::holds_tokens);
    if !held && t.to.holds_tokens() {
        prop_assert!(
            has(Effect::StoreTokens),
            "tokens without StoreTokens: {t:?}"
        );
    }
    if held && !t.to.holds_tokens() {
        prop_assert!(has(Effect::DiscardTokens), "tokens kept: {t:?}");
    }
    if has(Effect::DiscardTokens) {
        prop_assert!(!t.to.holds_tokens(), "{t:?}");
    }
    if event == Event::Note {
        prop_assert!(!entering && t.effects.is_empty(), "{t:?}");
    }
    if event == Event::RevocationFinished {
        prop_assert!(
            !entering && t.effects == [Effect::FinishRevocation],
            "{t:?}"
        );
    }
    // (g) a refresh outcome leaves the lock, and counts or resets the refresh failures.
    if from == Some(State::Refreshing) && t.to == State::Active {
        prop_assert!(
            has(Effect::CountRefreshFailure) || has(Effect::ResetRefreshFailures),
            "{t:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Random walks through the table from a connection that does not exist yet.
    #[test]
    fn random_walks_obey_the_lifecycle(events in events(64)) {
        let mut state: Option<State> = None;
        // Tokens may only be held after an Authorized since the last token-less state.
        let mut authorized = false;
        for event in events {
            let result = transition(state, event);
            check_step(state, event, &result)?;
            let Ok(t) = result else { continue }; // rejected: the state stays as it was
            if t.to.holds_tokens() {
                authorized |= event == Event::Authorized;
                prop_assert!(authorized, "{} reached without Authorized", t.to);
            } else {
                authorized = false;
            }
            state = Some(t.to);
        }
    }
}

/// (e) every pair, exhaustively, is either allowed or an `InvalidTransition` echoing it.
#[test]
fn every_pair_is_decided_consistently() {
    for from in all_from() {
        for event in Event::ALL {
            check_step(from, event, &transition(from, event)).unwrap();
        }
    }
}

/// (f) the allowed transitions are exactly this list: a change to the table must be made in both.
#[test]
fn allowed_transitions_match_the_expected_table() {
    use Event as E;
    use State::*;
    let expected: HashSet<(Option<State>, Event, State)> = [
        (None, E::Invite, Invited),
        (None, E::StartAuthorization, Authorizing),
        (Some(Invited), E::Invite, Invited),
        (Some(Invited), E::StartAuthorization, Authorizing),
        (Some(Invited), E::Disconnect, Revoked),
        (Some(Invited), E::Note, Invited),
        (Some(Invited), E::InviteResent, Invited),
        (Some(Invited), E::InvitationEnded, Revoked),
        (Some(Invited), E::DeliveryRecorded, Invited),
        (Some(Authorizing), E::DeliveryRecorded, Authorizing),
        (Some(Active), E::DeliveryRecorded, Active),
        (Some(Refreshing), E::DeliveryRecorded, Refreshing),
        (Some(Revoked), E::DeliveryRecorded, Revoked),
        (Some(Failed), E::DeliveryRecorded, Failed),
        (Some(Invited), E::RevocationFinished, Invited),
        (Some(Authorizing), E::StartAuthorization, Authorizing),
        (Some(Authorizing), E::Authorized, Active),
        (Some(Authorizing), E::AuthorizationInterrupted, Authorizing),
        (Some(Authorizing), E::AuthorizationDeclined, Failed),
        (Some(Authorizing), E::AuthorizationFailed, Failed),
        (Some(Authorizing), E::Disconnect, Revoked),
        (Some(Authorizing), E::Note, Authorizing),
        (Some(Authorizing), E::RevocationFinished, Authorizing),
        (Some(Active), E::RefreshStarted, Refreshing),
        (Some(Active), E::PartnerRevoked, Revoked),
        (Some(Active), E::Fail, Failed),
        (Some(Active), E::Disconnect, Revoked),
        (Some(Active), E::Note, Active),
        (Some(Active), E::RevocationFinished, Active),
        (Some(Refreshing), E::Refreshed, Active),
        (Some(Refreshing), E::RefreshDeferred, Active),
        (Some(Refreshing), E::RefreshMisconfigured, Active),
        (Some(Refreshing), E::RefreshAbandoned, Active),
        (Some(Refreshing), E::PartnerRevoked, Revoked),
        (Some(Refreshing), E::Fail, Failed),
        (Some(Refreshing), E::Disconnect, Revoked),
        (Some(Refreshing), E::Note, Refreshing),
        (Some(Refreshing), E::RevocationFinished, Refreshing),
        (Some(Revoked), E::StartAuthorization, Authorizing),
        (Some(Revoked), E::Invite, Invited),
        (Some(Revoked), E::Note, Revoked),
        (Some(Revoked), E::RevocationFinished, Revoked),
        (Some(Failed), E::StartAuthorization, Authorizing),
        (Some(Failed), E::Invite, Invited),
        (Some(Failed), E::Note, Failed),
        (Some(Failed), E::RevocationFinished, Failed),
    ]
    .into_iter()
    .collect();
    let allowed: HashSet<_> = all_from()
        .flat_map(|from| Event::ALL.into_iter().map(move |event| (from, event)))
        .filter_map(|(from, event)| transition(from, event).ok().map(|t| (from, event, t.to)))
        .collect();
    let mut missing: Vec<_> = expected.difference(&allowed).collect();
    let mut unexpected: Vec<_> = allowed.difference(&expected).collect();
    missing.sort_by_key(|k| format!("{k:?}"));
    unexpected.sort_by_key(|k| format!("{k:?}"));
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "table changed: missing {missing:?}, unexpected {unexpected:?}"
    );
}

/// The event plus the data its storage effects need.
fn change_for(event: Event) -> Change {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    Change::new(sample(event, n), Actor::system("proptest"))
}

/// Applies `events` to a fresh (user, partner) and compares every step with the table.
async fn store_follows_model(store: &Store, events: Vec<Event>) -> Result<(), TestCaseError> {
    let user = UserId::parse(&format!("prop-{}", UNIQUE.fetch_add(1, Ordering::Relaxed))).unwrap();
    let partner = PartnerName::parse("sandbox-cgm").unwrap();
    let mut id = None;
    for event in events {
        let Some(id) = id else {
            // Nothing exists yet: only `open_connection` can apply an event.
            let result = store
                .open_connection(&user, &partner, change_for(event))
                .await;
            match transition(None, event) {
                Ok(t) => {
                    let (applied, created) =
                        result.map_err(|e| TestCaseError::fail(format!("{event}: {e:?}")))?;
                    prop_assert!(created);
                    prop_assert_eq!(&applied.transition, &t);
                    prop_assert_eq!(
                        (applied.connection.state, applied.connection.version),
                        (t.to, 1)
                    );
                    id = Some(applied.connection.id);
                }
                Err(expected) => {
                    prop_assert!(
                        matches!(&result, Err(StoreError::InvalidTransition(e)) if *e == expected),
                        "{event} from none: {result:?}"
                    );
                    prop_assert!(store.list_for_user(&user).await.unwrap().is_empty());
                }
            }
            continue;
        };
        let before = store.get(id).await.unwrap();
        let journal_before = store.journal(id).await.unwrap().len();
        let result = store
            .apply(id, Some(before.version), change_for(event))
            .await;
        let no_op = matches!(
            event,
            Event::RevocationFinished
                | Event::InviteResent
                | Event::InvitationEnded
                | Event::DeliveryRecorded
        );
        if no_op && transition(Some(before.state), event).is_ok() {
            // Nothing owed under that id: finishing it is a no-op, written nowhere.
            prop_assert!(matches!(result, Err(StoreError::AlreadyDone)), "{result:?}");
            prop_assert_eq!(&store.get(id).await.unwrap(), &before);
            prop_assert_eq!(store.journal(id).await.unwrap().len(), journal_before);
            continue;
        }
        let after = store.get(id).await.unwrap();
        let journal = store.journal(id).await.unwrap();
        match transition(Some(before.state), event) {
            Ok(t) => {
                let applied = result.map_err(|e| {
                    TestCaseError::fail(format!("{event} in {}: {e:?}", before.state))
                })?;
                prop_assert_eq!(&applied.transition, &t);
                prop_assert_eq!(&applied.connection, &after);
                prop_assert_eq!((after.state, after.version), (t.to, before.version + 1));
                prop_assert_eq!(journal.len(), journal_before + 1);
                let last = journal.last().unwrap();
                prop_assert_eq!(
                    (last.seq, last.from, last.to),
                    (after.version, Some(before.state), t.to)
                );
                let name = if event == Event::Note {
                    "proptest_note"
                } else {
                    event.as_str()
                };
                prop_assert_eq!(&last.event, name);
                prop_assert_eq!(after.has_tokens, t.to.holds_tokens());
            }
            Err(expected) => {
                prop_assert!(
                    matches!(&result, Err(StoreError::InvalidTransition(e)) if *e == expected),
                    "{event} in {}: {result:?}",
                    before.state
                );
                prop_assert_eq!(&after, &before, "rejected {} changed the row", event);
                prop_assert_eq!(
                    journal.len(),
                    journal_before,
                    "rejected {} journaled",
                    event
                );
            }
        }
    }
    let Some(id) = id else { return Ok(()) };
    let conn = store.get(id).await.unwrap();
    let journal = store.journal(id).await.unwrap();
    prop_assert_eq!(journal.len() as i64, conn.version);
    for (i, entry) in journal.iter().enumerate() {
        prop_assert_eq!(entry.seq, i as i64 + 1);
        prop_assert_eq!(entry.connection_id, id);
        let previous = i.checked_sub(1).map(|p| journal[p].to);
        prop_assert_eq!(entry.from, previous, "no chain at seq {}", entry.seq);
    }
    prop_assert_eq!(journal.last().map(|e| e.to), Some(conn.state));
    prop_assert_eq!(conn.has_tokens, conn.state.holds_tokens());
    Ok(())
}

/// Runs the store property with a few cases on one database, then drops it.
fn run_store_property<F: Future<Output = TestDb>>(make_db: impl FnOnce() -> F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(make_db());
    let store = rt.block_on(db.store());
    let mut runner = TestRunner::new(ProptestConfig::with_cases(12));
    let outcome = runner.run(&events(40), |events| {
        rt.block_on(store_follows_model(&store, events))
    });
    drop(store);
    rt.block_on(db.cleanup());
    if let Err(err) = outcome {
        panic!("{err}");
    }
}

#[test]
fn sqlite_store_follows_the_table() {
    run_store_property(TestDb::sqlite);
}

#[test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL skipped: set TRIBUTARY_TEST_POSTGRES_URL to run it"
)]
fn postgres_store_follows_the_table() {
    run_store_property(TestDb::postgres);
}
