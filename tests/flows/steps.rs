//! Every lifecycle step stopped dead at each of its named boundaries, then repaired or resumed,
//! and every step run twice in a row (the second run changes nothing). Time is injected; no
//! background workers run: each step is driven by hand, as a worker would run it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use engine::{
    clock::{Clock, ManualClock},
    failpoint::{self, Injected},
    ids::ConnectionId,
    model::Actor,
    state::State,
    testing::TestDb,
};
use tributary::serve::Application;
use url::Url;
use workflows::{CallbackOutcome, CallbackParams, RefreshOutcome, WorkflowError};

use crate::helpers::{TestApp, test_config};

engine::backend_tests!(
    a_refresh_stopped_at_each_boundary_is_repaired_and_its_outcome_shown,
    a_callback_stopped_at_each_boundary_exchanges_the_code_once,
    a_revocation_stopped_at_each_boundary_is_attempted_again,
    each_step_run_twice_changes_nothing_the_second_time,
    a_revocation_is_abandoned_after_its_attempts,
);

/// 2026-03-10 12:00 UTC, outside Dexcom's nightly blackout.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap()
}

const CGM: &str = "sandbox-cgm";

/// The service with an injected clock and no background worker: the test is the worker.
pub struct Steps {
    pub app: TestApp,
    pub clock: ManualClock,
}

impl Steps {
    async fn new(db: &TestDb) -> Self {
        Self::with_config(test_config(db)).await
    }

    pub async fn with_config(mut config: tributary::config::Config) -> Self {
        // No background worker: the test is the worker.
        config.workers.enabled = false;
        let clock = ManualClock::new(t0());
        let app = Application::build_with_clock(config, Arc::new(clock.clone()))
            .await
            .unwrap();
        let app = TestApp::from_app(app);
        app.sandbox.set_now(Some(t0()));
        Self { app, clock }
    }

    pub fn advance(&self, by: TimeDelta) {
        self.clock.advance(by);
        self.app.sandbox.set_now(Some(self.clock.now()));
    }

    fn workflows(&self) -> &workflows::Workflows {
        &self.app.workflows
    }

    fn arm(&self, point: &'static str) {
        self.workflows().store().failpoints().arm(point, 1);
    }

    async fn connected(&self, user: &str) -> ConnectionId {
        TestApp::id(&self.app.connect_fully(user, CGM).await)
    }

    async fn state(&self, id: ConnectionId) -> State {
        self.workflows().store().get(id).await.unwrap().state
    }

    async fn journal_events(&self, id: ConnectionId) -> Vec<String> {
        let journal = self.workflows().store().journal(id).await.unwrap();
        journal.into_iter().map(|e| e.event).collect()
    }
}

fn stopped_at<T: std::fmt::Debug>(result: Result<T, WorkflowError>, point: &str) {
    match result {
        Err(WorkflowError::Injected(Injected(at))) => assert_eq!(at, point),
        other => panic!("expected a stop at {point}, got {other:?}"),
    }
}

