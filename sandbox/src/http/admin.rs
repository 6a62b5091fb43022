//! Admin API for tests, scripts and demos. No authentication: the sandbox is for development
//! only. Never wrapped by fault injection, so faults can always be inspected and cleared.

use chrono::{DateTime, Utc};
use poem::{Request, Response, http::StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{error_json, json};
use crate::{Faults, Flavor, Sandbox};

/// `GET /`: where everything is, and which clients are registered (secrets omitted).
pub(crate) async fn index(sb: Sandbox, _req: Request) -> Response {
    let clients: Vec<_> = sb
        .config()
        .clients
        .iter()
        .map(|c| {
            json!({
                "flavor": c.flavor, "client_id": c.client_id,
                "redirect_uris": c.redirect_uris, "auth_method": c.auth_method,
            })
        })
        .collect();
    let body = json!({
        "note": "Tributary development sandbox: synthetic data, no admin authentication.",
        "cgm": sb.urls(Flavor::Cgm),
        "pump": sb.urls(Flavor::Pump),
        "clients": clients,
        "auto_consent_user": sb.config().auto_consent_user,
    });
    json(StatusCode::OK, &body)
}

pub(crate) async fn get_faults(sb: Sandbox, _req: Request) -> Response {
    json(StatusCode::OK, &sb.faults().get())
}

/// `PUT /admin/faults`: replaces all settings; omitted fields take their defaults.
pub(crate) async fn put_faults(sb: Sandbox, req: Request) -> Response {
    let body = match faults_body(req).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let faults = serde_json::from_value::<Faults>(body).map_err(|e| e.to_string());
    match faults.and_then(|f| f.check().map(|()| f)) {
        Ok(faults) => {
            sb.faults().set(faults.clone());
            json(StatusCode::OK, &faults)
        }
        Err(e) => error_json(StatusCode::BAD_REQUEST, "invalid_faults", &e),
    }
}

/// `PATCH /admin/faults`: a JSON merge patch (RFC 7396) over the current settings, so
/// `{"token_down": true}` then `{"access_token_ttl_secs": 5}` leaves both set; `null` returns a
/// field to its default.
pub(crate) async fn patch_faults(sb: Sandbox, req: Request) -> Response {
    let patch = match faults_body(req).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    match sb.faults().merge(&patch) {
        Ok(faults) => json(StatusCode::OK, &faults),
        Err(e) => error_json(StatusCode::BAD_REQUEST, "invalid_faults", &e),
    }
}

async fn faults_body(mut req: Request) -> Result<serde_json::Value, Response> {
    let unreadable = || {
        error_json(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Unreadable body.",
        )
    };
    let body = req
        .take_body()
        .into_bytes_limit(64 * 1024)
        .await
        .map_err(|_| unreadable())?;
    serde_json::from_slice(&body)
        .map_err(|e| error_json(StatusCode::BAD_REQUEST, "invalid_faults", &e.to_string()))
}

pub(crate) async fn delete_faults(sb: Sandbox, _req: Request) -> Response {
    sb.faults().clear();
    json(StatusCode::OK, &sb.faults().get())
}

/// `POST /admin/users/{flavor}/{user}/revoke`: partner-side revocation.
pub(crate) async fn revoke_user(sb: Sandbox, req: Request) -> Response {
    let flavor = req.raw_path_param("flavor").and_then(Flavor::parse);
    // The router has already percent-decoded path parameters.
    let user = req.raw_path_param("user").map(str::to_owned);
    let (Some(flavor), Some(user)) = (flavor, user) else {
        return error_json(
            StatusCode::NOT_FOUND,
            "not_found",
            "Use /admin/users/{cgm|pump}/{user}/revoke.",
        );
    };
    let revoked = sb.revoke_user(flavor, &user);
    json(
        StatusCode::OK,
        &json!({ "flavor": flavor, "user": user, "revoked_grants": revoked }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    now: Option<DateTime<Utc>>,
}

fn clock(sb: &Sandbox) -> Response {
    json(
        StatusCode::OK,
        &json!({ "now": sb.now(), "frozen": sb.clock_frozen() }),
    )
}

pub(crate) async fn get_clock(sb: Sandbox, _req: Request) -> Response {
    clock(&sb)
}

/// `PUT /admin/clock` `{"now": "2026-02-01T00:00:00Z"}` freezes the clock; `{"now": null}`
/// returns to system time.
pub(crate) async fn put_clock(sb: Sandbox, mut req: Request) -> Response {
    let body = req
        .take_body()
        .into_bytes_limit(4096)
        .await
        .unwrap_or_default();
    match serde_json::from_slice::<ClockBody>(&body) {
        Ok(ClockBody { now }) => {
            sb.set_now(now);
            clock(&sb)
        }
        Err(e) => error_json(StatusCode::BAD_REQUEST, "invalid_clock", &e.to_string()),
    }
}

pub(crate) async fn stats(sb: Sandbox, _req: Request) -> Response {
    json(StatusCode::OK, &sb.stats())
}
