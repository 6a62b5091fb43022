//! The transfer tests' harness: the service in-process with an injected clock shared with the
//! sandbox (time is moved, never slept), transfers driven cycle by cycle, and the partner's
//! exact record sets to compare with.

use std::{collections::BTreeSet, sync::Arc};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use engine::{clock::ManualClock, ids::ConnectionId, testing::TestDb};
use sandbox::data;
use tributary::serve::Application;
use workflows::fetch::FetchReport;

use crate::helpers::{TestApp, test_config};

/// 2026-03-10 12:00 UTC: a Tuesday, outside Dexcom's nightly blackout.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap()
}

pub struct Harness {
    pub app: TestApp,
    pub clock: ManualClock,
}

impl Harness {
    pub async fn new(db: &TestDb) -> Self {
        Self::with_config(test_config(db)).await
    }

    pub async fn with_config(config: tributary::config::Config) -> Self {
        let clock = ManualClock::new(t0());
        let app = Application::build_with_clock(config, Arc::new(clock.clone()))
            .await
            .unwrap()
            .without_dispatch();
        let app = TestApp::from_app(app);
        app.sandbox.set_now(Some(t0()));
        Self { app, clock }
    }

    pub fn set_now(&self, t: DateTime<Utc>) {
        self.clock.set(t);
        self.app.sandbox.set_now(Some(t));
    }

    pub fn now(&self) -> DateTime<Utc> {
        use engine::clock::Clock;
        self.clock.now()
    }

    /// One scheduled cycle: claim what is due and run its fetch.
    pub async fn cycle(&self) -> Vec<FetchReport> {
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
    pub async fn claim_when_free(&self, id: ConnectionId) -> engine::store::Claimed {
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
    pub async fn next_cycle(&self, id: ConnectionId) -> Vec<FetchReport> {
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

    /// Waits (in real time, the clocks still) until no email is pending: each sent has its outcome
    /// recorded. The test moves the clocks by hours; a delivery step still running across such a
    /// jump would see its lease run out and a second step send its message again, which a real
    /// clock never does to a step that finishes within its lease (docs/notifications.md).
    pub async fn emails_settled(&self) {
        let store = self.app.workflows.store();
        for _ in 0..600 {
            let messages = store
                .outbox_messages(&engine::store::OutboxQuery {
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap();
            if messages.iter().all(|m| {
                m.kind == engine::invitation::MessageKind::Webhook
                    || m.status != engine::invitation::MessageStatus::Pending
            }) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("an email stayed pending for 30 s");
    }

    pub async fn stored(&self, id: ConnectionId) -> BTreeSet<String> {
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
pub fn expected(
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
pub fn assert_same(stored: &BTreeSet<String>, expected: &BTreeSet<String>) {
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

pub fn user_at_partner(user: &str) -> String {
    format!("{user}-at-partner")
}

/// [`assert_same`] naming the failpoint and the moment; `want` may be empty.
pub fn assert_same_at(point: &str, when: &str, want: &BTreeSet<String>, got: &BTreeSet<String>) {
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
