//! Storage and state machine against a real SQLite file and a real PostgreSQL database.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use engine::{
    StoreError,
    clock::ManualClock,
    ids::{PartnerName, UserId},
    model::MappedRecord,
    model::{Actor, Change, ErrorInfo, FailureCount, NewAuthorization, TokenSet},
    secret::SecretString,
    state::{Event, State},
    store::{AuthorizationRejected, Chunk, Store, SyncLease},
    testing::TestDb,
};

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
    concurrent_transfers_group_commit_each_to_its_own_row,
    a_failing_write_fails_only_its_own_transfer,
    a_failing_start_fails_only_its_own_transfer,
);

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn partner() -> PartnerName {
    PartnerName::parse("sandbox-cgm").unwrap()
}

fn start(state_hash: &str, expires_in: TimeDelta) -> Change {
    Change::new(Event::StartAuthorization, Actor::new("user", "u1")).authorization(
        NewAuthorization {
            state_hash: state_hash.to_owned(),
            pkce_verifier: SecretString::from(format!("verifier-{state_hash}")),
            expires_at: Utc::now() + expires_in,
        },
    )
}

fn tokens(access: &str, refresh: &str) -> TokenSet {
    TokenSet {
        access_token: SecretString::from(access),
        refresh_token: Some(SecretString::from(refresh)),
        expires_at: Some(Utc::now() + TimeDelta::hours(2)),
        scope: Some("offline_access".to_owned()),
    }
}

async fn active(store: &Store, u: &str, access: &str, refresh: &str) -> engine::model::Connection {
    let (applied, _) = store
        .open_connection(
            &user(u),
            &partner(),
            start(&format!("h-{u}"), TimeDelta::minutes(10)),
        )
        .await
        .unwrap();
    store
        .apply(
            applied.connection.id,
            Some(applied.connection.version),
            Change::new(Event::Authorized, Actor::new("user", u)).tokens(tokens(access, refresh)),
        )
        .await
        .unwrap()
        .connection
}

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
        .apply(
            conn.id,
            None,
            Change::new(Event::Authorized, Actor::system("t")),
        )
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
    let conn = active(&store, "u1", "a", "r").await;
    let cursor = Utc::now() - TimeDelta::days(3);
    // Data cursor written directly: the transfer issue owns the code that advances it.
    use sea_orm::{ConnectionTrait, Statement};
    let backend = store.db().get_database_backend();
    store
        .db()
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "UPDATE connections SET latest_data_time = $1 WHERE id = $2",
            [cursor.into(), conn.id.to_string().into()],
        ))
        .await
        .unwrap();
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
    let kept = again.connection.latest_data_time.unwrap();
    assert!(
        (kept - cursor).num_milliseconds().abs() < 1,
        "cursor kept: {kept} vs {cursor}"
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
            clock.now_plus(TimeDelta::minutes(1)),
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
                Change::new(Event::RefreshDeferred, Actor::system("t"))
                    .error(ErrorInfo::new(
                        "partner_unavailable",
                        "token endpoint answered 503",
                    ))
                    .failure_count(FailureCount::Increment),
            )
            .await
            .unwrap()
            .connection;
        version = c.version;
    }
    let c = store.get(conn.id).await.unwrap();
    assert_eq!(c.failure_count, 3);
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

const LEASE: std::time::Duration = std::time::Duration::from_secs(120);

/// `n` records of connection `i` (ids unique per connection, shared across connections).
fn records(i: usize, n: usize) -> Vec<MappedRecord> {
    (0..n)
        .map(|k| {
            let time = Utc::now() - TimeDelta::minutes(5 * k as i64);
            MappedRecord {
                partner_record_id: format!("r{k}"),
                datum_type: "cbg".to_owned(),
                time,
                retired: false,
                datum: serde_json::json!({"type": "cbg", "value": i * 100 + k, "note": "a \"quoted\" ✓"}),
            }
        })
        .collect()
}

