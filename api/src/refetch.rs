//! `POST /v1/ops/connections/{id}/refetch` (docs/coverage.md#refetch): read a time range of
//! a connection again. With `dryRun: true` the range is fetched from the partner and compared
//! with what is stored (inserted, updated, unchanged, retired, skipped), nothing committed;
//! without, the transfer cursor is rewound to the range's start and the transfer made due now,
//! journaled with the operator and the reason. `ops` only.

use chrono::{DateTime, Utc};
use poem::http::StatusCode;
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};
use workflows::{
    Workflows,
    fetch::{PreviewRefused, RefetchPreview},
};

use crate::{
    ApiTags,
    actions::checked_reason,
    coverage::{SpanJson, checked_range},
    models::{ConnectionJson, Nullable, StrictString},
    params::ConnectionIdParam,
    problem::{Problem, endpoint_response},
    security::{BearerAuth, OPS_ROLES},
};

/// A re-fetch of a range.
#[derive(Debug, Clone, Object)]
#[oai(
    rename = "RefetchRequest",
    rename_all = "camelCase",
    deny_unknown_fields
)]
pub struct RefetchRequest {
    /// Range start (RFC 3339).
    pub start: DateTime<Utc>,
    /// Range end (RFC 3339), after `start`, at most 92 days later, not in the future.
    pub end: DateTime<Utc>,
    /// Why, for the journal (as every action's reason).
    pub reason: StrictString,
    /// Fetch and compare only; commit nothing (`null` or absent: false).
    pub dry_run: Nullable<bool>,
}

/// What committing the range would write.
#[derive(Debug, Clone, Object)]
#[oai(rename = "RefetchPreview", rename_all = "camelCase")]
pub struct PreviewJson {
    /// Windows fetched.
    pub windows: u32,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Stored records the partner now marks deleted.
    pub retired: u64,
    /// Records the partner sent that cannot be stored (unreadable, implausible).
    pub skipped: u64,
}

impl From<RefetchPreview> for PreviewJson {
    fn from(p: RefetchPreview) -> Self {
        Self {
            windows: p.windows,
            inserted: p.counts.inserted,
            updated: p.counts.updated,
            unchanged: p.counts.unchanged,
            retired: p.counts.retired,
            skipped: p.counts.skipped,
        }
    }
}

/// What a re-fetch did, or (dry run) would do.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Refetch", rename_all = "camelCase")]
pub struct RefetchJson {
    pub dry_run: bool,
    pub range: SpanJson,
    /// Dry run: what committing the range would write.
    pub preview: Nullable<PreviewJson>,
    /// `false`: nothing was written (a dry run, or a range not fetched yet anyway).
    pub changed: bool,
    /// The cursor before (not for a dry run).
    pub cursor_was: Nullable<DateTime<Utc>>,
    pub connection: ConnectionJson,
}

endpoint_response! {
    pub enum RefetchResponse {
        /// Rewound (or already to be fetched: `changed: false`), or the dry run's counts.
        Ok(Json<RefetchJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` re-fetches (`forbidden`).
        Forbidden = 403,
        /// No such connection (`not_found`).
        NotFound = 404,
        /// Not active (`not_transferring`), paused (`paused`), a step in flight
        /// (`step_in_flight`), never fetched (`not_fetched_yet`), or kept changing (`conflict`).
        Conflict = 409,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
        /// The body is not `application/json` (`unsupported_media_type`).
        UnsupportedMediaType = 415,
        /// The range (`invalid_range`) or the reason (`invalid_reason`) is refused.
        Unprocessable = 422,
        /// Dry run: the partner answered with an error, or no usable token
        /// (`partner_error`, `no_token`).
        BadGateway = 502,
    }
}

fn refused(r: PreviewRefused) -> Problem {
    match r {
        PreviewRefused::NotTransferring(state) => Problem::new(
            StatusCode::CONFLICT,
            "not_transferring",
            format!("only an active connection transfers data; this one is {state}"),
        ),
        PreviewRefused::Paused => Problem::new(
            StatusCode::CONFLICT,
            "paused",
            "the connection's transfers are paused (the connection, its partner or \
             everything); resume first",
        ),
        PreviewRefused::NoToken(code) => Problem::new(
            StatusCode::BAD_GATEWAY,
            "no_token",
            format!("no usable access token: the refresh failed ({code})"),
        ),
        PreviewRefused::Partner(message) => {
            Problem::new(StatusCode::BAD_GATEWAY, "partner_error", message)
        }
    }
}

pub struct RefetchApi {
    pub workflows: Workflows,
}

#[OpenApi(prefix_path = "/v1/ops", tag = "ApiTags::Operations")]
impl RefetchApi {
    /// Read a time range of the connection again: the cursor is rewound to its start and the
    /// transfer made due now (storage is idempotent). `dryRun: true` fetches the range and
    /// reports what it would insert, update, leave unchanged or retire, committing nothing.
    #[oai(
        path = "/connections/:id/refetch",
        method = "post",
        operation_id = "refetchConnection"
    )]
    async fn refetch(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
        body: Json<RefetchRequest>,
    ) -> RefetchResponse {
        let result = async {
            let store = self.workflows.store();
            let connection = caller.connection(store, &id, OPS_ROLES).await?;
            let range = checked_range(body.start, body.end, store.clock().now())?;
            let why = checked_reason(&body.reason.0)?;
            if body.dry_run.0 == Some(true) {
                let preview = self
                    .workflows
                    .refetch_preview(&connection, range, &caller.actor())
                    .await?
                    .map_err(refused)?;
                return Ok::<_, Problem>(RefetchJson {
                    dry_run: true,
                    range: range.into(),
                    preview: Some(PreviewJson::from(preview)).into(),
                    changed: false,
                    cursor_was: None.into(),
                    connection: connection.into(),
                });
            }
            let done = store
                .refetch(connection.id, range, &caller.actor(), &why)
                .await?;
            Ok(RefetchJson {
                dry_run: false,
                range: range.into(),
                preview: None.into(),
                changed: done.changed,
                cursor_was: Some(done.cursor_was).into(),
                connection: done.connection.into(),
            })
        };
        match result.await {
            Ok(json) => RefetchResponse::Ok(Json(json)),
            Err(problem) => problem.into(),
        }
    }
}
