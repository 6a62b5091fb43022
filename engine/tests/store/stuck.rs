//! Stuck connections, the filtered list and the summary (docs/operations.md#stuck): each stuck
//! reason made by hand with SQL is listed with exactly that reason, a healthy connection with
//! none; a claim whose fetch job is queued is not stuck; filters and paging; the summary's
//! counts.

use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    ids::{ConnectionId, PartnerName},
    jobs::{JobQueue, QueueSettings, Step as JobStep, StepJob},
    model::Connection,
    state::State,
    store::{ConnectionFilter, Step, Store, StuckFilter, StuckReason as R, StuckSettings},
    testing::TestDb,
};
use sea_orm::Value;

use crate::{LEASE, active, sql, start, user};

mod pauses;
mod summary;

engine::backend_tests!(
    each_stuck_reason_is_listed_with_exactly_that_reason,
    a_claim_is_stuck_only_once_its_job_is_missing,
    filters_select_and_pages_walk_every_connection_once,
);

pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

pub(crate) fn ago(minutes: i64) -> DateTime<Utc> {
    now() - TimeDelta::minutes(minutes)
}

pub(crate) async fn set(store: &Store, c: &Connection, assignments: &str, values: Vec<Value>) {
    let n = values.len() + 1;
    let mut values = values;
    values.push(c.id.to_string().into());
    sql(
        store,
        &format!("UPDATE connections SET {assignments} WHERE id = ${n}"),
        values,
    )
    .await;
}

/// An active connection of `u` whose next transfer is an hour ahead: stuck for no reason.
pub(crate) async fn healthy(store: &Store, u: &str) -> Connection {
    let c = active(store, u, "a", "r").await;
    let in_an_hour = now() + TimeDelta::hours(1);
    set(store, &c, "next_sync_at = $1", vec![in_an_hour.into()]).await;
    c
}

pub(crate) async fn list(store: &Store, filter: ConnectionFilter) -> Vec<(ConnectionId, Vec<R>)> {
    list_at(store, filter, now()).await
}

async fn list_at(
    store: &Store,
    filter: ConnectionFilter,
    at: DateTime<Utc>,
) -> Vec<(ConnectionId, Vec<R>)> {
    let page = store
        .list_connections(&filter, None, 1000, at, &StuckSettings::default())
        .await
        .unwrap();
    assert!(page.next.is_none());
    page.connections
        .into_iter()
        .map(|c| (c.connection.id, c.stuck))
        .collect()
}

pub(crate) fn stuck(filter: StuckFilter) -> ConnectionFilter {
    ConnectionFilter {
        stuck: Some(filter),
        ..ConnectionFilter::default()
    }
}

/// Every reason on a connection of its own, made by hand: `(reason, connection)`.
async fn one_of_each(store: &Store) -> Vec<(R, Connection)> {
    let mut made = Vec::new();

    let (opened, _) = store
        .open_connection(
            &user("authorizing"),
            &crate::partner(),
            start("h-stuck", TimeDelta::minutes(10)),
        )
        .await
        .unwrap();
    let c = opened.connection;
    // Lifetime (10 min) and grace (10 min) are past.
    set(store, &c, "updated_at = $1", vec![ago(21).into()]).await;
    made.push((R::AuthorizationExpired, c));

    let c = healthy(store, "refreshing").await;
    // The maintenance loop's bound (5 min) and the grace (10 min) are past.
    set(
        store,
        &c,
        "state = 'refreshing', state_changed_at = $1",
        vec![ago(16).into()],
    )
    .await;
    made.push((R::RefreshLockStale, c));

    let c = healthy(store, "overdue").await;
    set(store, &c, "next_sync_at = $1", vec![ago(16).into()]).await;
    made.push((R::TransferOverdue, c));

    // Claimed a minute ago (the claim ends `dispatch_lease` = 2 min after it was made), due a
    // minute ago: not overdue, but no job will ever start it.
    let c = healthy(store, "claimed").await;
    set(
        store,
        &c,
        "next_sync_at = $1, sync_lease_until = $2",
        vec![ago(1).into(), (now() + TimeDelta::minutes(1)).into()],
    )
    .await;
    made.push((R::ClaimWithoutJob, c));

    // A worker died mid-transfer 11 minutes after its lease's last extension; it had claimed
    // the connection when it was due (a held lease is always on a due row).
    let c = healthy(store, "leased").await;
    set(
        store,
        &c,
        "sync_lease_token = 'tok', sync_lease_until = $1, next_sync_at = $2",
        vec![ago(11).into(), ago(12).into()],
    )
    .await;
    made.push((R::LeasePastBound, c));

    let c = healthy(store, "failing").await;
    set(
        store,
        &c,
        "failing_since = $1, failure_count = 9, last_error_code = 'partner_unavailable'",
        vec![(now() - TimeDelta::hours(7)).into()],
    )
    .await;
    made.push((R::FailingTooLong, c));

    let c = healthy(store, "idle").await;
    set(store, &c, "idle_runs = 6", vec![]).await;
    made.push((R::DataNotAdvancing, c));

    made
}

