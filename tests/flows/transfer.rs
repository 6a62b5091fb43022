//! Data transfer through the sandbox, time injected (never slept): exactly the partner's
//! records, across cycles, through crashes, late publication, races and faults.

use std::{collections::BTreeSet, sync::Arc};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use engine::{clock::ManualClock, ids::ConnectionId, state::State, testing::TestDb};
use sandbox::data;
use tributary::serve::Application;
use workflows::fetch::FetchReport;

use crate::helpers::{TestApp, test_config};

engine::backend_tests!(
    transfer_stores_exactly_the_partner_records_across_cycles,
    late_published_gap_is_stored_on_a_later_cycle,
    racing_workers_store_one_set,
    a_fetch_stopped_at_each_boundary_resumes_to_the_same_set,
    partner_faults_end_in_the_right_states,
    workers_start_the_first_sync_within_seconds,
);

/// 2026-03-10 12:00 UTC: a Tuesday, outside Dexcom's nightly blackout.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap()
}

struct Harness {
    app: TestApp,
    clock: ManualClock,
}

impl Harness {
    async fn new(db: &TestDb) -> Self {
        Self::with_config(test_config(db)).await
    }

    async fn with_config(config: tributary::config::Config) -> Self {
        let clock = ManualClock::new(t0());
        let app = Application::build_with_clock(config, Arc::new(clock.clone()))
            .await
            .unwrap()
            .without_dispatch();
        let app = TestApp::from_app(app);
        app.sandbox.set_now(Some(t0()));
        Self { app, clock }
    }

    fn set_now(&self, t: DateTime<Utc>) {
        self.clock.set(t);
        self.app.sandbox.set_now(Some(t));
    }

    fn now(&self) -> DateTime<Utc> {
        use engine::clock::Clock;
        self.clock.now()
    }

    /// One scheduled cycle: claim what is due and run its fetch.
    async fn cycle(&self) -> Vec<FetchReport> {
        let store = self.app.workflows.store();
        let claimed = store
            .claim_due(100, std::time::Duration::from_secs(120))
            .await
            .unwrap();
        let mut reports = Vec::new();
        for c in claimed {
            reports.push(self.app.workflows.run_fetch(c.id, c.version).await.unwrap());
        }
        reports
    }

    /// Claims the one due connection, waiting (in real time, bounded) while an aborted run's
    /// last commit, which runs to its end on its own task, still holds the row: `SKIP LOCKED`
    /// claims pass over a row that is being written.
    async fn claim_when_free(&self, id: ConnectionId) -> engine::store::Claimed {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let claimed = self
                .app
                .workflows
                .store()
                .claim_due(10, std::time::Duration::from_secs(120))
                .await
                .unwrap();
            if let Some(c) = claimed.into_iter().find(|c| c.id == id) {
                return c;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the due connection was not claimable within 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Advances both clocks to the connection's next sync and runs that cycle.
    async fn next_cycle(&self, id: ConnectionId) -> Vec<FetchReport> {
        let next = self
            .app
            .workflows
            .store()
            .get(id)
            .await
            .unwrap()
            .next_sync_at
            .unwrap();
        self.set_now(next.max(self.now()) + TimeDelta::seconds(1));
        self.cycle().await
    }

    async fn stored(&self, id: ConnectionId) -> BTreeSet<String> {
        self.app
            .workflows
            .store()
            .record_ids(id, true)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| !r.starts_with("device:"))
            .collect()
    }
}

/// Every CGM record id the sandbox will ever publish for `user` with time in [start, end].
fn expected(
    user: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    app: &TestApp,
) -> BTreeSet<String> {
    let ctx = app.sandbox.data_context();
    let mut ids = BTreeSet::new();
    ids.extend(
        data::expected_egvs(&ctx, user, start, end)
            .into_iter()
            .map(|r| r.record_id),
    );
    ids.extend(
        data::expected_calibrations(&ctx, user, start, end)
            .into_iter()
            .map(|r| r.record_id),
    );
    ids.extend(
        data::expected_events(&ctx, user, start, end)
            .into_iter()
            .map(|r| r.record_id),
    );
    ids.extend(
        data::expected_alerts(&ctx, user, start, end)
            .into_iter()
            .map(|r| r.record_id),
    );
    ids
}

/// Set equality, reported as counts and a few examples rather than thousands of ids.
fn assert_same(stored: &BTreeSet<String>, expected: &BTreeSet<String>) {
    let missing: Vec<_> = expected.difference(stored).take(3).collect();
    let extra: Vec<_> = stored.difference(expected).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "stored {} expected {}: missing {} (e.g. {missing:?}), extra {} (e.g. {extra:?})",
        stored.len(),
        expected.len(),
        expected.difference(stored).count(),
        stored.difference(expected).count()
    );
    assert!(!expected.is_empty());
}