/// Makes the database refuse `event`s on `table` whose new row matches `when` (a trigger on
/// either backend): a write failure of our choosing, for one row.
async fn refuse(store: &Store, event: &str, table: &str, when: &str) {
    use sea_orm::ConnectionTrait;
    let statements = match store.backend() {
        engine::store::Backend::Sqlite => vec![format!(
            "CREATE TRIGGER refuse BEFORE {event} ON {table} WHEN {when} \
             BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )],
        engine::store::Backend::Postgres => vec![
            format!(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF {when} THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$"
            ),
            format!(
                "CREATE TRIGGER refuse BEFORE {event} ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION refuse()"
            ),
        ],
    };
    for sql in statements {
        store.db().execute_unprepared(&sql).await.unwrap();
    }
}

/// Every stored (live) record of `u`.
async fn user_data(store: &Store, u: &str) -> Vec<engine::model::StoredRecord> {
    store
        .records(&engine::store::RecordQuery {
            user: user(u),
            datum_type: None,
            start: None,
            end: None,
            after: None,
            limit: 100,
        })
        .await
        .unwrap()
}

/// `n` active connections, all due and claimed, their transfers started concurrently.
async fn started(store: &Store, prefix: &str, n: usize) -> Vec<SyncLease> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(active(store, &format!("{prefix}{i}"), "a", "r").await.id);
    }
    let claimed = store.claim_due(1000, LEASE).await.unwrap();
    assert_eq!(claimed.len(), n, "every new connection is due at once");
    let starts = claimed.iter().map(|c| {
        let store = store.clone();
        let c = c.clone();
        tokio::spawn(async move { store.start_sync(c.id, c.version, LEASE).await })
    });
    let mut leases: Vec<SyncLease> = futures::future::join_all(starts)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().expect("started"))
        .collect();
    leases.sort_by_key(|l| ids.iter().position(|id| *id == l.connection.id));
    leases
}

