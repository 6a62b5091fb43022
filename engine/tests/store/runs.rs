//! Step runs (docs/operations.md#step-runs): a transfer's run is written by the commit that
//! ends it, with its windows' counts summed; a failed or yielded run by `finish_sync`; a run
//! that lost its lease writes nothing; `idle_runs` counts completed runs that did not move the
//! newest data time; runs are paged newest first and purged by age and by count.

use std::{collections::BTreeMap, time::Duration};

use chrono::{TimeDelta, Utc};
use engine::{
    StoreError,
    ids::ConnectionId,
    model::{Actor, Change, ErrorInfo},
    state::Event,
    store::{Chunk, RunCounts, RunRetention, Step, StepRun, Store, SyncEnd},
    testing::TestDb,
};

use crate::{LEASE, leased, records, sql};

engine::backend_tests!(
    a_completed_run_is_written_with_its_last_window,
    failed_and_yielded_runs_are_written_when_they_end,
    a_run_that_lost_its_lease_records_nothing,
    idle_runs_count_runs_that_bring_no_new_data,
    runs_are_paged_newest_first_and_purged_by_age_and_count,
);

async fn runs_of(store: &Store, id: ConnectionId) -> Vec<StepRun> {
    let runs = store.step_runs(&id, None, 100).await.unwrap();
    runs.into_iter().map(|(_, run)| run).collect()
}

async fn idle_runs(store: &Store, id: ConnectionId) -> i32 {
    use engine::store::entities::connection;
    use sea_orm::EntityTrait;
    connection::Entity::find_by_id(id.to_string())
        .one(store.db())
        .await
        .unwrap()
        .unwrap()
        .idle_runs
}

async fn a_completed_run_is_written_with_its_last_window(db: &TestDb) {
    let store = db.store().await;
    let mut lease = leased(&store, "r1").await;
    let id = lease.connection.id;
    lease.run.statuses.add("200");
    lease.run.statuses.add("200");
    lease.run.statuses.add("429");
    let now = Utc::now();
    store
        .commit_chunk(&mut lease, records(1, 5).into(), Some(now), LEASE)
        .await
        .unwrap();
    assert!(
        runs_of(&store, id).await.is_empty(),
        "a window that does not end the run writes no run"
    );
    // The same 5 records again (unchanged) and 2 more.
    let mut last = records(1, 7);
    last[0].datum = engine::model::MappedRecord::datum_of(&serde_json::json!({"changed": true}));
    store
        .commit_last_chunk(
            &mut lease,
            last.into(),
            now,
            now + TimeDelta::hours(1),
            false,
        )
        .await
        .unwrap();
    let runs = runs_of(&store, id).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!((run.step, run.outcome.as_str()), (Step::Fetch, "completed"));
    assert_eq!(
        run.counts,
        RunCounts {
            inserted: 7,
            updated: 1,
            unchanged: 4,
            skipped: 0,
            windows: 2,
        }
    );
    assert_eq!(
        run.statuses,
        BTreeMap::from([("200".to_owned(), 2), ("429".to_owned(), 1)])
    );
    assert_eq!(run.error_code, None);
    assert!(run.started_at <= run.finished_at);
}

