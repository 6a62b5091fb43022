//! Authorizations, tokens and revocations: OAuth states are single-use, bound to their partner
//! and expire; tokens are encrypted at rest and discarded on disconnect; the revocation owed to
//! the partner is queued, retried and journaled.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use engine::{
    clock::{Clock, ManualClock},
    model::{Actor, Change},
    state::{Event, State},
    store::AuthorizationRejected,
    testing::TestDb,
};

use crate::{active, partner, refuse, start, user};

engine::backend_tests!(
    state_is_single_use_bound_to_partner_and_expires,
    restart_invalidates_earlier_states,
    tokens_encrypted_at_rest_and_discarded_on_disconnect,
    disconnect_queues_partner_revocation_and_journals_outcome,
    finishing_a_revocation_records_row_and_journal_together,
    fail_queues_a_partner_revocation_and_wakes_the_revoker,
);

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
