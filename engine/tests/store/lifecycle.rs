//! Transitions and the journal: optimistic versions, one live connection per user and partner,
//! reconnecting reuses the row and keeps the cursor, counters round-trip, migrations are
//! idempotent.

use chrono::{TimeDelta, Utc};
use engine::{
    StoreError,
    model::{Actor, Change, ErrorInfo},
    state::{Event, State},
    testing::TestDb,
};

use crate::{active, authorized, leased, partner, records, start, user};

engine::backend_tests!(
    connect_journal_and_row_agree,
    invalid_transition_changes_nothing,
    concurrent_transitions_exactly_one_wins,
    one_live_connection_per_user_and_partner,
    concurrent_creation_yields_one_row,
    reconnect_reuses_row_and_keeps_cursor,
    counters_and_cursor_round_trip,
    migrations_twice_are_a_noop,
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