async fn each_stuck_reason_is_listed_with_exactly_that_reason(db: &TestDb) {
    let store = db.store().await;
    let fine = healthy(&store, "fine").await;
    // Just under every threshold: none of them yet.
    let almost = healthy(&store, "almost").await;
    set(
        &store,
        &almost,
        "next_sync_at = $1, failing_since = $2, idle_runs = 5",
        vec![ago(14).into(), (now() - TimeDelta::hours(5)).into()],
    )
    .await;
    // Overdue but paused: waiting by an operator's choice.
    let paused = healthy(&store, "paused").await;
    set(
        &store,
        &paused,
        "paused = $1, next_sync_at = $2",
        vec![true.into(), ago(60).into()],
    )
    .await;
    let made = one_of_each(&store).await;
    assert_eq!(made.len(), R::ALL.len());

    for (reason, c) in &made {
        let found = list(&store, stuck(StuckFilter::Reason(*reason))).await;
        assert_eq!(found, vec![(c.id, vec![*reason])], "{reason}");
    }
    let mut all: Vec<_> = made.iter().map(|(r, c)| (c.id, vec![*r])).collect();
    all.sort();
    assert_eq!(list(&store, stuck(StuckFilter::Any)).await, all);
    let mut healthy_ones = vec![(fine.id, vec![]), (almost.id, vec![]), (paused.id, vec![])];
    healthy_ones.sort();
    assert_eq!(list(&store, stuck(StuckFilter::No)).await, healthy_ones);

    // The whole list names each row's reasons, filtered or not.
    let everything = list(&store, ConnectionFilter::default()).await;
    assert_eq!(everything.len(), all.len() + healthy_ones.len());
    for (id, reasons) in &everything {
        let expected = made
            .iter()
            .find(|(_, c)| c.id == *id)
            .map(|(r, _)| vec![*r])
            .unwrap_or_default();
        assert_eq!(reasons, &expected);
    }

    let summary = store
        .ops_summary(now(), &StuckSettings::default())
        .await
        .unwrap();
    assert_eq!(
        summary.stuck,
        R::ALL.into_iter().map(|r| (r, 1)).collect::<Vec<_>>()
    );
    assert_eq!(summary.stuck_connections, R::ALL.len() as u64);
}

async fn a_claim_is_stuck_only_once_its_job_is_missing(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "claimed", "a", "r").await;
    let claimed = store.claim_due(10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let claim_filter = || stuck(StuckFilter::Reason(R::ClaimWithoutJob));
    // Just claimed: its job is being pushed.
    assert!(list(&store, claim_filter()).await.is_empty());
    // A minute later, without a queue at all: lost.
    let later = now() + TimeDelta::minutes(1);
    assert_eq!(
        list_at(&store, claim_filter(), later).await,
        vec![(c.id, vec![R::ClaimWithoutJob])]
    );
    // With the queue but no job for it: lost.
    let queue = JobQueue::setup(&store, QueueSettings::default())
        .await
        .unwrap();
    let other = active(&store, "other", "a", "r").await;
    queue
        .push(&[StepJob::new(JobStep::Fetch, other.id.to_string(), 2)])
        .await
        .unwrap();
    assert_eq!(list_at(&store, claim_filter(), later).await.len(), 1);
    // Its job waits in the queue: not stuck.
    queue
        .push(&[StepJob::new(
            JobStep::Fetch,
            c.id.to_string(),
            claimed[0].version,
        )])
        .await
        .unwrap();
    assert!(list_at(&store, claim_filter(), later).await.is_empty());
    let summary = store
        .ops_summary(later, &StuckSettings::default())
        .await
        .unwrap();
    assert_eq!((summary.claimed, summary.in_flight), (1, 0));
    assert_eq!(summary.stuck_connections, 0);
    let fetch = summary
        .queue
        .iter()
        .find(|q| q.step == Step::Fetch)
        .unwrap();
    assert_eq!(fetch.pending, 2);
}

