//! The columns the transition table and the transfer path share (docs/lifecycle.md#columns):
//! counters change by SQL arithmetic, never from a snapshot; every transfer guard is built from
//! `State::may_transfer`; refresh and transfer bookkeeping are apart.

use chrono::{TimeDelta, Utc};
use engine::{
    StoreError,
    model::{Actor, Change, ErrorInfo, ErrorUpdate},
    state::{Event, State},
    store::SyncEnd,
    testing::TestDb,
};

use crate::{LEASE, active, leased, records, sql, start, tokens, user};

engine::backend_tests!(
    a_failure_counts_on_the_row_as_it_is_not_on_the_lease_snapshot,
    a_transfer_commits_while_a_refresh_holds_the_lock,
    refresh_failures_are_apart_from_the_transfer_streak,
    a_sync_request_names_the_state_that_forbids_it,
    a_due_refresh_is_claimed_once_across_claimers,
);

fn failed(count: bool) -> SyncEnd {
    SyncEnd::Failed {
        next_sync_at: Utc::now() + TimeDelta::minutes(5),
        error: ErrorInfo::new("partner_unavailable", "503"),
        count_failure: count,
    }
}

/// `finish_sync` once wrote `lease.connection.failure_count + 1` from the lease's snapshot:
/// whatever changed the row since (here: two failures counted after the lease was read) was
/// overwritten. Counted in SQL, the row's own value grows.
async fn a_failure_counts_on_the_row_as_it_is_not_on_the_lease_snapshot(db: &TestDb) {
    let store = db.store().await;
    let lease = leased(&store, "u1").await;
    assert_eq!(lease.connection.failure_count, 0);
    let since = chrono::SubsecRound::trunc_subsecs(Utc::now() - TimeDelta::hours(3), 0);
    sql(
        &store,
        "UPDATE connections SET failure_count = 2, failing_since = $1 WHERE id = $2",
        vec![since.into(), lease.connection.id.to_string().into()],
    )
    .await;
    let after = store
        .finish_sync(&lease, failed(true))
        .await
        .unwrap()
        .expect("lease held");
    assert_eq!(after.failure_count, 3);
    assert_eq!(
        after.failing_since,
        Some(since),
        "the streak keeps its start"
    );
    assert_eq!(after.last_error.unwrap().code, "partner_unavailable");
}

/// A refresh takes `active → refreshing` while a transfer runs: the transfer's window commits
/// still land (they were refused as a "lost lease" when guards said `state = 'active'`).
async fn a_transfer_commits_while_a_refresh_holds_the_lock(db: &TestDb) {
    let store = db.store().await;
    let mut lease = leased(&store, "u1").await;
    let id = lease.connection.id;
    let conn = store.get(id).await.unwrap();
    let locked = store
        .apply(
            id,
            Some(conn.version),
            Change::new(Event::RefreshStarted, Actor::system("r")),
        )
        .await
        .unwrap()
        .connection;
    assert_eq!(locked.state, State::Refreshing);
    let through = Utc::now() - TimeDelta::hours(1);
    store
        .commit_chunk(&mut lease, records(1, 3).into(), Some(through), LEASE)
        .await
        .expect("a window commits during a refresh");
    store
        .apply(
            id,
            Some(locked.version),
            Change::new(
                Event::Refreshed {
                    tokens: tokens("a2", "r2"),
                },
                Actor::system("r"),
            ),
        )
        .await
        .unwrap();
    let now = Utc::now();
    let (_, done) = store
        .commit_last_chunk(
            &mut lease,
            records(1, 5).into(),
            now,
            now + TimeDelta::hours(1),
            false,
        )
        .await
        .expect("and the last one after it");
    assert_eq!(done.state, State::Active);
    assert_eq!(store.record_ids(id, false).await.unwrap().len(), 5);
}

/// A successful refresh during a data-API outage must not reset the transfer backoff: the
/// streak is the transfer's own; refresh failures have their own counter.
async fn refresh_failures_are_apart_from_the_transfer_streak(db: &TestDb) {
    let store = db.store().await;
    let lease = leased(&store, "u1").await;
    let id = lease.connection.id;
    let failing = store
        .finish_sync(&lease, failed(true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failing.failure_count, 1);
    let since = failing.failing_since.expect("streak started");
    let refresh = |event| Change::new(event, Actor::system("r"));
    let c = store
        .apply(id, None, refresh(Event::RefreshStarted))
        .await
        .unwrap()
        .connection;
    let c = store
        .apply(
            id,
            Some(c.version),
            refresh(Event::RefreshDeferred {
                retry_at: Utc::now() + TimeDelta::minutes(1),
            })
            .error(ErrorInfo::new("partner_unavailable", "token endpoint 503")),
        )
        .await
        .unwrap()
        .connection;
    assert_eq!((c.refresh_failures, c.failure_count), (1, 1));
    let c = store
        .apply(id, Some(c.version), refresh(Event::RefreshStarted))
        .await
        .unwrap()
        .connection;
    let c = store
        .apply(
            id,
            Some(c.version),
            refresh(Event::Refreshed {
                tokens: tokens("a2", "r2"),
            })
            .error_update(ErrorUpdate::ClearUnlessTransfersFailing),
        )
        .await
        .unwrap()
        .connection;
    assert_eq!(c.refresh_failures, 0, "the refresh succeeded");
    assert_eq!(c.failure_count, 1, "the transfer streak is untouched");
    assert_eq!(c.failing_since, Some(since), "and so is its budget clock");
    assert!(
        c.last_error.is_some(),
        "a running transfer streak keeps its error"
    );
    assert!(
        c.refresh_due_at.is_some(),
        "the new token plans its refresh"
    );
}

/// `request_sync` on a connection that cannot transfer says why (its state), with the check in
/// the `UPDATE` itself, and changes nothing.
async fn a_sync_request_names_the_state_that_forbids_it(db: &TestDb) {
    let store = db.store().await;
    let (applied, _) = store
        .open_connection(
            &user("u1"),
            &crate::partner(),
            start("s", TimeDelta::minutes(5)),
        )
        .await
        .unwrap();
    let before = store.get(applied.connection.id).await.unwrap();
    let err = store
        .request_sync(before.id, std::time::Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotTransferring(State::Authorizing)),
        "{err:?}"
    );
    assert_eq!(store.get(before.id).await.unwrap(), before);
    let conn = active(&store, "u2", "a", "r").await;
    let asked = store
        .request_sync(conn.id, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert!(asked.is_ok());
    let again = store
        .request_sync(conn.id, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert!(again.is_err(), "rate limited: {again:?}");
}

/// The refresh timer is a claimed lease: two dispatchers claiming at once get each due
/// connection once between them, and a claimed one is not offered again until its lease ends.
async fn a_due_refresh_is_claimed_once_across_claimers(db: &TestDb) {
    let store = db.store().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let c = active(&store, &format!("u{i}"), "a", "r").await;
        ids.push(c.id);
    }
    sql(
        &store,
        "UPDATE connections SET refresh_due_at = $1",
        vec![(Utc::now() - TimeDelta::minutes(1)).into()],
    )
    .await;
    let (a, b) = tokio::join!(
        store.claim_due_refreshes(15, LEASE),
        store.claim_due_refreshes(15, LEASE)
    );
    let mut claimed: Vec<_> = a
        .unwrap()
        .into_iter()
        .chain(b.unwrap())
        .map(|c| c.id)
        .collect();
    claimed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(claimed, want, "each due connection claimed exactly once");
    assert!(
        store
            .claim_due_refreshes(100, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
}