/// The refresh's boundaries. The dangerous one is `refresh.answered`: the partner (the sandbox
/// rotates refresh tokens and detects reuse) has rotated the grant and we still hold the old
/// refresh token. The engine cannot undo that; it must repair the lock within its bound, show
/// that the outcome was unknown, and when the partner then revokes the grant, say why and tell
/// operators.
async fn a_refresh_stopped_at_each_boundary_is_repaired_and_its_outcome_shown(db: &TestDb) {
    let s = Steps::new(db).await;
    let store = s.workflows().store().clone();
    let stale_after = s.workflows().settings().stale_refresh_after;
    for (n, &point) in failpoint::REFRESH_BOUNDARIES.iter().enumerate() {
        let id = s.connected(&format!("refresh{n}")).await;
        let before = store.tokens(id).await.unwrap().unwrap();
        let partner_before = s.app.sandbox.stats().cgm;
        s.arm(point);
        stopped_at(
            s.workflows().refresh(id, Actor::system("test")).await,
            point,
        );
        let partner = s.app.sandbox.stats().cgm;
        let held = store.tokens(id).await.unwrap().unwrap();
        match point {
            failpoint::REFRESH_LOCKED => {
                assert_eq!(s.state(id).await, State::Refreshing, "{point}");
                assert_eq!(partner.refreshes, partner_before.refreshes, "not asked");
            }
            failpoint::REFRESH_ANSWERED => {
                assert_eq!(s.state(id).await, State::Refreshing, "{point}");
                assert_eq!(partner.rotations, partner_before.rotations + 1, "rotated");
                assert_eq!(held, before, "the rotated token was never stored");
            }
            _ => {
                assert_eq!(s.state(id).await, State::Active, "{point}");
                assert_ne!(held.refresh_token, before.refresh_token, "rotation stored");
            }
        }
        // The repair bound: the lock is not taken back before `stale_refresh_after`, and is
        // after it.
        assert_eq!(s.workflows().recover_stale_refreshes().await.unwrap(), 0);
        s.advance(TimeDelta::from_std(stale_after).unwrap() + TimeDelta::seconds(1));
        let recovered = s.workflows().recover_stale_refreshes().await.unwrap();
        let connection = store.get(id).await.unwrap();
        assert_eq!(connection.state, State::Active, "{point}");
        if point == failpoint::REFRESH_COMMITTED {
            assert_eq!(recovered, 0, "nothing to repair after the commit");
            assert_eq!(connection.refresh_outcome_unknown_at, None);
        } else {
            assert_eq!(recovered, 1, "{point}");
            assert!(connection.refresh_outcome_unknown_at.is_some(), "{point}");
            assert_eq!(
                s.journal_events(id).await.last().map(String::as_str),
                Some("refresh_abandoned")
            );
        }
        // The next refresh.
        let outcome = s
            .workflows()
            .refresh(id, Actor::system("test"))
            .await
            .unwrap();
        let connection = store.get(id).await.unwrap();
        if point == failpoint::REFRESH_ANSWERED {
            assert!(
                matches!(outcome, RefreshOutcome::Revoked { .. }),
                "{outcome:?}"
            );
            assert_eq!(connection.state, State::Revoked);
            let error = connection.last_error.unwrap();
            assert_eq!(error.code, "refresh_token_reuse_suspected", "{error:?}");
            assert_eq!(
                s.app.sandbox.stats().cgm.reuse_detections,
                partner_before.reuse_detections + 1
            );
            let alerts = store.alerts(10).await.unwrap();
            assert!(
                alerts
                    .iter()
                    .any(|a| a.code == "refresh_token_reuse_suspected"),
                "operators are told: {alerts:?}"
            );
        } else {
            assert!(
                matches!(outcome, RefreshOutcome::Refreshed { .. }),
                "{outcome:?}"
            );
            assert_eq!(connection.state, State::Active);
            assert_eq!(connection.refresh_outcome_unknown_at, None, "known again");
        }
    }
}

/// The query of the partner's redirect to our callback, as the callback receives it.
fn params(callback: &Url) -> CallbackParams {
    let q: HashMap<String, String> = callback.query_pairs().into_owned().collect();
    CallbackParams {
        state: q.get("state").cloned(),
        code: q.get("code").cloned(),
        error: q.get("error").cloned(),
        error_description: q.get("error_description").cloned(),
        iss: q.get("iss").cloned(),
    }
}

