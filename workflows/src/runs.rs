//! The partner's answers during a step run (docs/operations.md#step-runs): the step runs its
//! work inside [`tallied`], and the one place each kind of partner request is answered (the
//! data API client, the OAuth transport) calls [`note`]. Outside a run, `note` does nothing.

use std::future::Future;

use engine::store::StatusTally;

tokio::task_local! {
    static TALLY: StatusTally;
}

/// Runs `work` with `tally` collecting the partner's answers.
pub(crate) async fn tallied<F: Future>(tally: StatusTally, work: F) -> F::Output {
    TALLY.scope(tally, work).await
}

/// One partner answer: an HTTP status, or `timeout` / `transport` when none came.
pub(crate) fn note(answer: &str) {
    let _ = TALLY.try_with(|tally| tally.add(answer));
}

/// [`note`] for an HTTP status.
pub(crate) fn note_status(status: u16) {
    note(&status.to_string());
}

impl crate::Workflows {
    /// Records a run of a step that is not a transfer (those are recorded by the store with
    /// the commit that ends them). The step's effects are already committed: a failure to
    /// record is logged, never the step's failure.
    pub(crate) async fn record_runs(&self, runs: &[engine::store::StepRun]) {
        if let Err(err) = self.store.record_runs(runs).await {
            tracing::warn!(error = %err, runs = runs.len(), "recording step runs failed");
        }
    }
}

/// A run of `step` on `id` that started at `started_at` and ends now.
pub(crate) fn ended(
    step: engine::store::Step,
    id: engine::ids::ConnectionId,
    started_at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    tally: &StatusTally,
    outcome: &str,
    error_code: Option<&str>,
) -> engine::store::StepRun {
    engine::store::StepRun {
        connection_id: id,
        step,
        started_at,
        finished_at: now,
        outcome: outcome.to_owned(),
        counts: engine::store::RunCounts::default(),
        statuses: tally.snapshot(),
        error_code: error_code.map(str::to_owned),
    }
}
