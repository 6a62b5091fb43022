//! Pump data API: `GET /pump/v1/users/self/{basal,bolus}?start&end&cursor&limit`.
//!
//! `start`/`end` are RFC 3339, `[start, end)`, at most 30 days apart; `limit` 1–500 (default
//! 100). Answers `{"records": […], "nextCursor": "…" | null}` in (`time`, `id`) order.

use chrono::{DateTime, Utc};
use poem::{Request, Response, http::StatusCode};
use serde::Serialize;
use serde_json::json;

use super::{
    Params,
    cgm_api::{MAX_WINDOW, bearer, unauthorized},
    cursor::{Cursor, Query},
    error_json, json,
};
use crate::{
    Flavor, PUMP_READ_SCOPE, Sandbox,
    data::{self, PumpRecord},
};

/// Page size when `limit` is absent.
pub(crate) const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` accepted.
pub(crate) const MAX_LIMIT: usize = 500;

pub(crate) async fn handle(sb: Sandbox, req: Request) -> Response {
    let Some(principal) = bearer(&sb, Flavor::Pump, &req) else {
        return unauthorized();
    };
    if !principal.scope.split(' ').any(|s| s == PUMP_READ_SCOPE) {
        return error_json(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "The token lacks pump.read.",
        );
    }
    let kind = req.raw_path_param("kind").unwrap_or_default().to_owned();
    if kind != "basal" && kind != "bolus" {
        return error_json(StatusCode::NOT_FOUND, "not_found", "Unknown record type.");
    }
    let params = Params::query(&req);
    let request = match parse(&params) {
        Ok(r) => r,
        Err(msg) => return error_json(StatusCode::BAD_REQUEST, "invalid_request", msg),
    };
    let user = principal.user.as_str();
    let query = Query {
        kind: &kind,
        user,
        start: request.start,
        end: request.end,
    };
    let cursor = match request.cursor.map(|raw| Cursor::decode(raw, &query)) {
        None => None,
        Some(Some(c)) => Some(c),
        Some(None) => {
            return error_json(
                StatusCode::BAD_REQUEST,
                "invalid_cursor",
                "The cursor is invalid for this query.",
            );
        }
    };
    let as_of = match &cursor {
        Some(c) => match c.as_of() {
            Some(t) => t,
            None => {
                return error_json(
                    StatusCode::BAD_REQUEST,
                    "invalid_cursor",
                    "The cursor is invalid.",
                );
            }
        },
        None => sb.now(),
    };
    let ctx = sb.data_context();
    let after = cursor.as_ref().map(Cursor::after);
    let (start, end, limit) = (request.start, request.end, request.limit);
    match kind.as_str() {
        "basal" => respond(
            &query,
            as_of,
            &data::basal(&ctx, user, start, end, as_of),
            after,
            limit,
        ),
        _ => respond(
            &query,
            as_of,
            &data::bolus(&ctx, user, start, end, as_of),
            after,
            limit,
        ),
    }
}

fn respond<T: PumpRecord + Serialize>(
    query: &Query<'_>,
    as_of: DateTime<Utc>,
    all: &[T],
    after: Option<(&str, &str)>,
    limit: usize,
) -> Response {
    let (records, next) = data::page(all, after, limit);
    let next = next.map(|key| Cursor::new(query, as_of, key).encode());
    json(
        StatusCode::OK,
        &json!({ "records": records, "nextCursor": next }),
    )
}

struct PageRequest<'a> {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    limit: usize,
    cursor: Option<&'a str>,
}

fn parse(params: &Params) -> Result<PageRequest<'_>, &'static str> {
    if params.first_repeated().is_some() {
        return Err("A parameter is repeated.");
    }
    let time = |name| {
        params
            .get(name)
            .map(|v| DateTime::parse_from_rfc3339(v).map(|t| t.with_timezone(&Utc)))
    };
    let (Some(start), Some(end)) = (time("start"), time("end")) else {
        return Err("start and end are required.");
    };
    let (Ok(start), Ok(end)) = (start, end) else {
        return Err("start and end must be RFC 3339 date-times.");
    };
    if end <= start {
        return Err("end must be after start.");
    }
    if end - start > MAX_WINDOW {
        return Err("The window may span at most 30 days.");
    }
    let limit = match params.get("limit").map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return Err("limit must be an integer from 1 to 500."),
    };
    Ok(PageRequest {
        start,
        end,
        limit,
        cursor: params.get("cursor"),
    })
}
