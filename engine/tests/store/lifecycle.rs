use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use engine::{
    StoreError,
    clock::{Clock, ManualClock},
    model::{Actor, Change, ErrorInfo},
    state::{Event, State},
    store::AuthorizationRejected,
    testing::TestDb,
};

use crate::{active, authorized, leased, partner, records, refuse, start, user};

engine::backend_tests!(
    connect_journal_and_row_agree,
    invalid_transition_changes_nothing,
    concurrent_transitions_exactly_one_wins,
    one_live_connection_per_user_and_partner,
    concurrent_creation_yields_one_row,
    reconnect_reuses_row_and_keeps_cursor,
    state_is_single_use_bound_to_partner_and_expires,
    restart_invalidates_earlier_states,
    tokens_encrypted_at_rest_and_discarded_on_disconnect,
    disconnect_queues_partner_revocation_and_journals_outcome,
    counters_and_cursor_round_trip,
    migrations_twice_are_a_noop,
    finishing_a_revocation_records_row_and_journal_together,
    fail_queues_a_partner_revocation_and_wakes_the_revoker,
);

async fn connect_journal_and_row_agree(db: &TestDb) {
    let store = db.store().await;
    let conn = active(&store, "u1", "acc-1", "ref-1").await;
    assert_eq!(conn.state, State::Active);
    assert_eq!(conn.version, 2);
    assert!(conn.has_tokens);
    assert!(
        conn.next_sync_at.is_some(),
        "activation schedules the first fetch"
    );
    let journal = store.journal(conn.id).await.unwrap();
    assert_eq!(journal.len(), 2);
    assert_eq!(journal[0].from, None);
    assert_eq!(journal[0].to, State::Authorizing);
    assert_eq!(journal[1].from, Some(State::Authorizing));
    assert_eq!(journal[1].to, State::Active);
    assert_eq!(journal[1].event, "authorized");
    assert_eq!(journal.last().unwrap().seq, conn.version);
    assert_eq!(journal.last().unwrap().to, conn.state);
}

async fn invalid_transition_changes_nothing(db: &TestDb) {
    let store = db.store().await;
    let conn = active(&store, "u1", "a", "r").await;
    let err = store
        .apply(conn.id, None, authorized("x", "y"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidTransition(_)), "{err:?}");
    let after = store.get(conn.id).await.unwrap();
    assert_eq!(after, conn);
    assert_eq!(store.journal(conn.id).await.unwrap().len(), 2);
}