/// The callback's boundaries: whatever the stop, the code is exchanged at most once (a
/// replayed callback is refused without a token request), nothing is half-stored, and the user
/// can connect with a fresh attempt.
async fn a_callback_stopped_at_each_boundary_exchanges_the_code_once(db: &TestDb) {
    let s = Steps::new(db).await;
    for (n, &point) in failpoint::CALLBACK_BOUNDARIES.iter().enumerate() {
        let user = format!("cb{n}");
        let (_, body) = s.app.connect(&user, CGM).await;
        let id = TestApp::id(&body);
        let callback = s
            .app
            .consent(body["authorizeUrl"].as_str().unwrap(), "someone", true)
            .await;
        let exchanges = s.app.sandbox.stats().cgm.code_exchanges;
        s.arm(point);
        stopped_at(
            s.workflows().callback_step(CGM, params(&callback)).await,
            point,
        );
        let after = s.app.sandbox.stats().cgm.code_exchanges;
        let exchanged = u64::from(point != failpoint::CALLBACK_STATE_SPENT);
        assert_eq!(after, exchanges + exchanged, "{point}");
        let committed = point == failpoint::CALLBACK_COMMITTED;
        let connection = s.workflows().store().get(id).await.unwrap();
        assert_eq!(
            connection.has_tokens, committed,
            "{point}: nothing half-stored"
        );
        // The same callback again (the browser retries): no second exchange.
        let again = s.workflows().callback(CGM, params(&callback)).await;
        assert_eq!(s.app.sandbox.stats().cgm.code_exchanges, after, "{point}");
        if committed {
            assert!(
                matches!(again, CallbackOutcome::AlreadyConnected { .. }),
                "{again:?}"
            );
        } else {
            assert_eq!(again.code(), Some("state_reused"), "{point}: {again:?}");
            assert_eq!(s.state(id).await, State::Authorizing);
            // A fresh attempt connects the same connection.
            let connected = s.app.connect_fully(&user, CGM).await;
            assert_eq!(TestApp::id(&connected), id);
            assert_eq!(connected["state"], "active");
        }
    }
}

/// The revocation's boundaries: stopped after the partner answered, the revocation is still
/// owed and is attempted again (harmless: RFC 7009 answers 200 for a revoked token); journaled
/// once either way.
async fn a_revocation_stopped_at_each_boundary_is_attempted_again(db: &TestDb) {
    let s = Steps::new(db).await;
    let store = s.workflows().store().clone();
    for (n, &point) in failpoint::REVOKE_BOUNDARIES.iter().enumerate() {
        let id = s.connected(&format!("rv{n}")).await;
        s.workflows()
            .disconnect(id, Actor::new("user", "u"))
            .await
            .unwrap();
        let calls = s.app.sandbox.stats().cgm.revocations;
        s.arm(point);
        stopped_at(s.workflows().run_revoke_step(id).await, point);
        assert_eq!(s.app.sandbox.stats().cgm.revocations, calls + 1);
        let recorded = point == failpoint::REVOKE_RECORDED;
        let open = store.open_revocations(id).await.unwrap().len();
        assert_eq!(open, usize::from(!recorded), "{point}");
        let again = s.workflows().run_revoke_step(id).await.unwrap();
        assert_eq!(again, usize::from(!recorded), "{point}");
        let status = store.revocations(id).await.unwrap();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].outcome.as_deref(), Some("revoked"), "{point}");
        let confirmed = s
            .journal_events(id)
            .await
            .into_iter()
            .filter(|e| e == "partner_revocation_confirmed")
            .count();
        assert_eq!(confirmed, 1, "{point}: journaled once");
        assert!(store.open_revocations(id).await.unwrap().is_empty());
    }
}