async fn transfer_stores_exactly_the_partner_records_across_cycles(db: &TestDb) {
    let h = Harness::new(db).await;
    let connection = h.app.connect_fully("ann", "sandbox-cgm").await;
    let id = TestApp::id(&connection);
    let backfill_start = t0() - TimeDelta::days(30);

    let first = h.cycle().await;
    assert!(
        matches!(
            first.as_slice(),
            [FetchReport::Completed { windows: 1, .. }]
        ),
        "{first:?}"
    );
    assert_same(
        &h.stored(id).await,
        &expected("ann-at-partner", backfill_start, t0(), &h.app),
    );

    for _ in 0..4 {
        let reports = h.next_cycle(id).await;
        assert!(
            matches!(reports.as_slice(), [FetchReport::Completed { .. }]),
            "{reports:?}"
        );
        let c = h.app.workflows.store().get(id).await.unwrap();
        let gap = c.next_sync_at.unwrap() - h.now();
        assert!(
            gap >= TimeDelta::minutes(45) && gap <= TimeDelta::minutes(75) + TimeDelta::minutes(15),
            "{gap}"
        );
    }
    let end = h.now();
    assert!(end - t0() >= TimeDelta::hours(3));
    assert_same(
        &h.stored(id).await,
        &expected("ann-at-partner", backfill_start, end, &h.app),
    );

    // Deleted partner events are retired, not served.
    let ctx = h.app.sandbox.data_context();
    let deleted: BTreeSet<_> = data::expected_events(&ctx, "ann-at-partner", backfill_start, end)
        .into_iter()
        .filter(|e| e.event_status == "deleted")
        .map(|e| e.record_id)
        .collect();
    let live: BTreeSet<_> = h
        .app
        .workflows
        .store()
        .record_ids(id, false)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(deleted.iter().all(|d| !live.contains(d)));

    let c = h.app.connection(&id.to_string()).await;
    assert!(
        c["lastSyncAt"].is_string()
            && c["latestDataTime"].is_string()
            && c["earliestDataTime"].is_string()
    );
    assert!(c["lastError"].is_null());
    // The data endpoint serves the Tidepool model.
    let (status, page) = h
        .app
        .get(
            "/v1/users/ann/data?type=cbg&limit=5",
            &h.app.user_token("ann"),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    let first = &page["data"][0];
    assert_eq!(first["type"], "cbg");
    assert!(first["value"].is_number() && first["units"] == "mg/dL");
    assert!(first["origin"]["id"].is_string());
    h.app.stop().await;
}

async fn late_published_gap_is_stored_on_a_later_cycle(db: &TestDb) {
    let h = Harness::new(db).await;
    let user = "bea-at-partner";
    h.app.sandbox.faults().update(|f| f.backfill = true);
    let day = t0().date_naive() - chrono::Days::new(1);
    let (gap_start, gap_end) = data::gap_on(user, day);
    // Connect shortly after yesterday's gap ended: its records are not published yet.
    h.set_now(gap_end + TimeDelta::minutes(10));
    let connection = h.app.connect_fully("bea", "sandbox-cgm").await;
    let id = TestApp::id(&connection);
    h.cycle().await;
    let ctx = h.app.sandbox.data_context();
    let in_gap: BTreeSet<_> =
        data::expected_egvs(&ctx, user, gap_start, gap_end - TimeDelta::seconds(1))
            .into_iter()
            .map(|r| r.record_id)
            .collect();
    assert!(!in_gap.is_empty());
    let stored = h.stored(id).await;
    assert!(
        in_gap.iter().all(|r| !stored.contains(r)),
        "gap withheld at first"
    );
    // Later cycles re-read the overlap and pick the backfilled records up.
    while h.now() < gap_end + TimeDelta::hours(3) {
        h.next_cycle(id).await;
    }
    let stored = h.stored(id).await;
    assert!(
        in_gap.iter().all(|r| stored.contains(r)),
        "gap stored on a later cycle"
    );
    let start = h.now().min(gap_end + TimeDelta::minutes(10)) - TimeDelta::days(30);
    assert_same(&stored, &expected(user, start, h.now(), &h.app));
    h.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_killed_transfers_resume_and_store_the_same_set() {
    let db = TestDb::sqlite().await;
    killed_transfers_resume_and_store_the_same_set(&db).await;
    db.cleanup().await;
}

/// On PostgreSQL an aborted run's last window commit (run to its end on its own task) holds
/// the row while it finishes, and `SKIP LOCKED` claims pass over it until then; the test waits
/// for the row as a dispatcher's next tick would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_killed_transfers_resume_and_store_the_same_set() {
    let db = TestDb::postgres().await;
    killed_transfers_resume_and_store_the_same_set(&db).await;
    db.cleanup().await;
}

async fn killed_transfers_resume_and_store_the_same_set(db: &TestDb) {
    // One-day windows: the 30-day backfill is 30 window commits, so kills land between them.
    let mut config = test_config(db);
    config.sandbox.max_window_days = 1;
    let h = Harness::with_config(config).await;
    let connection = h.app.connect_fully("cal", "sandbox-cgm").await;
    let id = TestApp::id(&connection);
    // Each request takes a while, so aborting at increasing delays kills the transfer at
    // different boundaries (before, between and after window commits).
    h.app.sandbox.faults().update(|f| f.latency_ms = 40);
    // The backfill starts 30 days before the run that commits the first window. Which run
    // that is depends on where the kills landed (an aborted run's last commit may still land
    // after the abort), so every run's start is a candidate and exactly one must explain the
    // stored set.
    let mut candidates = Vec::new();
    let mut windows_seen = std::collections::BTreeSet::new();
    for kill_after_ms in [5u64, 60, 130, 250, 450, 700, 1000] {
        let store = h.app.workflows.store().clone();
        candidates.push(h.now() - TimeDelta::days(30));
        {
            let c = h.claim_when_free(id).await;
            let workflows = h.app.workflows.clone();
            let task = tokio::spawn(async move { workflows.run_fetch(c.id, c.version).await });
            tokio::time::sleep(std::time::Duration::from_millis(kill_after_ms)).await;
            task.abort();
            let _ = task.await;
        }
        windows_seen.insert(store.get(id).await.unwrap().fetched_through);
        // The lease runs out; the connection is claimed again.
        h.set_now(h.now() + TimeDelta::minutes(6));
    }
    assert!(
        windows_seen.iter().flatten().count() >= 2,
        "kills landed between window commits of the backfill: {windows_seen:?}"
    );
    h.app.sandbox.faults().update(|f| f.latency_ms = 0);
    let mut guard = 0;
    while h
        .app
        .workflows
        .store()
        .get(id)
        .await
        .unwrap()
        .last_sync_at
        .is_none()
        && guard < 10
    {
        h.set_now(h.now() + TimeDelta::minutes(6));
        candidates.push(h.now() - TimeDelta::days(30));
        let c = h.claim_when_free(id).await;
        h.app.workflows.run_fetch(c.id, c.version).await.unwrap();
        guard += 1;
    }
    let c = h.app.workflows.store().get(id).await.unwrap();
    assert_eq!(c.state, State::Active);
    assert!(
        c.last_sync_at.is_some(),
        "the transfer completed after the kills: {c:?}"
    );
    let stored = h.stored(id).await;
    let through = c.fetched_through.unwrap();
    let differences: Vec<(usize, usize)> = candidates
        .iter()
        .map(|&start| {
            let expected_set = expected("cal-at-partner", start, through, &h.app);
            (
                expected_set.difference(&stored).count(),
                stored.difference(&expected_set).count(),
            )
        })
        .collect();
    assert!(
        differences.contains(&(0, 0)),
        "resumed transfers store exactly the partner's set from one run's backfill start \
         (missing, extra) per candidate start: {differences:?}"
    );
    h.app.stop().await;
}

/// A fetch stopped dead at each named step boundary (as if its process had been killed there:
/// no cleanup runs, an open transaction is dropped, the lease stays taken) keeps exactly what its
/// committed windows stored, is not picked up again while its lease holds, and, resumed, stores
/// the same set as an uninterrupted run.
async fn a_fetch_stopped_at_each_boundary_resumes_to_the_same_set(db: &TestDb) {
    use engine::failpoint::{self, FETCH_BOUNDARIES};
    for (i, &point) in FETCH_BOUNDARIES.iter().enumerate() {
        // One-day windows: the 30-day backfill is 30 window commits; window-level points trip
        // in the third window, so two windows are behind the crash and 27 ahead of it.
        let mut config = test_config(db);
        config.sandbox.max_window_days = 1;
        let h = Harness::with_config(config).await;
        let user = format!("eve{i}");
        let user = user.as_str();
        let connection = h.app.connect_fully(user, "sandbox-cgm").await;
        let id = TestApp::id(&connection);
        let start = h.now() - TimeDelta::days(30);
        let per_window = [
            failpoint::FETCH_WINDOW_RECEIVED,
            failpoint::COMMIT_CURSOR_WRITTEN,
            failpoint::COMMIT_RECORDS_WRITTEN,
            failpoint::FETCH_WINDOW_COMMITTED,
        ]
        .contains(&point);
        let store = h.app.workflows.store();
        store
            .failpoints()
            .arm(point, if per_window { 3 } else { 1 });
        let c = h.claim_when_free(id).await;
        let err = h
            .app
            .workflows
            .run_fetch(c.id, c.version)
            .await
            .expect_err(point);
        assert!(
            matches!(err, workflows::WorkflowError::Injected(failpoint::Injected(p)) if p == point),
            "{point}: {err:?}"
        );
        assert!(!store.failpoints().is_armed(point));

        // What the crash left: exactly the windows that committed before it.
        let crashed = store.get(id).await.unwrap();
        let committed_windows = match point {
            failpoint::FETCH_STARTED => Some(0),
            failpoint::FETCH_WINDOW_RECEIVED
            | failpoint::COMMIT_CURSOR_WRITTEN
            | failpoint::COMMIT_RECORDS_WRITTEN => Some(2),
            failpoint::FETCH_WINDOW_COMMITTED => Some(3),
            // The last window's commit is also the run's end: all but that window.
            failpoint::FETCH_BEFORE_FINISH => Some(29),
            // Every window (the last one ends at "now").
            _ => None,
        };
        let expected_through = match committed_windows {
            Some(0) => None,
            Some(n) => Some(start + TimeDelta::days(n)),
            None => Some(h.now()),
        };
        assert_eq!(crashed.fetched_through, expected_through, "{point}");
        assert_eq!(
            crashed.last_sync_at.is_some(),
            point == failpoint::FETCH_FINISHED,
            "{point}: only a finished run records its end"
        );
        let stored = h.stored(id).await;
        let kept = match crashed.fetched_through {
            Some(through) => expected(user_at_partner(user).as_str(), start, through, &h.app),
            None => BTreeSet::new(),
        };
        assert_same_at(point, "after the crash", &kept, &stored);

        // The dead run's lease holds: nobody takes the connection over before it expires.
        h.set_now(h.now() + TimeDelta::minutes(1));
        let early = store
            .claim_due(10, std::time::Duration::from_secs(120))
            .await
            .unwrap();
        assert!(
            early.iter().all(|c| c.id != id),
            "{point}: claimed under a live lease: {early:?}"
        );

        // Resumed after the lease expired (or, when the run had finished, at its next run).
        let resumed_at = if point == failpoint::FETCH_FINISHED {
            crashed.next_sync_at.unwrap() + TimeDelta::seconds(1)
        } else {
            h.now() + TimeDelta::minutes(6)
        };
        h.set_now(resumed_at);
        let c = h.claim_when_free(id).await;
        let report = h.app.workflows.run_fetch(c.id, c.version).await.unwrap();
        assert!(
            matches!(report, FetchReport::Completed { .. }),
            "{point}: {report:?}"
        );
        let done = store.get(id).await.unwrap();
        let anchor = if crashed.fetched_through.is_some() {
            start
        } else {
            resumed_at - TimeDelta::days(30)
        };
        let want = expected(
            user_at_partner(user).as_str(),
            anchor,
            done.fetched_through.unwrap(),
            &h.app,
        );
        assert_same_at(point, "after resuming", &want, &h.stored(id).await);
        assert_eq!(
            done.failure_count, 0,
            "{point}: a crash is not a partner failure"
        );
        h.app.stop().await;
    }
}

fn user_at_partner(user: &str) -> String {
    format!("{user}-at-partner")
}

/// [`assert_same`] naming the failpoint and the moment; `want` may be empty.
fn assert_same_at(point: &str, when: &str, want: &BTreeSet<String>, got: &BTreeSet<String>) {
    let missing: Vec<_> = want.difference(got).take(3).collect();
    let extra: Vec<_> = got.difference(want).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{point}, {when}: {} missing (e.g. {missing:?}), {} extra (e.g. {extra:?}) of {} expected",
        want.difference(got).count(),
        got.difference(want).count(),
        want.len()
    );
}

