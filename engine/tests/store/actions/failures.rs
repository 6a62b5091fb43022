//! Moving a connection to failed, clearing an error (docs/actions.md#actions): the table's
//! own transition with the operator as actor, and each written once.

use chrono::TimeDelta;
use engine::{
    StoreError,
    model::{Actor, Change},
    state::{Event, State},
    store::{ActionError, CLEAR_ERROR_EVENT, FAILED_BY_OPERATOR},
    testing::TestDb,
};

use super::{ago, journal_len, journaled, operator, refused, set, why};
use crate::{active, partner, start, user};

engine::backend_tests!(
    fail_drops_tokens_and_owes_a_revocation,
    clear_error_clears_the_streak_once,
);

async fn fail_drops_tokens_and_owes_a_revocation(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "u", "a", "r").await;
    assert!(store.revocations(c.id).await.unwrap().is_empty());
    let failed = store
        .fail_by_operator(c.id, &operator(), &why("partner account closed"))
        .await
        .unwrap();
    assert!(failed.changed);
    let after = store.get(c.id).await.unwrap();
    assert_eq!(after.state, State::Failed);
    assert!(!after.has_tokens && store.tokens(c.id).await.unwrap().is_none());
    assert_eq!(after.next_sync_at, None);
    assert_eq!(after.last_error.unwrap().code, FAILED_BY_OPERATOR);
    let owed = store.revocations(c.id).await.unwrap();
    assert_eq!(owed.len(), 1);
    assert!(owed[0].completed_at.is_none());
    let due = store.open_revocations(c.id).await.unwrap();
    assert_eq!(
        due[0].refresh_token.expose(),
        "r",
        "the refresh token is revoked"
    );
    journaled(&store, c.id, "fail", "partner account closed").await;
    let entry = store.journal(c.id).await.unwrap().pop().unwrap();
    assert_eq!((entry.from, entry.to), (Some(State::Active), State::Failed));

    let len = journal_len(&store, c.id).await;
    let again = store
        .fail_by_operator(c.id, &operator(), &why("partner account closed"))
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(journal_len(&store, c.id).await, len);
    assert_eq!(store.revocations(c.id).await.unwrap().len(), 1);

    let r = active(&store, "v", "a", "r").await;
    store
        .apply(
            r.id,
            None,
            Change::new(Event::RefreshStarted, Actor::system("test")),
        )
        .await
        .unwrap();
    let refusal = refused(store.fail_by_operator(r.id, &operator(), &why("x")).await);
    assert_eq!(refusal.code(), "step_in_flight");
    let (opened, _) = store
        .open_connection(&user("w"), &partner(), start("h-w", TimeDelta::minutes(5)))
        .await
        .unwrap();
    let err = store
        .fail_by_operator(opened.connection.id, &operator(), &why("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ActionError::Store(StoreError::InvalidTransition(_))),
        "{err:?}"
    );
}

async fn clear_error_clears_the_streak_once(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "u", "a", "r").await;
    let nothing = store
        .clear_error(c.id, &operator(), &why("nothing to clear"))
        .await
        .unwrap();
    assert!(!nothing.changed);
    set(
        &store,
        &c,
        "last_error_code = 'partner_unavailable', last_error = 'down', failure_count = 4, \
         failing_since = $1",
        vec![ago(30).into()],
    )
    .await;
    let before = journal_len(&store, c.id).await;
    let cleared = store
        .clear_error(c.id, &operator(), &why("partner fixed their API"))
        .await
        .unwrap();
    assert!(cleared.changed);
    let after = cleared.connection;
    assert_eq!(
        (after.last_error, after.failure_count, after.failing_since),
        (None, 0, None)
    );
    assert_eq!(
        after.next_sync_at, c.next_sync_at,
        "the schedule is left alone"
    );
    journaled(&store, c.id, CLEAR_ERROR_EVENT, "partner fixed their API").await;
    let again = store
        .clear_error(c.id, &operator(), &why("partner fixed their API"))
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(journal_len(&store, c.id).await, before + 1);
}