async fn filters_select_and_pages_walk_every_connection_once(db: &TestDb) {
    let store = db.store().await;
    let pump = PartnerName::parse("sandbox-pump").unwrap();
    let a = healthy(&store, "alice").await;
    let b = healthy(&store, "bob").await;
    set(&store, &b, "paused = $1", vec![true.into()]).await;
    let c = healthy(&store, "carol").await;
    set(&store, &c, "last_error_code = 'rate_limited'", vec![]).await;
    let (opened, _) = store
        .open_connection(
            &user("alice"),
            &pump,
            start("h-pump", TimeDelta::minutes(10)),
        )
        .await
        .unwrap();
    let d = opened.connection;

    let ids = |found: Vec<(ConnectionId, Vec<R>)>| -> Vec<ConnectionId> {
        found.into_iter().map(|(id, _)| id).collect()
    };
    let sorted = |mut ids: Vec<ConnectionId>| {
        ids.sort();
        ids
    };
    let by = |filter: ConnectionFilter| {
        let store = store.clone();
        async move { ids(list(&store, filter).await) }
    };
    let f = ConnectionFilter::default;
    assert_eq!(
        by(ConnectionFilter {
            state: Some(State::Authorizing),
            ..f()
        })
        .await,
        vec![d.id]
    );
    assert_eq!(
        by(ConnectionFilter {
            partner: Some(pump.clone()),
            ..f()
        })
        .await,
        vec![d.id]
    );
    assert_eq!(
        by(ConnectionFilter {
            user: Some(user("alice")),
            ..f()
        })
        .await,
        sorted(vec![a.id, d.id])
    );
    assert_eq!(
        by(ConnectionFilter {
            paused: Some(true),
            ..f()
        })
        .await,
        vec![b.id]
    );
    assert_eq!(
        by(ConnectionFilter {
            paused: Some(false),
            ..f()
        })
        .await,
        sorted(vec![a.id, c.id, d.id])
    );
    assert_eq!(
        by(ConnectionFilter {
            error: Some("rate_limited".to_owned()),
            ..f()
        })
        .await,
        vec![c.id]
    );
    // Every field must hold.
    assert_eq!(
        by(ConnectionFilter {
            user: Some(user("alice")),
            state: Some(State::Active),
            partner: Some(crate::partner()),
            ..f()
        })
        .await,
        vec![a.id]
    );
    assert!(
        by(ConnectionFilter {
            user: Some(user("bob")),
            paused: Some(false),
            ..f()
        })
        .await
        .is_empty()
    );

    // Pages of two walk every connection once, in id order, under any filter.
    let mut expected = vec![a.id, b.id, c.id, d.id];
    expected.sort();
    for filter in [f(), stuck(StuckFilter::No)] {
        let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
        loop {
            let page = store
                .list_connections(&filter, after, 2, now(), &StuckSettings::default())
                .await
                .unwrap();
            pages += 1;
            seen.extend(page.connections.iter().map(|c| c.connection.id));
            assert!(page.connections.len() <= 2);
            match page.next {
                Some(next) => {
                    assert_eq!(Some(&next), seen.last());
                    after = Some(next);
                }
                None => break,
            }
        }
        assert_eq!(seen, expected);
        assert_eq!(pages, 2, "the last full page says there is no next one");
    }
    // A page after the last id is empty.
    let page = store
        .list_connections(
            &f(),
            expected.last().copied(),
            2,
            now(),
            &StuckSettings::default(),
        )
        .await
        .unwrap();
    assert!(page.connections.is_empty() && page.next.is_none());
}