async fn concurrent_transfers_group_commit_each_to_its_own_row(db: &TestDb) {
    let store = db.store().await;
    let leases = started(&store, "g", 24).await;
    // A duplicated job starts nothing: its connection's lease is taken.
    let first = leases[0].connection.clone();
    assert!(
        store
            .start_sync(first.id, first.version, LEASE)
            .await
            .unwrap()
            .is_none()
    );
    // Connection 5 is disconnected mid-transfer: its commit must write nothing.
    let gone = leases[5].connection.clone();
    store
        .apply(
            gone.id,
            None,
            Change::new(Event::Disconnect, Actor::new("user", "g5")),
        )
        .await
        .unwrap();
    // Whole seconds: PostgreSQL keeps microseconds.
    let next = chrono::SubsecRound::trunc_subsecs(Utc::now() + TimeDelta::hours(1), 0);
    let commits = leases.iter().enumerate().map(|(i, lease)| {
        let store = store.clone();
        let mut lease = lease.clone();
        tokio::spawn(async move {
            let through = Utc::now();
            let chunk = Chunk {
                records: records(i, i % 5 + 1),
                skipped: (i % 2) as u64,
            };
            store
                .commit_last_chunk(&mut lease, chunk, through, next)
                .await
        })
    });
    let results = futures::future::join_all(commits).await;
    for (i, (result, lease)) in results.into_iter().zip(&leases).enumerate() {
        let id = lease.connection.id;
        let stored = store.record_ids(id, true).await.unwrap();
        if i == 5 {
            assert!(
                matches!(result.unwrap(), Err(StoreError::LeaseLost)),
                "lost lease"
            );
            assert!(stored.is_empty(), "a lost lease writes nothing");
            continue;
        }
        let (stats, connection) = result.unwrap().unwrap();
        let want: Vec<String> = (0..i % 5 + 1).map(|k| format!("r{k}")).collect();
        assert_eq!(stats.inserted, want.len() as u64, "connection {i}");
        assert_eq!(stored, want, "connection {i} holds exactly its records");
        assert_eq!(connection.next_sync_at, Some(next));
        assert!(connection.last_sync_at.is_some());
        assert_eq!(connection.records_skipped, (i % 2) as u64);
        let data = user_data(&store, &format!("g{i}")).await;
        assert!(
            data.iter()
                .all(|r| r.datum["value"].as_u64().unwrap() / 100 == i as u64
                    && r.datum["note"] == "a \"quoted\" ✓"),
            "connection {i}'s data are its own, stored as sent"
        );
    }
    // The next transfer of connection 4 (5 records stored): one corrected, one new, the rest
    // as stored. Only the two are written, and each is counted for what it was.
    let id = leases[4].connection.id;
    store
        .request_sync(id, std::time::Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let claim = store.claim_due(10, LEASE).await.unwrap();
    assert_eq!(claim.len(), 1);
    let mut lease = store
        .start_sync(claim[0].id, claim[0].version, LEASE)
        .await
        .unwrap()
        .expect("the run ended with its commit: the lease was released");
    let mut again = records(4, 6);
    again[0].datum["value"] = serde_json::json!(499);
    let (stats, _) = store
        .commit_last_chunk(&mut lease, again.into(), Utc::now(), next)
        .await
        .unwrap();
    assert_eq!(
        (stats.inserted, stats.updated, stats.unchanged),
        (1, 1, 4),
        "{stats:?}"
    );
    let data = user_data(&store, "g4").await;
    assert_eq!(data.len(), 6);
    assert!(data.iter().any(|r| r.datum["value"] == 499), "corrected");
}

/// A write the database refuses (a trigger stands in for any per-row failure) fails the
/// transfer it belongs to and no other, whichever group it was committed in.
async fn a_failing_write_fails_only_its_own_transfer(db: &TestDb) {
    let store = db.store().await;
    refuse(
        &store,
        "INSERT",
        "data_records",
        "NEW.partner_record_id = 'poison'",
    )
    .await;
    let leases = started(&store, "p", 12).await;
    let next = Utc::now() + TimeDelta::hours(1);
    let commits = leases.iter().enumerate().map(|(i, lease)| {
        let store = store.clone();
        let mut lease = lease.clone();
        tokio::spawn(async move {
            let mut records = records(i, 3);
            if i == 7 {
                records[1].partner_record_id = "poison".to_owned();
            }
            store
                .commit_last_chunk(&mut lease, records.into(), Utc::now(), next)
                .await
        })
    });
    let results = futures::future::join_all(commits).await;
    for (i, (result, lease)) in results.into_iter().zip(&leases).enumerate() {
        let id = lease.connection.id;
        let stored = store.record_ids(id, true).await.unwrap();
        let now = store.get(id).await.unwrap();
        if i == 7 {
            let err = result.unwrap().unwrap_err();
            assert!(matches!(err, StoreError::Db(_)), "{err:?}");
            assert!(
                stored.is_empty(),
                "nothing of the failed transfer is written"
            );
            assert_eq!(now.fetched_through, None, "its cursor did not move");
            assert_eq!(now.last_sync_at, None, "its run did not end");
        } else {
            result.unwrap().unwrap();
            assert_eq!(stored, ["r0", "r1", "r2"], "connection {i}");
            assert!(now.last_sync_at.is_some());
        }
    }
}

/// The same for starts: a start the database refuses fails that transfer only.
async fn a_failing_start_fails_only_its_own_transfer(db: &TestDb) {
    let store = db.store().await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(active(&store, &format!("s{i}"), "a", "r").await.id);
    }
    refuse(
        &store,
        "UPDATE",
        "connections",
        "NEW.user_id = 's5' AND NEW.sync_lease_token IS NOT NULL",
    )
    .await;
    let claimed = store.claim_due(100, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 10);
    let starts = claimed.iter().map(|c| {
        let (store, c) = (store.clone(), c.clone());
        tokio::spawn(async move { (c.id, store.start_sync(c.id, c.version, LEASE).await) })
    });
    for result in futures::future::join_all(starts).await {
        let (id, started) = result.unwrap();
        if id == ids[5] {
            assert!(matches!(started, Err(StoreError::Db(_))), "{started:?}");
        } else {
            let lease = started.unwrap().expect("started");
            assert_eq!(lease.connection.id, id);
        }
    }
}

trait NowPlus {
    fn now_plus(&self, by: TimeDelta) -> chrono::DateTime<Utc>;
}

impl NowPlus for ManualClock {
    fn now_plus(&self, by: TimeDelta) -> chrono::DateTime<Utc> {
        use engine::clock::Clock;
        self.now() + by
    }
}