async fn concurrent_transitions_exactly_one_wins(db: &TestDb) {
    let store = db.store().await;
    for round in 0..5 {
        let conn = active(&store, &format!("race{round}"), "a", "r").await;
        // Many writers race for the refresh lock from the same version.
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .apply(
                            conn.id,
                            Some(conn.version),
                            Change::new(Event::RefreshStarted, Actor::system(&format!("w{i}"))),
                        )
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(applied) => {
                    wins += 1;
                    assert_eq!(applied.connection.state, State::Refreshing);
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        assert_eq!(wins, 1, "exactly one writer takes the refresh lock");
        let after = store.get(conn.id).await.unwrap();
        assert_eq!(after.version, conn.version + 1);
        let journal = store.journal(conn.id).await.unwrap();
        assert_eq!(
            journal.len() as i64,
            after.version,
            "no half-written journal rows"
        );
    }
}

async fn one_live_connection_per_user_and_partner(db: &TestDb) {
    let store = db.store().await;
    let conn = active(&store, "u1", "a", "r").await;
    // Asking again for an active connection is an invalid transition, not a second row.
    let err = store
        .open_connection(
            &user("u1"),
            &partner(),
            start("again", TimeDelta::minutes(10)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidTransition(_)));
    assert_eq!(store.list_for_user(&user("u1")).await.unwrap().len(), 1);
    // The database itself refuses a second live row, whatever the code does.
    let sql = format!(
        "INSERT INTO connections (id, user_id, partner, state, version, created_at, updated_at, \
         state_changed_at, failure_count, paused) VALUES ('{}', 'u1', 'sandbox-cgm', 'authorizing', \
         1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 0, false)",
        uuid::Uuid::now_v7()
    );
    use sea_orm::ConnectionTrait;
    assert!(store.db().execute_unprepared(&sql).await.is_err());
    let _ = conn;
}

async fn concurrent_creation_yields_one_row(db: &TestDb) {
    let store = db.store().await;
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .open_connection(
                        &user("racer"),
                        &partner(),
                        start(&format!("s{i}"), TimeDelta::minutes(5)),
                    )
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::AlreadyLive | StoreError::Conflict { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(ok >= 1);
    let rows = store.list_for_user(&user("racer")).await.unwrap();
    assert_eq!(rows.len(), 1, "one row whatever the interleaving");
    assert_eq!(
        store.journal(rows[0].id).await.unwrap().len() as i64,
        rows[0].version
    );
}

async fn reconnect_reuses_row_and_keeps_cursor(db: &TestDb) {
    let store = db.store().await;
    // The cursor is `fetched_through`, moved by a real window commit.
    let mut lease = leased(&store, "u1").await;
    let conn = lease.connection.clone();
    let cursor = chrono::SubsecRound::trunc_subsecs(Utc::now() - TimeDelta::days(3), 0);
    let next = Utc::now() + TimeDelta::hours(1);
    store
        .commit_last_chunk(&mut lease, records(1, 3).into(), cursor, next, false)
        .await
        .unwrap();
    assert_eq!(
        store.get(conn.id).await.unwrap().fetched_through,
        Some(cursor)
    );
    let revoked = store
        .apply(
            conn.id,
            None,
            Change::new(Event::Disconnect, Actor::new("user", "u1")),
        )
        .await
        .unwrap()
        .connection;
    assert_eq!(revoked.state, State::Revoked);
    assert!(!revoked.has_tokens);
    let (again, created) = store
        .open_connection(
            &user("u1"),
            &partner(),
            start("reconnect", TimeDelta::minutes(10)),
        )
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.connection.id, conn.id);
    assert_eq!(again.connection.state, State::Authorizing);
    assert_eq!(
        again.connection.fetched_through,
        Some(cursor),
        "cursor kept"
    );
    let back = store
        .apply(conn.id, None, authorized("a2", "r2"))
        .await
        .unwrap()
        .connection;
    assert_eq!(
        back.fetched_through,
        Some(cursor),
        "cursor kept once active again"
    );
    assert_eq!(
        store.record_ids(conn.id, false).await.unwrap().len(),
        3,
        "its records too"
    );
}

async fn state_is_single_use_bound_to_partner_and_expires(db: &TestDb) {
    let clock = ManualClock::new(Utc::now());
    let store = db.store().await.with_clock(Arc::new(clock.clone()));
    let (applied, _) = store
        .open_connection(
            &user("u1"),
            &partner(),
            start("hash-1", TimeDelta::minutes(10)),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_authorization("nope", "sandbox-cgm")
            .await
            .unwrap()
            .unwrap_err(),
        AuthorizationRejected::Unknown
    );
    assert_eq!(
        store
            .consume_authorization("hash-1", "sandbox-pump")
            .await
            .unwrap()
            .unwrap_err(),
        AuthorizationRejected::WrongPartner
    );
    // Two callbacks race with the same state: exactly one gets the verifier.
    let (a, b) = tokio::join!(
        store.consume_authorization("hash-1", "sandbox-cgm"),
        store.consume_authorization("hash-1", "sandbox-cgm")
    );
    let results = [a.unwrap(), b.unwrap()];
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1);
    assert_eq!(won[0].connection_id, applied.connection.id);
    assert_eq!(won[0].pkce_verifier.expose(), "verifier-hash-1");
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(AuthorizationRejected::Reused)))
    );

    // Expiry uses the injected clock.
    store
        .apply(
            applied.connection.id,
            None,
            start("hash-2", TimeDelta::minutes(10)),
        )
        .await
        .unwrap();
    clock.advance(TimeDelta::minutes(11));
    assert_eq!(
        store
            .consume_authorization("hash-2", "sandbox-cgm")
            .await
            .unwrap()
            .unwrap_err(),
        AuthorizationRejected::Expired
    );
}

