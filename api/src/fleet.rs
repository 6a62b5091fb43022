//! What operators see of the fleet (docs/operations.md#stuck): `GET /v1/ops/connections`, the
//! connections matching filters with their stuck reasons, keyset-paged by id; `GET
//! /v1/ops/summary`, the fleet in counts. `ops` only; reads only.
//!
//! The cursor is the page's last connection id as base64url (no padding): opaque to clients,
//! not secret, checked strictly (anything else is 400 `invalid_cursor`).

use engine::{
    ids::{ConnectionId, PartnerName, UserId},
    state::State,
    store::{ConnectionFilter, ConnectionPage, MAX_LIST_PAGE, OpsSummary, StuckFilter},
};
use poem_openapi::{OpenApi, param::Query, payload::Json, types::ToJSON};
use workflows::Workflows;

use crate::{
    ApiTags,
    data::base64url,
    fleet_models::{FleetPageJson, StuckReasonJson, SummaryJson},
    models::StateJson,
    problem::{Problem, endpoint_response},
    security::{BearerAuth, OPS_ROLES},
};

/// Connections per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u32 = 100;
/// Longest cursor accepted (a connection id's is 48 characters).
const MAX_CURSOR_LEN: usize = 64;

endpoint_response! {
    pub enum FleetListResponse {
        /// The matching connections, smallest id first, each with its stuck reasons.
        Ok(Json<FleetPageJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` lists the fleet (`forbidden`).
        Forbidden = 403,
    }
}

endpoint_response! {
    pub enum FleetSummaryResponse {
        /// The fleet in counts, as of `at`.
        Ok(Json<SummaryJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` sees the summary (`forbidden`).
        Forbidden = 403,
    }
}

pub struct FleetApi {
    pub workflows: Workflows,
}

// One query parameter per argument is how poem-openapi declares them.
#[allow(clippy::too_many_arguments)]
#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Operations")]
impl FleetApi {
    /// The connections matching every filter given, smallest id first, each with the stuck
    /// reasons that hold for it (docs/operations.md#connection-list). A value that is not one
    /// the parameter documents is 400 `invalid_parameter` (also `reason` with `stuck=false`); a
    /// cursor this list did not return is 400 `invalid_cursor`.
    #[oai(
        path = "/ops/connections",
        method = "get",
        operation_id = "listFleetConnections"
    )]
    async fn list(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Only connections in this state.
        state: Query<Option<StateJson>>,
        /// Only connections to this partner.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9-]{0,31}$"))]
        partner: Query<Option<String>>,
        /// Only connections of this Tidepool user.
        #[oai(validator(pattern = "^[A-Za-z0-9_-]{1,64}$"))]
        user: Query<Option<String>>,
        /// Only paused (`true`) or unpaused (`false`) connections.
        paused: Query<Option<bool>>,
        /// Only connections whose last error has this code (`partner_unavailable`, …).
        #[oai(validator(pattern = "^[A-Za-z0-9_.:-]{1,64}$"))]
        error: Query<Option<String>>,
        /// Only connections stuck for some reason (`true`) or for none (`false`).
        stuck: Query<Option<bool>>,
        /// Only connections stuck for this reason (perhaps others too).
        reason: Query<Option<StuckReasonJson>>,
        /// `nextCursor` of the previous page.
        cursor: Query<Option<String>>,
        /// Connections per page, 1 to 1000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
    ) -> FleetListResponse {
        let result = async {
            caller.require(OPS_ROLES)?;
            let filter = connection_filter(FilterParts {
                state: state.0,
                partner: partner.0.as_deref(),
                user: user.0.as_deref(),
                paused: paused.0,
                error: error.0.as_deref(),
                stuck: stuck.0,
                reason: reason.0,
            })?;
            let after = cursor.0.as_deref().map(decode_cursor).transpose()?;
            let limit = u64::from(limit.0.unwrap_or(DEFAULT_LIMIT)).min(MAX_LIST_PAGE);
            let store = self.workflows.store();
            let settings = self.workflows.settings().stuck();
            let page = store
                .list_connections(&filter, after, limit, store.clock().now(), &settings)
                .await?;
            Ok::<_, Problem>(FleetPageJson::new(page, encode_cursor))
        };
        match result.await {
            Ok(page) => FleetListResponse::Ok(Json(page)),
            Err(problem) => problem.into(),
        }
    }

    /// The fleet in counts: by partner and state, paused, due and overdue, in flight, the
    /// queue, the last hour's runs, errors by code, stuck connections by reason
    /// (docs/operations.md#summary).
    #[oai(path = "/ops/summary", method = "get", operation_id = "fleetSummary")]
    async fn summary(&self, BearerAuth(caller): BearerAuth) -> FleetSummaryResponse {
        let result = async {
            caller.require(OPS_ROLES)?;
            let store = self.workflows.store();
            let settings = self.workflows.settings().stuck();
            Ok::<_, Problem>(store.ops_summary(store.clock().now(), &settings).await?)
        };
        match result.await {
            Ok(summary) => FleetSummaryResponse::Ok(Json(summary.into())),
            Err(problem) => problem.into(),
        }
    }
}

