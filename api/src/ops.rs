//! Operator endpoints: force a refresh, recent alerts, partner-side revocations.
//! `ops` everywhere; `service` may also refresh and read revocations; nobody else.

use poem_openapi::{
    Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use workflows::{RefreshOutcome, Workflows};

use crate::{
    ApiTags,
    models::{AlertJson, ConnectionJson, Nullable, RevocationJson},
    params::ConnectionIdParam,
    problem::{Problem, endpoint_response},
    security::{BearerAuth, OPS_ROLES, REPAIR_ROLES},
};

/// How many alerts `GET /v1/ops/alerts` returns when no `limit` is given.
const DEFAULT_ALERT_LIMIT: u64 = 100;

/// What a forced refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "RefreshOutcome", rename_all = "snake_case")]
pub enum RefreshOutcomeJson {
    /// New tokens stored; `active`.
    Refreshed,
    /// The connection is not `active`: nothing to refresh.
    NotNeeded,
    /// Another worker is refreshing it right now.
    Busy,
    /// A temporary failure or a configuration fault: tokens kept, retried later (see `code`).
    Deferred,
    /// The partner says the grant is gone (`invalid_grant`): `revoked`.
    Revoked,
}

/// The result of a forced refresh.
#[derive(Debug, Clone, Object)]
#[oai(rename = "RefreshResult", rename_all = "camelCase")]
pub struct RefreshJson {
    pub outcome: RefreshOutcomeJson,
    /// Why it was deferred (`partner_unavailable`, `partner_configuration`, …); `null` otherwise.
    pub code: Nullable<String>,
    /// The connection afterwards; `null` when `busy`.
    pub connection: Nullable<ConnectionJson>,
}

impl From<RefreshOutcome> for RefreshJson {
    fn from(outcome: RefreshOutcome) -> Self {
        let (outcome, code, connection) = match outcome {
            RefreshOutcome::Refreshed { connection } => {
                (RefreshOutcomeJson::Refreshed, None, Some(connection))
            }
            RefreshOutcome::NotNeeded { connection } => {
                (RefreshOutcomeJson::NotNeeded, None, Some(connection))
            }
            RefreshOutcome::Busy => (RefreshOutcomeJson::Busy, None, None),
            RefreshOutcome::Deferred { connection, code } => {
                (RefreshOutcomeJson::Deferred, Some(code), Some(connection))
            }
            RefreshOutcome::Revoked { connection } => {
                (RefreshOutcomeJson::Revoked, None, Some(connection))
            }
        };
        Self {
            outcome,
            code: code.into(),
            connection: connection.map(Into::into).into(),
        }
    }
}

endpoint_response! {
    pub enum RefreshResponse {
        /// The refresh ran (or was not needed); see `outcome`.
        Ok(Json<RefreshJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` and `service` may force a refresh (`forbidden`).
        Forbidden = 403,
        /// No such connection (`not_found`).
        NotFound = 404,
        /// The connection changed concurrently (`conflict`).
        Conflict = 409,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
        /// The connection's partner is no longer configured (`unknown_partner`).
        UnknownPartner = 422,
    }
}

endpoint_response! {
    pub enum AlertsResponse {
        /// The most recent operator alerts, newest first.
        Ok(Json<Vec<AlertJson>>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` sees alerts (`forbidden`).
        Forbidden = 403,
    }
}

endpoint_response! {
    pub enum RevocationsResponse {
        /// The connection's partner-side revocations, oldest first (no tokens).
        Ok(Json<Vec<RevocationJson>>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` and `service` may read revocations (`forbidden`).
        Forbidden = 403,
        /// No such connection (`not_found`).
        NotFound = 404,
    }
}

pub struct OpsApi {
    pub workflows: Workflows,
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Operations")]
impl OpsApi {
    /// Refresh the connection's access token now (an operator's repair tool; workers refresh
    /// on their own ahead of expiry).
    #[oai(
        path = "/connections/:id/refresh",
        method = "post",
        operation_id = "refreshConnection"
    )]
    async fn refresh(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
    ) -> RefreshResponse {
        let result = async {
            let connection = caller
                .connection(self.workflows.store(), &id, REPAIR_ROLES)
                .await?;
            Ok::<_, Problem>(
                self.workflows
                    .refresh(connection.id, caller.actor())
                    .await?,
            )
        };
        match result.await {
            Ok(outcome) => RefreshResponse::Ok(Json(outcome.into())),
            Err(problem) => problem.into(),
        }
    }

    /// Recent operator alerts (partner configuration faults), newest first.
    #[oai(path = "/ops/alerts", method = "get", operation_id = "listAlerts")]
    async fn alerts(
        &self,
        BearerAuth(caller): BearerAuth,
        /// How many alerts to return (1–1000, default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u64>>,
    ) -> AlertsResponse {
        let result = async {
            caller.require(OPS_ROLES)?;
            let limit = limit.0.unwrap_or(DEFAULT_ALERT_LIMIT);
            Ok::<_, Problem>(self.workflows.store().alerts(limit).await?)
        };
        match result.await {
            Ok(alerts) => AlertsResponse::Ok(Json(alerts.into_iter().map(Into::into).collect())),
            Err(problem) => problem.into(),
        }
    }

    /// The connection's partner-side (RFC 7009) revocation attempts.
    #[oai(
        path = "/connections/:id/revocations",
        method = "get",
        operation_id = "listRevocations"
    )]
    async fn revocations(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
    ) -> RevocationsResponse {
        let result = async {
            let connection = caller
                .connection(self.workflows.store(), &id, REPAIR_ROLES)
                .await?;
            let revocations = self.workflows.store().revocations(connection.id).await?;
            Ok::<_, Problem>(
                revocations
                    .into_iter()
                    .map(|r| RevocationJson {
                        id: r.id,
                        connection_id: r.connection_id,
                        partner: r.partner,
                        attempts: r.attempts,
                        next_attempt_at: r.next_attempt_at,
                        last_error: r.last_error.into(),
                        completed_at: r.completed_at.into(),
                        outcome: r.outcome.into(),
                    })
                    .collect::<Vec<_>>(),
            )
        };
        match result.await {
            Ok(list) => RevocationsResponse::Ok(Json(list)),
            Err(problem) => problem.into(),
        }
    }
}