async fn restart_invalidates_earlier_states(db: &TestDb) {
    let store = db.store().await;
    let (applied, _) = store
        .open_connection(
            &user("u1"),
            &partner(),
            start("first", TimeDelta::minutes(10)),
        )
        .await
        .unwrap();
    store
        .apply(
            applied.connection.id,
            None,
            start("second", TimeDelta::minutes(10)),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_authorization("first", "sandbox-cgm")
            .await
            .unwrap()
            .unwrap_err(),
        AuthorizationRejected::Reused
    );
    assert!(
        store
            .consume_authorization("second", "sandbox-cgm")
            .await
            .unwrap()
            .is_ok()
    );
}

async fn tokens_encrypted_at_rest_and_discarded_on_disconnect(db: &TestDb) {
    let store = db.store().await;
    let access = "ACCESS-plaintext-marker-7f3a9c";
    let refresh = "REFRESH-plaintext-marker-51be02";
    let conn = active(&store, "u1", access, refresh).await;
    let got = store.tokens(conn.id).await.unwrap().unwrap();
    assert_eq!(got.access_token.expose(), access);
    assert_eq!(got.refresh_token.unwrap().expose(), refresh);

    // No table holds the plaintext; the stored ciphertext is bound to its row.
    use sea_orm::{ConnectionTrait, Statement};
    let backend = store.db().get_database_backend();
    let rows = store
        .db()
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT token_ciphertext FROM connections",
        ))
        .await
        .unwrap();
    for row in rows {
        let blob: Option<Vec<u8>> = row.try_get("", "token_ciphertext").unwrap();
        let blob = blob.unwrap();
        assert!(!blob.windows(access.len()).any(|w| w == access.as_bytes()));
        assert!(!blob.windows(refresh.len()).any(|w| w == refresh.as_bytes()));
    }
    let revoked = store
        .apply(
            conn.id,
            None,
            Change::new(Event::Disconnect, Actor::new("user", "u1")),
        )
        .await
        .unwrap();
    assert!(!revoked.connection.has_tokens);
    assert!(
        store.tokens(conn.id).await.unwrap().is_none(),
        "unusable at once"
    );
    // After disconnect the refresh token waits, sealed, for revocation at the partner; the
    // file (and its WAL history) must still hold no plaintext.
    if db.url.starts_with("sqlite:") {
        let path = db.url.trim_start_matches("sqlite://");
        store.clone().close().await;
        let mut scanned = 0;
        for file in [path.to_owned(), format!("{path}-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                scanned += bytes.len();
                for marker in [access, refresh, "verifier-h-u1"] {
                    assert!(
                        !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                        "{marker} found in plaintext in {file}"
                    );
                }
            }
        }
        assert!(scanned > 0, "the database file was read");
    }
}

async fn disconnect_queues_partner_revocation_and_journals_outcome(db: &TestDb) {
    let clock = ManualClock::new(Utc::now());
    let store = db.store().await.with_clock(Arc::new(clock.clone()));
    let conn = active(&store, "u1", "acc", "ref-to-revoke").await;
    store
        .apply(
            conn.id,
            None,
            Change::new(Event::Disconnect, Actor::new("user", "u1")),
        )
        .await
        .unwrap();
    assert!(store.tokens(conn.id).await.unwrap().is_none());
    let due = store.due_revocations(10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].refresh_token.expose(), "ref-to-revoke");
    store
        .retry_revocation(
            &due[0],
            clock.now() + TimeDelta::minutes(1),
            "partner_unavailable",
        )
        .await
        .unwrap();
    assert!(
        store.due_revocations(10).await.unwrap().is_empty(),
        "backed off"
    );
    clock.advance(TimeDelta::minutes(2));
    let due = store.due_revocations(10).await.unwrap();
    assert_eq!(due[0].attempts, 1);
    store.finish_revocation(&due[0], true, None).await.unwrap();
    store.finish_revocation(&due[0], true, None).await.unwrap(); // twice: no-op
    assert!(store.due_revocations(10).await.unwrap().is_empty());
    let status = store.revocations(conn.id).await.unwrap();
    assert_eq!(status[0].outcome.as_deref(), Some("revoked"));
    assert_eq!(status[0].attempts, 2);
    let journal = store.journal(conn.id).await.unwrap();
    let notes: Vec<_> = journal
        .iter()
        .filter(|e| e.event == "partner_revocation_confirmed")
        .collect();
    assert_eq!(notes.len(), 1, "journaled once");
    assert_eq!(notes[0].to, State::Revoked);
}

