//! The summary's counts (docs/operations.md#summary): a fleet made by hand, each figure checked.

use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    ids::PartnerName,
    model::Connection,
    state::State,
    store::{Step, Store, StuckReason as R, StuckSettings},
    testing::TestDb,
};

use super::{ago, healthy, now, set};
use crate::{active, leased, sql, start, user};

engine::backend_tests!(the_summary_counts_the_fleet);

async fn insert_run(store: &Store, c: &Connection, step: &str, finished: DateTime<Utc>, n: i64) {
    sql(
        store,
        "INSERT INTO step_runs (connection_id, step, started_at, finished_at, outcome, \
         inserted, updated, unchanged, skipped, windows, statuses, error_code, duration_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, 1, NULL, $8, 10)",
        vec![
            c.id.to_string().into(),
            step.to_owned().into(),
            finished.into(),
            finished.into(),
            if n < 0 { "failed" } else { "completed" }.to_owned().into(),
            n.max(0).into(),
            1i64.into(),
            (n < 0).then(|| "partner_unavailable".to_owned()).into(),
        ],
    )
    .await;
}

async fn the_summary_counts_the_fleet(db: &TestDb) {
    let store = db.store().await;
    let pump = PartnerName::parse("sandbox-pump").unwrap();
    // One running (claimed and started first: the claim takes every due connection), two due
    // now (one of them overdue by 40 minutes), one paused, one claimed. The running and the
    // claimed one are due too: a transfer in flight is on a due row until it ends.
    let running = leased(&store, "running").await;
    let due = active(&store, "due", "a", "r").await;
    let overdue = active(&store, "overdue", "a", "r").await;
    set(&store, &overdue, "next_sync_at = $1", vec![ago(40).into()]).await;
    let paused = healthy(&store, "paused").await;
    set(&store, &paused, "paused = $1", vec![true.into()]).await;
    let claimed = healthy(&store, "claimed").await;
    // Claimed while due, as every claim is (a held lease is always on a due row).
    set(
        &store,
        &claimed,
        "sync_lease_until = $1, next_sync_at = $2",
        vec![(now() + TimeDelta::seconds(115)).into(), ago(1).into()],
    )
    .await;
    set(
        &store,
        &running.connection,
        "last_error_code = 'rate_limited'",
        vec![],
    )
    .await;
    let (opened, _) = store
        .open_connection(&user("due"), &pump, start("h-pump", TimeDelta::minutes(10)))
        .await
        .unwrap();
    insert_run(&store, &due, "fetch", ago(10), 5).await;
    insert_run(&store, &due, "fetch", ago(20), -1).await;
    insert_run(&store, &overdue, "refresh", ago(30), 0).await;
    insert_run(&store, &due, "fetch", ago(70), 100).await;

    let at = now();
    let summary = store
        .ops_summary(at, &StuckSettings::default())
        .await
        .unwrap();
    assert_eq!(summary.at, at);
    assert_eq!(summary.total, 6);
    let pairs: Vec<_> = summary
        .by_partner_state
        .iter()
        .map(|p| (p.partner.as_str(), p.state, p.count))
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("sandbox-cgm", State::Active, 5),
            ("sandbox-pump", State::Authorizing, 1)
        ]
    );
    assert_eq!(summary.paused, 1);
    assert_eq!((summary.due_now, summary.overdue), (4, 1));
    let late = summary.oldest_due.unwrap().as_secs();
    assert!((40 * 60 - 5..=40 * 60 + 60).contains(&late), "{late}");
    assert_eq!((summary.in_flight, summary.claimed), (1, 1));
    assert_eq!(summary.errors, vec![("rate_limited".to_owned(), 1)]);
    let runs = |step: Step| {
        summary
            .last_hour
            .iter()
            .find(|(s, _)| *s == step)
            .map(|(_, r)| *r)
            .unwrap()
    };
    let fetch = runs(Step::Fetch);
    assert_eq!(
        (fetch.runs, fetch.errors, fetch.inserted, fetch.updated),
        (2, 1, 5, 2)
    );
    assert_eq!(runs(Step::Refresh).runs, 1);
    assert_eq!(runs(Step::Deliver).runs, 0);
    // No queue tables in this database: every depth is 0.
    assert!(summary.queue.iter().all(|q| q.pending == 0));
    assert_eq!(summary.queue.len(), 4);
    // Only the overdue transfer is stuck; the fresh claim is younger than its grace.
    assert_eq!(summary.stuck_connections, 1);
    let overdue_count = summary
        .stuck
        .iter()
        .find(|(r, _)| *r == R::TransferOverdue)
        .unwrap()
        .1;
    assert_eq!(overdue_count, 1);
    assert_eq!(opened.connection.state, State::Authorizing);
}