/// Each step run twice in a row with the same input: the second run changes nothing (no
/// second partner request, no journal row, no stored change).
async fn each_step_run_twice_changes_nothing_the_second_time(db: &TestDb) {
    let s = Steps::new(db).await;
    let store = s.workflows().store().clone();
    let lease = Duration::from_secs(120);

    // Connect twice: one connection, reused.
    let (_, first) = s.app.connect("twice", CGM).await;
    let (_, second) = s.app.connect("twice", CGM).await;
    assert_eq!(first["id"], second["id"]);
    let id = TestApp::id(&s.app.connect_fully("twice", CGM).await);
    assert_eq!(id, TestApp::id(&first));
    assert_eq!(
        store
            .list_for_user(&engine::ids::UserId::parse("twice").unwrap())
            .await
            .unwrap()
            .len(),
        1
    );

    // Fetch: the same job twice.
    let claimed = store.claim_due(10, lease).await.unwrap();
    let job = claimed.iter().find(|c| c.id == id).unwrap().clone();
    let report = s.workflows().run_fetch(job.id, job.version).await.unwrap();
    assert!(
        matches!(report, workflows::fetch::FetchReport::Completed { .. }),
        "{report:?}"
    );
    let (records, journal, requests) = (
        store.record_ids(id, true).await.unwrap(),
        store.journal(id).await.unwrap().len(),
        s.app.sandbox.stats().cgm.data_requests,
    );
    let again = s.workflows().run_fetch(job.id, job.version).await.unwrap();
    assert_eq!(again, workflows::fetch::FetchReport::Skipped);
    assert_eq!(store.record_ids(id, true).await.unwrap(), records);
    assert_eq!(store.journal(id).await.unwrap().len(), journal);
    assert_eq!(s.app.sandbox.stats().cgm.data_requests, requests);

    // Refresh: the same refresh job twice.
    let due_at = store.get(id).await.unwrap().refresh_due_at.unwrap();
    s.advance(due_at - s.clock.now() + TimeDelta::seconds(1));
    let claimed = store.claim_due_refreshes(10, lease).await.unwrap();
    let job = claimed.iter().find(|c| c.id == id).unwrap().clone();
    let refreshes = s.app.sandbox.stats().cgm.refreshes;
    let outcome = s
        .workflows()
        .run_refresh_step(job.id, job.version)
        .await
        .unwrap();
    assert!(
        matches!(outcome, Some(RefreshOutcome::Refreshed { .. })),
        "{outcome:?}"
    );
    let after = store.get(id).await.unwrap();
    // The dispatcher's refresh job did it, not an inline refresh of a transfer.
    let journal = store.journal(id).await.unwrap();
    let refreshed: Vec<_> = journal
        .iter()
        .rev()
        .take(2)
        .map(|e| (e.event.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        refreshed,
        [
            ("refreshed", "system:refresher"),
            ("refresh_started", "system:refresher")
        ]
    );
    assert!(
        s.workflows()
            .run_refresh_step(job.id, job.version)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.app.sandbox.stats().cgm.refreshes,
        refreshes + 1,
        "one token request"
    );
    assert_eq!(store.get(id).await.unwrap(), after);

    // Disconnect twice: one transition, one revocation owed.
    s.workflows()
        .disconnect(id, Actor::new("user", "twice"))
        .await
        .unwrap();
    let revoked = store.get(id).await.unwrap();
    let err = s
        .workflows()
        .disconnect(id, Actor::new("user", "twice"))
        .await;
    assert!(
        matches!(err, Err(WorkflowError::InvalidTransition(_))),
        "{err:?}"
    );
    assert_eq!(store.get(id).await.unwrap(), revoked);
    assert_eq!(store.revocations(id).await.unwrap().len(), 1);

    // Revoke twice: one request to the partner, one journal entry.
    let calls = s.app.sandbox.stats().cgm.revocations;
    assert_eq!(s.workflows().run_revoke_step(id).await.unwrap(), 1);
    let journal = store.journal(id).await.unwrap().len();
    assert_eq!(s.workflows().run_revoke_step(id).await.unwrap(), 0);
    assert_eq!(s.app.sandbox.stats().cgm.revocations, calls + 1);
    assert_eq!(store.journal(id).await.unwrap().len(), journal);
}

/// A partner whose revocation endpoint never recovers: after the last attempt the revocation
/// is abandoned, its sealed token deleted, and the journal says so.
async fn a_revocation_is_abandoned_after_its_attempts(db: &TestDb) {
    let s = Steps::new(db).await;
    let store = s.workflows().store().clone();
    let id = s.connected("abandon").await;
    s.workflows()
        .disconnect(id, Actor::new("user", "u"))
        .await
        .unwrap();
    s.app.sandbox.faults().update(|f| f.revoke_down = true);
    let max = s.workflows().settings().revoker.max_attempts;
    for attempt in 1..=max {
        let due = store.due_revocations(10).await.unwrap();
        assert_eq!(due.len(), 1, "attempt {attempt} is due");
        s.workflows().run_revoke_step(id).await.unwrap();
        s.advance(TimeDelta::hours(7));
    }
    let status = store.revocations(id).await.unwrap();
    assert_eq!(status[0].outcome.as_deref(), Some("abandoned"));
    assert_eq!(status[0].attempts, max);
    assert!(
        store.open_revocations(id).await.unwrap().is_empty(),
        "token deleted"
    );
    assert!(store.due_revocations(10).await.unwrap().is_empty());
    assert!(
        s.journal_events(id)
            .await
            .contains(&"partner_revocation_abandoned".to_owned())
    );
}
