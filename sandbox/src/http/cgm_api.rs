//! Dexcom-v3-shaped data API: `GET /cgm/v3/users/self/{kind}`.
//!
//! Strict like Dexcom: `startDate`/`endDate` exactly `YYYY-MM-DDThh:mm:ss` (UTC, no zone), the
//! end after the start, at most 30 days apart; anything else is a 400.

use chrono::{DateTime, Duration as TimeDelta, NaiveDateTime, Utc};
use poem::{
    Request, Response,
    http::{HeaderValue, StatusCode, header},
};
use serde::Serialize;
use serde_json::json;

use super::{Params, error_json, json};
use crate::{Flavor, Sandbox, data, oauth::Principal};

/// Largest window a list request may span.
pub(crate) const MAX_WINDOW: TimeDelta = TimeDelta::days(30);

pub(crate) async fn handle(sb: Sandbox, req: Request) -> Response {
    let Some(principal) = bearer(&sb, Flavor::Cgm, &req) else {
        return unauthorized();
    };
    let kind = req.raw_path_param("kind").unwrap_or_default().to_owned();
    let params = Params::query(&req);
    if let Some(name) = params.first_repeated() {
        return bad_request(&format!("Parameter {name} is repeated."));
    }
    let ctx = sb.data_context();
    let now = sb.now();
    let user = principal.user.as_str();
    if kind == "dataRange" {
        let last_sync = match params.get("lastSyncTime").map(DateTime::parse_from_rfc3339) {
            None => None,
            Some(Ok(t)) => Some(t.with_timezone(&Utc)),
            Some(Err(_)) => return bad_request("lastSyncTime must be RFC 3339."),
        };
        return json(
            StatusCode::OK,
            &data::data_range(&ctx, user, now, last_sync),
        );
    }
    let (start, end) = match window(&params) {
        Ok(w) => w,
        Err(msg) => return bad_request(msg),
    };
    match kind.as_str() {
        "egvs" => wrap("egv", user, data::egvs(&ctx, user, start, end, now)),
        "calibrations" => wrap(
            "calibration",
            user,
            data::calibrations(&ctx, user, start, end, now),
        ),
        "events" => wrap("event", user, data::events(&ctx, user, start, end, now)),
        "alerts" => wrap("alert", user, data::alerts(&ctx, user, start, end, now)),
        "devices" => wrap("device", user, data::devices(&ctx, user, now)),
        _ => error_json(StatusCode::NOT_FOUND, "not_found", "Unknown record type."),
    }
}

/// `{"recordType", "recordVersion": "3.0", "userId", "records"}`.
fn wrap<T: Serialize>(record_type: &str, user: &str, records: Vec<T>) -> Response {
    let body = json!({
        "recordType": record_type,
        "recordVersion": "3.0",
        "userId": data::user_id(user),
        "records": records,
    });
    json(StatusCode::OK, &body)
}

fn window(params: &Params) -> Result<(DateTime<Utc>, DateTime<Utc>), &'static str> {
    let (Some(start), Some(end)) = (params.get("startDate"), params.get("endDate")) else {
        return Err("startDate and endDate are required.");
    };
    let (Some(start), Some(end)) = (parse_dexcom_time(start), parse_dexcom_time(end)) else {
        return Err("Dates must look like 2022-02-06T09:12:35 (UTC, no zone).");
    };
    if end <= start {
        return Err("endDate must be after startDate.");
    }
    if end - start > MAX_WINDOW {
        return Err("The window may span at most 30 days.");
    }
    Ok((start, end))
}

/// Exactly `YYYY-MM-DDThh:mm:ss`: no zone, no fraction, no missing seconds.
pub(crate) fn parse_dexcom_time(s: &str) -> Option<DateTime<Utc>> {
    let shape = s.len() == 19
        && s.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        });
    if !shape {
        return None;
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
}

fn bad_request(msg: &str) -> Response {
    error_json(StatusCode::BAD_REQUEST, "invalid_request", msg)
}

/// Checks `Authorization: Bearer …` against live access tokens of `flavor`; counts the request.
/// `None` means answer [`unauthorized`].
pub(crate) fn bearer(sb: &Sandbox, flavor: Flavor, req: &Request) -> Option<Principal> {
    let token = req
        .header(header::AUTHORIZATION.as_str())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let now = sb.now();
    let mut store = sb.store();
    store.stats.of_mut(flavor).data_requests += 1;
    token.and_then(|t| store.authenticate(flavor, &t, now))
}

/// 401 `invalid_token` (RFC 6750 §3.1) for missing, unknown, expired or revoked tokens alike.
pub(crate) fn unauthorized() -> Response {
    let mut resp = error_json(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "The access token is missing, expired or revoked.",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_dexcom_format_parses() {
        assert!(parse_dexcom_time("2022-02-06T09:12:35").is_some());
        for bad in [
            "2022-02-06T09:12:35Z",
            "2022-02-06T09:12",
            "2022-02-06 09:12:35",
            "2022-02-06T09:12:35.000",
            "2022-2-06T09:12:35",
            "2022-02-30T09:12:35",
            "2022-02-06T09:12:35+00:00",
        ] {
            assert!(parse_dexcom_time(bad).is_none(), "{bad}");
        }
    }
}