async fn racing_workers_store_one_set(db: &TestDb) {
    let h = Harness::new(db).await;
    let connection = h.app.connect_fully("dan", "sandbox-cgm").await;
    let id = TestApp::id(&connection);
    let store = h.app.workflows.store();
    let claimed = store
        .claim_due(10, std::time::Duration::from_secs(120))
        .await
        .unwrap();
    let c = claimed[0].clone();
    // The same job delivered twice (at-least-once) to two workers at once.
    let (a, b) = tokio::join!(
        h.app.workflows.run_fetch(c.id, c.version),
        h.app.workflows.run_fetch(c.id, c.version)
    );
    let reports = [a.unwrap(), b.unwrap()];
    assert_eq!(
        reports
            .iter()
            .filter(|r| matches!(r, FetchReport::Skipped))
            .count(),
        1,
        "{reports:?}"
    );
    assert_same(
        &h.stored(id).await,
        &expected("dan-at-partner", t0() - TimeDelta::days(30), t0(), &h.app),
    );
    // A second claim while the first is leased gets nothing.
    assert!(
        store
            .claim_due(10, std::time::Duration::from_secs(120))
            .await
            .unwrap()
            .is_empty()
    );
    h.app.stop().await;
}

async fn partner_faults_end_in_the_right_states(db: &TestDb) {
    let mut config = test_config(db);
    // Short enough to test a slow partner, long enough for a loaded test machine.
    config.sandbox.request_timeout_secs = 3;
    let h = Harness::with_config(config).await;
    let connection = h.app.connect_fully("eve", "sandbox-cgm").await;
    let id = TestApp::id(&connection);
    h.cycle().await;
    let store = h.app.workflows.store().clone();

    // 5xx: retried later with backoff, counted, still active.
    h.app.sandbox.faults().update(|f| f.fail_next.data = 1);
    let reports = h.next_cycle(id).await;
    assert!(
        matches!(&reports[..], [FetchReport::Failed { code }] if code == "partner_unavailable"),
        "{reports:?}"
    );
    let c = store.get(id).await.unwrap();
    assert_eq!((c.state, c.failure_count), (State::Active, 1));
    assert!(c.next_sync_at.unwrap() > h.now() + TimeDelta::minutes(2));
    // A success resets the count.
    h.next_cycle(id).await;
    assert_eq!(store.get(id).await.unwrap().failure_count, 0);

    // 429: waits as Retry-After says, not counted.
    h.app.sandbox.faults().update(|f| {
        f.rate_limit_next.data = 1;
        f.retry_after_secs = 600;
    });
    h.next_cycle(id).await;
    let c = store.get(id).await.unwrap();
    assert_eq!(c.failure_count, 0);
    assert_eq!(c.last_error.unwrap().code, "rate_limited");
    let wait = c.next_sync_at.unwrap() - h.now();
    assert!(wait >= TimeDelta::seconds(600), "{wait}");

    // Malformed body: transient.
    h.app.sandbox.faults().update(|f| f.malformed_next.data = 1);
    h.next_cycle(id).await;
    assert_eq!(store.get(id).await.unwrap().failure_count, 1);

    // A partner slower than the request timeout (3 s here): transient, counted, retried later.
    h.app.sandbox.faults().update(|f| f.latency_ms = 4000);
    let reports = h.next_cycle(id).await;
    h.app.sandbox.faults().update(|f| f.latency_ms = 0);
    assert!(
        matches!(&reports[..], [FetchReport::Failed { .. }]),
        "{reports:?}"
    );
    let c = store.get(id).await.unwrap();
    assert_eq!((c.state, c.failure_count), (State::Active, 2));
    let error = c.last_error.unwrap();
    assert!(error.message.contains("timed out after 3s"), "{error:?}");
    assert!(c.next_sync_at.unwrap() > h.now() + TimeDelta::minutes(2));

    // An expired access token is refreshed inline and the transfer succeeds.
    h.next_cycle(id).await;
    h.set_now(h.now() + TimeDelta::hours(3));
    let reports = h.cycle().await;
    assert!(
        matches!(&reports[..], [FetchReport::Completed { .. }]),
        "{reports:?}"
    );
    assert!(
        h.app
            .events(&id.to_string())
            .await
            .iter()
            .any(|e| e["event"] == "refreshed")
    );

    // Failures beyond the budget (30 h) fail the connection.
    h.app.sandbox.faults().update(|f| f.maintenance_now = true);
    let started = h.now();
    while store.get(id).await.unwrap().state == State::Active
        && h.now() - started < TimeDelta::hours(40)
    {
        h.next_cycle(id).await;
    }
    let c = store.get(id).await.unwrap();
    assert_eq!(c.state, State::Failed, "{c:?}");
    assert!(h.now() - started >= TimeDelta::hours(30));
    h.app.sandbox.faults().update(|f| f.maintenance_now = false);

    // A partner-side revocation ends in `revoked`.
    let (_, again) = h.app.connect("eve", "sandbox-cgm").await;
    let callback = h
        .app
        .consent(
            again["authorizeUrl"].as_str().unwrap(),
            "eve-at-partner",
            true,
        )
        .await;
    h.app.follow_callback(&callback).await;
    h.app
        .sandbox
        .revoke_user(sandbox::Flavor::Cgm, "eve-at-partner");
    h.set_now(h.now() + TimeDelta::seconds(5));
    h.cycle().await;
    let c = store.get(id).await.unwrap();
    assert_eq!(c.state, State::Revoked);
    assert_eq!(c.last_error.unwrap().code, "invalid_grant");
    h.app.stop().await;
}

async fn workers_start_the_first_sync_within_seconds(db: &TestDb) {
    let app = TestApp::from_app(Application::build(test_config(db)).await.unwrap());
    let connection = app.connect_fully("fay", "sandbox-pump").await;
    let id = TestApp::id(&connection);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let c = app.workflows.store().get(id).await.unwrap();
        if c.last_sync_at.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "first sync did not start: {c:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, page) = app
        .get("/v1/users/fay/data?type=bolus", &app.user_token("fay"))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(!page["data"].as_array().unwrap().is_empty(), "{page}");
    app.stop().await;
}