async fn failed_and_yielded_runs_are_written_when_they_end(db: &TestDb) {
    let store = db.store().await;
    let mut lease = leased(&store, "r2").await;
    let id = lease.connection.id;
    store
        .commit_chunk(&mut lease, records(2, 3).into(), Some(Utc::now()), LEASE)
        .await
        .unwrap();
    let next = Utc::now();
    store
        .finish_sync(&lease, SyncEnd::Yielded { next_sync_at: next })
        .await
        .unwrap()
        .expect("the lease held");
    let claimed = store.claim_due(10, LEASE).await.unwrap();
    let c = claimed.iter().find(|c| c.id == id).expect("due again");
    let lease = store
        .start_sync(c.id, c.version, LEASE)
        .await
        .unwrap()
        .unwrap();
    lease.run.statuses.add("503");
    let failed = SyncEnd::Failed {
        next_sync_at: Utc::now() + TimeDelta::minutes(5),
        error: ErrorInfo::new("partner_unavailable", "HTTP 503"),
        count_failure: true,
    };
    store.finish_sync(&lease, failed).await.unwrap().unwrap();
    let runs = runs_of(&store, id).await;
    let outcomes: Vec<_> = runs
        .iter()
        .map(|r| {
            (
                r.outcome.as_str(),
                r.error_code.as_deref(),
                r.counts.inserted,
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("failed", Some("partner_unavailable"), 0),
            ("yielded", None, 3)
        ],
        "newest first"
    );
    assert_eq!(runs[0].statuses, BTreeMap::from([("503".to_owned(), 1)]));
}

async fn a_run_that_lost_its_lease_records_nothing(db: &TestDb) {
    let store = db.store().await;
    let mut lease = leased(&store, "r3").await;
    let id = lease.connection.id;
    store
        .apply(
            id,
            None,
            Change::new(Event::Disconnect, Actor::new("user", "r3")),
        )
        .await
        .unwrap();
    let now = Utc::now();
    let lost = store
        .commit_last_chunk(&mut lease, records(3, 2).into(), now, now, false)
        .await;
    assert!(matches!(lost, Err(StoreError::LeaseLost)), "{lost:?}");
    let failed = SyncEnd::Failed {
        next_sync_at: now,
        error: ErrorInfo::new("partner_unavailable", "x"),
        count_failure: true,
    };
    assert!(store.finish_sync(&lease, failed).await.unwrap().is_none());
    assert!(runs_of(&store, id).await.is_empty());
}

/// Runs one completed transfer of `id` storing `chunk`.
async fn complete(store: &Store, id: ConnectionId, chunk: Chunk) {
    let claimed = store.claim_due(10, LEASE).await.unwrap();
    let c = claimed.iter().find(|c| c.id == id).expect("due");
    let mut lease = store
        .start_sync(c.id, c.version, LEASE)
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now();
    store
        .commit_chunk(&mut lease, Chunk::default(), Some(now), LEASE)
        .await
        .unwrap();
    store
        .commit_last_chunk(&mut lease, chunk, now, now, false)
        .await
        .unwrap();
}

async fn idle_runs_count_runs_that_bring_no_new_data(db: &TestDb) {
    let store = db.store().await;
    let mut lease = leased(&store, "r4").await;
    let id = lease.connection.id;
    let now = Utc::now();
    let first = records(4, 3);
    store
        .commit_last_chunk(&mut lease, first.clone().into(), now, now, false)
        .await
        .unwrap();
    assert_eq!(idle_runs(&store, id).await, 0, "new data");
    // Nothing new twice (the same records again: not newer).
    complete(&store, id, first.into()).await;
    complete(&store, id, Chunk::default()).await;
    assert_eq!(idle_runs(&store, id).await, 2);
    // Newer data in an earlier window than the last one also counts as moving.
    let claimed = store.claim_due(10, LEASE).await.unwrap();
    let c = claimed.iter().find(|c| c.id == id).unwrap();
    let mut lease = store
        .start_sync(c.id, c.version, LEASE)
        .await
        .unwrap()
        .unwrap();
    let mut newer = records(4, 1);
    newer[0].time = Utc::now() + TimeDelta::seconds(1);
    newer[0].partner_record_id = "newer".to_owned();
    let now = Utc::now();
    store
        .commit_chunk(&mut lease, newer.into(), Some(now), LEASE)
        .await
        .unwrap();
    store
        .commit_last_chunk(&mut lease, Chunk::default(), now, now, false)
        .await
        .unwrap();
    assert_eq!(idle_runs(&store, id).await, 0);
}

fn run(id: ConnectionId, finished_ago: TimeDelta) -> StepRun {
    let finished_at = Utc::now() - finished_ago;
    StepRun {
        connection_id: id,
        step: Step::Refresh,
        started_at: finished_at - TimeDelta::milliseconds(250),
        finished_at,
        outcome: "refreshed".to_owned(),
        counts: RunCounts::default(),
        statuses: BTreeMap::from([("200".to_owned(), 1)]),
        error_code: None,
    }
}

async fn runs_are_paged_newest_first_and_purged_by_age_and_count(db: &TestDb) {
    let store = db.store().await;
    let (a, b) = (ConnectionId::new(), ConnectionId::new());
    // 3 of `a` 10 days old, then 1500 of `b` and 2 of `a` from the last hour.
    let old: Vec<_> = (0..3).map(|_| run(a, TimeDelta::days(10))).collect();
    store.record_runs(&old).await.unwrap();
    let recent: Vec<_> = (0..1500)
        .map(|k| run(b, TimeDelta::seconds(3600 - k)))
        .collect();
    store.record_runs(&recent).await.unwrap();
    store
        .record_runs(&[run(a, TimeDelta::zero()), run(a, TimeDelta::zero())])
        .await
        .unwrap();
    let page = store.step_runs(&a, None, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    assert!(page[0].0 > page[1].0, "newest first");
    assert_eq!(page[0].1.duration(), Duration::from_millis(250));
    let rest = store.step_runs(&a, Some(page[1].0), 10).await.unwrap();
    assert_eq!(rest.len(), 3, "the older page");
    let retention = RunRetention {
        keep_for: Duration::from_secs(7 * 86_400),
        max_rows: 1000,
    };
    let purged = store.purge_runs(Utc::now(), retention).await.unwrap();
    // The 3 expired, then the oldest 502 of `b` beyond the 1000 kept.
    assert_eq!(purged, 505);
    assert_eq!(store.step_runs(&a, None, 10).await.unwrap().len(), 2);
    assert_eq!(store.step_runs(&b, None, 2000).await.unwrap().len(), 998);
    assert_eq!(store.purge_runs(Utc::now(), retention).await.unwrap(), 0);
    // A run row with a bad step is reported corrupt, not skipped silently.
    sql(
        &store,
        "UPDATE step_runs SET step = 'nonsense' WHERE connection_id = $1",
        vec![a.to_string().into()],
    )
    .await;
    assert!(matches!(
        store.step_runs(&a, None, 10).await,
        Err(StoreError::Corrupt(_))
    ));
}
