//! `GET /v1/connections/{id}/runs`: what each run of a step did on a connection, newest first
//! (docs/operations.md#step-runs). Counts and status codes only: never a record's value.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use engine::store::{Step, StepRun};
use poem_openapi::{
    Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use workflows::Workflows;

use crate::{
    ApiTags,
    models::Nullable,
    params::ConnectionIdParam,
    problem::{Problem, endpoint_response},
    security::{BearerAuth, CONNECTION_ROLES},
};

/// Runs per page when no `limit` is given.
const DEFAULT_LIMIT: u32 = 50;

/// A step that records runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "Step", rename_all = "snake_case")]
pub enum StepJson {
    Fetch,
    Refresh,
    Revoke,
    Deliver,
}

impl From<Step> for StepJson {
    fn from(step: Step) -> Self {
        match step {
            Step::Fetch => Self::Fetch,
            Step::Refresh => Self::Refresh,
            Step::Revoke => Self::Revoke,
            Step::Deliver => Self::Deliver,
        }
    }
}

/// One run of a step.
#[derive(Debug, Clone, Object)]
#[oai(rename = "StepRun", rename_all = "camelCase")]
pub struct StepRunJson {
    /// The run's id (ascending with time); pass as `before` to page.
    pub id: i64,
    pub step: StepJson,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// `completed`, `yielded`, `failed` (fetch); `refreshed`, `deferred`, `revoked` (refresh);
    /// `revoked`, `retrying`, `abandoned` (revoke); `sent`, `retrying`, `abandoned` (deliver).
    pub outcome: String,
    /// Records stored for the first time.
    pub inserted: u64,
    /// Records whose contents changed.
    pub updated: u64,
    /// Records read again unchanged.
    pub unchanged: u64,
    /// Partner records skipped for the first time (unreadable, unmappable, implausible).
    pub skipped: u64,
    /// Windows committed.
    pub windows: u64,
    /// The partner's answers: HTTP status (or `timeout`, `transport`) → count.
    pub statuses: BTreeMap<String, u32>,
    /// The error's stable code when the run did not succeed.
    pub error_code: Nullable<String>,
}

impl StepRunJson {
    pub(crate) fn new(id: i64, run: StepRun) -> Self {
        Self {
            id,
            step: run.step.into(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            duration_ms: u64::try_from(run.duration().as_millis()).unwrap_or(u64::MAX),
            outcome: run.outcome,
            inserted: run.counts.inserted,
            updated: run.counts.updated,
            unchanged: run.counts.unchanged,
            skipped: run.counts.skipped,
            windows: run.counts.windows,
            statuses: run.statuses,
            error_code: run.error_code.into(),
        }
    }
}

/// A page of runs, newest first.
#[derive(Debug, Clone, Object)]
#[oai(rename = "StepRunPage", rename_all = "camelCase")]
pub struct StepRunPageJson {
    pub runs: Vec<StepRunJson>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    pub next_before: Nullable<i64>,
}

endpoint_response! {
    pub enum RunsResponse {
        /// The connection's runs, newest first.
        Ok(Json<StepRunPageJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not see connections (`forbidden`).
        Forbidden = 403,
        /// No such connection, or not the caller's (`not_found`).
        NotFound = 404,
    }
}

pub struct RunsApi {
    pub workflows: Workflows,
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Connections")]
impl RunsApi {
    /// What each run of a step did on the connection (fetch, refresh, revoke, deliver):
    /// outcome, records, windows, the partner's status codes, duration, error code.
    #[oai(
        path = "/connections/:id/runs",
        method = "get",
        operation_id = "listConnectionRuns"
    )]
    async fn runs(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
        /// Only runs older than this run id (`nextBefore` of the previous page).
        #[oai(validator(minimum(value = "1")))]
        before: Query<Option<i64>>,
        /// Runs per page, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
    ) -> RunsResponse {
        let result = async {
            let store = self.workflows.store();
            let connection = caller.connection(store, &id, CONNECTION_ROLES).await?;
            let limit = limit.0.unwrap_or(DEFAULT_LIMIT);
            let mut runs = store
                .step_runs(&connection.id, before.0, u64::from(limit) + 1)
                .await?;
            let more = runs.len() > limit as usize;
            runs.truncate(limit as usize);
            let next_before = more.then(|| runs.last().map(|(id, _)| *id)).flatten();
            Ok::<_, Problem>(StepRunPageJson {
                runs: runs
                    .into_iter()
                    .map(|(id, run)| StepRunJson::new(id, run))
                    .collect(),
                next_before: next_before.into(),
            })
        };
        match result.await {
            Ok(page) => RunsResponse::Ok(Json(page)),
            Err(problem) => problem.into(),
        }
    }
}
