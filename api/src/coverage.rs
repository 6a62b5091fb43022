//! `GET /v1/connections/{id}/coverage` (docs/coverage.md#coverage): which part of a time
//! range the connection fetched and committed, what it has not fetched and why, and per data
//! type where the partner had no record for longer than a gap. Times and counts only: never a
//! record's value.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use engine::store::{Coverage, TimeSpan, Unfetched};
use poem::http::StatusCode;
use poem_openapi::{
    Object, OpenApi,
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

/// The range when none is given: the last 14 days.
const DEFAULT_DAYS: i64 = 14;

/// A time range `[start, end)`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "TimeRange", rename_all = "camelCase")]
pub struct SpanJson {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl From<TimeSpan> for SpanJson {
    fn from(s: TimeSpan) -> Self {
        Self {
            start: s.start,
            end: s.end,
        }
    }
}

/// A part of the range not fetched, and why.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Unfetched", rename_all = "camelCase")]
pub struct UnfetchedJson {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `pending` (newer than the cursor: the next transfer reads it), `before_first_window`
    /// (older than the connection's first window), `never_fetched`.
    pub reason: String,
    /// When `pending`: the next transfer.
    pub next_sync_at: Nullable<DateTime<Utc>>,
    /// When `pending` and transfers fail: since when, and the last error's code.
    pub failing_since: Nullable<DateTime<Utc>>,
    pub last_error_code: Nullable<String>,
}

/// One data type in the fetched part of the range.
#[derive(Debug, Clone, Object)]
#[oai(rename = "TypeCoverage", rename_all = "camelCase")]
pub struct TypeCoverageJson {
    /// The Tidepool datum type (`cbg`, `smbg`, `basal`, …).
    pub r#type: String,
    pub records: u64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    /// Stretches longer than `gapSecs` with no record of this type although fetched: the
    /// partner had none.
    pub empty: Vec<SpanJson>,
}

/// A connection's coverage of a range.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Coverage", rename_all = "camelCase")]
pub struct CoverageJson {
    pub connection_id: String,
    pub range: SpanJson,
    pub gap_secs: u64,
    /// The fetched and committed part of the range (`null`: none of it).
    pub fetched: Nullable<SpanJson>,
    /// The parts not fetched, oldest first.
    pub unfetched: Vec<UnfetchedJson>,
    /// Data types with records in the fetched part.
    pub types: Vec<TypeCoverageJson>,
}

impl From<Coverage> for CoverageJson {
    fn from(c: Coverage) -> Self {
        Self {
            connection_id: c.connection_id.to_string(),
            range: c.range.into(),
            gap_secs: c.gap.as_secs(),
            fetched: c.fetched.map(SpanJson::from).into(),
            unfetched: c
                .unfetched
                .into_iter()
                .map(|(span, why)| {
                    let reason = why.code().to_owned();
                    let (next, failing, code) = match why {
                        Unfetched::Pending {
                            next_sync_at,
                            failing_since,
                            last_error_code,
                        } => (next_sync_at, failing_since, last_error_code),
                        _ => (None, None, None),
                    };
                    UnfetchedJson {
                        start: span.start,
                        end: span.end,
                        reason,
                        next_sync_at: next.into(),
                        failing_since: failing.into(),
                        last_error_code: code.into(),
                    }
                })
                .collect(),
            types: c
                .types
                .into_iter()
                .map(|t| TypeCoverageJson {
                    r#type: t.datum_type,
                    records: t.records,
                    first: t.first,
                    last: t.last,
                    empty: t.empty.into_iter().map(Into::into).collect(),
                })
                .collect(),
        }
    }
}

/// `[start, end)` as an operator asked for it ([`TimeSpan::checked`]; 422 `invalid_range`).
pub fn checked_range(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<TimeSpan, Problem> {
    TimeSpan::checked(start, end, now).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_range",
            e.to_string(),
        )
    })
}

endpoint_response! {
    pub enum CoverageResponse {
        /// The connection's coverage of the range.
        Ok(Json<CoverageJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not see connections (`forbidden`).
        Forbidden = 403,
        /// No such connection, or not the caller's (`not_found`).
        NotFound = 404,
        /// The range is empty, longer than 92 days or in the future (`invalid_range`).
        InvalidRange = 422,
    }
}

pub struct CoverageApi {
    pub workflows: Workflows,
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Connections")]
impl CoverageApi {
    /// Which part of a time range the connection fetched and committed, what it has not
    /// fetched and why, and per data type the stretches where the partner had no record, so
    /// "the partner had no data" and "we failed to fetch" look different.
    #[oai(
        path = "/connections/:id/coverage",
        method = "get",
        operation_id = "connectionCoverage"
    )]
    async fn coverage(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
        /// Range start (RFC 3339); default `end` minus 14 days.
        start: Query<Option<DateTime<Utc>>>,
        /// Range end (RFC 3339); default now.
        end: Query<Option<DateTime<Utc>>>,
        /// Shortest stretch without records reported as empty, in seconds: 60 to 2592000
        /// (default 3600).
        #[oai(
            name = "gapSecs",
            validator(minimum(value = "60"), maximum(value = "2592000"))
        )]
        gap_secs: Query<Option<u64>>,
    ) -> CoverageResponse {
        let result = async {
            let store = self.workflows.store();
            let connection = caller.connection(store, &id, CONNECTION_ROLES).await?;
            let now = store.clock().now();
            let end = end.0.unwrap_or(now);
            let start = start.0.unwrap_or(end - TimeDelta::days(DEFAULT_DAYS));
            let range = checked_range(start, end, now)?;
            let gap = Duration::from_secs(gap_secs.0.unwrap_or(3600));
            Ok::<_, Problem>(store.coverage(&connection, range, gap).await?)
        };
        match result.await {
            Ok(coverage) => CoverageResponse::Ok(Json(coverage.into())),
            Err(problem) => problem.into(),
        }
    }
}