async fn counters_and_cursor_round_trip(db: &TestDb) {
    let store = db.store().await;
    let conn = active(&store, "u1", "a", "r").await;
    let mut version = conn.version;
    for _ in 0..3 {
        let c = store
            .apply(
                conn.id,
                Some(version),
                Change::new(Event::RefreshStarted, Actor::system("t")),
            )
            .await
            .unwrap()
            .connection;
        let c = store
            .apply(
                conn.id,
                Some(c.version),
                Change::new(
                    Event::RefreshDeferred {
                        retry_at: Utc::now() + TimeDelta::minutes(1),
                    },
                    Actor::system("t"),
                )
                .error(ErrorInfo::new(
                    "partner_unavailable",
                    "token endpoint answered 503",
                )),
            )
            .await
            .unwrap()
            .connection;
        version = c.version;
    }
    let c = store.get(conn.id).await.unwrap();
    assert_eq!(c.refresh_failures, 3);
    assert_eq!(
        c.failure_count, 0,
        "refresh failures are not the transfer streak"
    );
    assert_eq!(c.last_error.as_ref().unwrap().code, "partner_unavailable");
    // A stale job (old version) does nothing.
    let err = store
        .apply(
            conn.id,
            Some(conn.version),
            Change::new(Event::RefreshStarted, Actor::system("stale")),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }));
    assert_eq!(store.get(conn.id).await.unwrap(), c);
}

async fn migrations_twice_are_a_noop(db: &TestDb) {
    let store = db.store().await;
    let conn = active(&store, "u1", "a", "r").await;
    store.migrate().await.unwrap();
    let again = db.store().await;
    again.migrate().await.unwrap();
    assert_eq!(again.get(conn.id).await.unwrap(), conn);
}

/// The revocation's row and its journal entry commit together: if the journal entry cannot be
/// written, the revocation stays owed (it is retried), instead of finished without a record.
async fn finishing_a_revocation_records_row_and_journal_together(db: &TestDb) {
    let store = db.store().await;
    let conn = active(&store, "u1", "acc", "ref").await;
    store
        .apply(
            conn.id,
            None,
            Change::new(Event::Disconnect, Actor::new("user", "u1")),
        )
        .await
        .unwrap();
    let due = store.due_revocations(10).await.unwrap();
    assert_eq!(due.len(), 1);
    refuse(
        &store,
        "INSERT",
        "connection_events",
        "NEW.event = 'partner_revocation_confirmed'",
    )
    .await;
    assert!(store.finish_revocation(&due[0], true, None).await.is_err());
    let status = store.revocations(conn.id).await.unwrap();
    assert_eq!(status[0].completed_at, None, "still owed");
    assert_eq!(status[0].outcome, None);
    assert_eq!(
        store.open_revocations(conn.id).await.unwrap().len(),
        1,
        "token kept for the retry"
    );
}

/// `Fail` owes the partner a revocation like a disconnect, and its transition wakes the
/// revoker (the dispatcher waits on this) instead of leaving it to the next poll.
async fn fail_queues_a_partner_revocation_and_wakes_the_revoker(db: &TestDb) {
    let store = db.store().await;
    let conn = active(&store, "u1", "acc", "ref-failed").await;
    let woken = {
        let store = store.clone();
        tokio::spawn(async move { store.revocations_queued().notified().await })
    };
    tokio::task::yield_now().await;
    store
        .apply(
            conn.id,
            None,
            Change::new(Event::Fail, Actor::system("fetch")),
        )
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), woken)
        .await
        .expect("the transition woke the revoker")
        .unwrap();
    let due = store.due_revocations(10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].refresh_token.expose(), "ref-failed");
    assert_eq!(store.get(conn.id).await.unwrap().state, State::Failed);
}