/// The list's filters, as a query or a bulk action's body gives them.
pub(crate) struct FilterParts<'a> {
    pub state: Option<StateJson>,
    pub partner: Option<&'a str>,
    pub user: Option<&'a str>,
    pub paused: Option<bool>,
    pub error: Option<&'a str>,
    pub stuck: Option<bool>,
    pub reason: Option<StuckReasonJson>,
}

/// The engine's filter of the list's filters, checked: a malformed name or error code, or
/// `reason` with `stuck=false`, is 400 `invalid_parameter`. Shared by the list and the bulk
/// actions (docs/actions.md#bulk-actions).
pub(crate) fn connection_filter(parts: FilterParts<'_>) -> Result<ConnectionFilter, Problem> {
    let invalid =
        |e: &dyn std::fmt::Display| Problem::bad_request("invalid_parameter", e.to_string());
    let error = parts
        .error
        .map(|code| {
            let valid = (1..=64).contains(&code.len())
                && code
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"_.:-".contains(&c));
            valid.then(|| code.to_owned()).ok_or_else(|| {
                invalid(&"`error` is not an error code (letters, digits, `_.:-`, 1 to 64)")
            })
        })
        .transpose()?;
    Ok(ConnectionFilter {
        state: parts.state.map(state_of),
        partner: parts
            .partner
            .map(PartnerName::parse)
            .transpose()
            .map_err(|e| invalid(&e))?,
        user: parts
            .user
            .map(UserId::parse)
            .transpose()
            .map_err(|e| invalid(&e))?,
        paused: parts.paused,
        error,
        stuck: StuckFilter::from_parts(parts.stuck, parts.reason.map(Into::into))
            .map_err(|e| invalid(&e))?,
    })
}

fn state_of(s: StateJson) -> State {
    match s {
        StateJson::Invited => State::Invited,
        StateJson::Authorizing => State::Authorizing,
        StateJson::Active => State::Active,
        StateJson::Refreshing => State::Refreshing,
        StateJson::Revoked => State::Revoked,
        StateJson::Failed => State::Failed,
    }
}

/// The cursor of a page ending at `id`.
pub fn encode_cursor(id: &ConnectionId) -> String {
    base64url::encode(id.to_string().as_bytes())
}

/// The connection id a cursor names; 400 `invalid_cursor` for anything this list did not
/// return.
pub fn decode_cursor(raw: &str) -> Result<ConnectionId, Problem> {
    let invalid =
        || Problem::bad_request("invalid_cursor", "`cursor` is not a cursor of this list");
    if raw.len() > MAX_CURSOR_LEN {
        return Err(invalid());
    }
    let bytes = base64url::decode(raw).ok_or_else(invalid)?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let id: ConnectionId = text.parse().map_err(|_| invalid())?;
    // Only the canonical spelling (ours) is a cursor.
    if id.to_string() != text {
        return Err(invalid());
    }
    Ok(id)
}

/// A page as `GET /v1/ops/connections` answers it (the CLI's `--json`).
pub fn page_json(page: ConnectionPage) -> serde_json::Value {
    FleetPageJson::new(page, encode_cursor)
        .to_json()
        .unwrap_or_default()
}

/// The summary as `GET /v1/ops/summary` answers it (the CLI's `--json`).
pub fn summary_json(summary: OpsSummary) -> serde_json::Value {
    SummaryJson::from(summary).to_json().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_anything_else() {
        let id = ConnectionId::new();
        let cursor = encode_cursor(&id);
        assert_eq!(decode_cursor(&cursor).unwrap(), id);
        let upper = base64url::encode(id.to_string().to_uppercase().as_bytes());
        for bad in [
            "",
            "x",
            &format!("{cursor}A"),
            &base64url::encode(b"not-an-id"),
            &upper,
            &"A".repeat(100),
        ] {
            assert_eq!(
                decode_cursor(bad).unwrap_err().code,
                "invalid_cursor",
                "{bad}"
            );
        }
    }
}
