//! Connections: create (or reconnect), read, restart authorization, disconnect, sync now,
//! journal.
//! Roles `user` (own connections only), `service` and `ops`; see [`crate::security`].

use engine::ids::PartnerName;
use poem::http::StatusCode;
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};
use workflows::{WorkflowError, Workflows};

use crate::{
    ApiTags,
    models::{AuthorizationJson, ConnectionJson, EventJson, StrictString},
    params::{ConnectionIdParam, UserIdParam},
    problem::{Problem, ProblemJson, endpoint_response},
    security::{BearerAuth, CONNECTION_ROLES},
};

/// Which partner to connect to.
#[derive(Debug, Clone, Object)]
#[oai(
    rename = "NewConnection",
    rename_all = "camelCase",
    deny_unknown_fields
)]
pub struct NewConnectionJson {
    /// A configured partner's name (see `GET /v1/partners`), e.g. `sandbox-cgm`.
    pub partner: StrictString,
}

endpoint_response! {
    pub enum CreateConnectionResponse {
        /// A new connection, in `authorizing`; send the browser to `authorizeUrl`.
        Created(Json<AuthorizationJson>) = 201,
        /// The user's existing connection to this partner was reused (a reconnect after
        /// `revoked`/`failed`, or a restarted authorization); earlier authorize URLs stop
        /// working.
        Reused(Json<AuthorizationJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not manage connections, or a user named another user (`forbidden`).
        Forbidden = 403,
        /// The connection to this partner is active (`already_active`) or changed
        /// concurrently (`conflict`).
        Conflict = 409,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
        /// The body is not `application/json` (`unsupported_media_type`).
        UnsupportedMediaType = 415,
        /// The partner is not configured (`unknown_partner`).
        UnknownPartner = 422,
    }
}

endpoint_response! {
    pub enum ListConnectionsResponse {
        /// The user's connections, oldest first (at most one per partner).
        Ok(Json<Vec<ConnectionJson>>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not manage connections, or a user named another user (`forbidden`).
        Forbidden = 403,
    }
}

endpoint_response! {
    pub enum ConnectionResponse {
        /// The connection.
        Ok(Json<ConnectionJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not manage connections (`forbidden`).
        Forbidden = 403,
        /// No such connection, or not the caller's (`not_found`).
        NotFound = 404,
    }
}

endpoint_response! {
    pub enum AuthorizeResponse {
        /// The connection, in `authorizing`, with a fresh authorize URL; earlier ones stop
        /// working.
        Ok(Json<AuthorizationJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not manage connections (`forbidden`).
        Forbidden = 403,
        /// No such connection, or not the caller's (`not_found`).
        NotFound = 404,
        /// The connection is active (`already_active`), its state does not allow it
        /// (`invalid_transition`), or it changed concurrently (`conflict`).
        Conflict = 409,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
        /// The connection's partner is no longer configured (`unknown_partner`).
        UnknownPartner = 422,
    }
}

endpoint_response! {
    pub enum DisconnectResponse {
        /// The connection, now `revoked`: tokens are gone and the grant is being revoked at
        /// the partner.
        Ok(Json<ConnectionJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not manage connections (`forbidden`).
        Forbidden = 403,
        /// No such connection, or not the caller's (`not_found`).
        NotFound = 404,
        /// Already `revoked` or `failed` (`invalid_transition`), or changed concurrently
        /// (`conflict`).
        Conflict = 409,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
    }
}

endpoint_response! {
    pub enum EventsResponse {
        /// The connection's journal, oldest first.
        Ok(Json<Vec<EventJson>>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not manage connections (`forbidden`).
        Forbidden = 403,
        /// No such connection, or not the caller's (`not_found`).
        NotFound = 404,
    }
}

endpoint_response! {
    pub enum SyncResponse {
        /// The transfer is due now (`nextSyncAt`); a worker picks it up within moments.
        Accepted(Json<ConnectionJson>) = 202,
        /// A sync was already requested within the minimum interval (`sync_rate_limited`);
        /// `Retry-After` says in how many seconds another may be.
        RateLimited(ProblemJson, #[oai(header = "Retry-After")] u64) = 429,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not manage connections (`forbidden`).
        Forbidden = 403,
        /// No such connection, or not the caller's (`not_found`).
        NotFound = 404,
        /// Only active connections transfer data (`invalid_transition`).
        Conflict = 409,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
    }
}

pub struct ConnectionsApi {
    pub workflows: Workflows,
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Connections")]
impl ConnectionsApi {
    /// Connect a user to a partner (or reconnect). Answers the URL of the partner's consent
    /// page; the partner sends the browser back to `/v1/oauth/{partner}/callback`.
    #[oai(
        path = "/users/:userId/connections",
        method = "post",
        operation_id = "createConnection"
    )]
    async fn create(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Tidepool user id.
        #[oai(name = "userId")]
        user_id: Path<UserIdParam>,
        body: Json<NewConnectionJson>,
    ) -> CreateConnectionResponse {
        let result = async {
            let user = caller.user_path(&user_id)?;
            // A name that cannot even be a partner's is just another unconfigured partner.
            let partner = PartnerName::parse(&body.partner.0)
                .map_err(|_| WorkflowError::UnknownPartner(body.partner.0.clone()))?;
            Ok::<_, Problem>(
                self.workflows
                    .connect(&user, &partner, caller.actor())
                    .await?,
            )
        };
        match result.await {
            Ok(authorization) if authorization.created => {
                CreateConnectionResponse::Created(Json(authorization.into()))
            }
            Ok(authorization) => CreateConnectionResponse::Reused(Json(authorization.into())),
            Err(problem) => problem.into(),
        }
    }

    /// A user's connections.
    #[oai(
        path = "/users/:userId/connections",
        method = "get",
        operation_id = "listConnections"
    )]
    async fn list(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Tidepool user id.
        #[oai(name = "userId")]
        user_id: Path<UserIdParam>,
    ) -> ListConnectionsResponse {
        let result = async {
            let user = caller.user_path(&user_id)?;
            Ok::<_, Problem>(self.workflows.store().list_for_user(&user).await?)
        };
        match result.await {
            Ok(list) => {
                ListConnectionsResponse::Ok(Json(list.into_iter().map(Into::into).collect()))
            }
            Err(problem) => problem.into(),
        }
    }

    /// One connection.
    #[oai(
        path = "/connections/:id",
        method = "get",
        operation_id = "getConnection"
    )]
    async fn get(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
    ) -> ConnectionResponse {
        match caller
            .connection(self.workflows.store(), &id, CONNECTION_ROLES)
            .await
        {
            Ok(connection) => ConnectionResponse::Ok(Json(connection.into())),
            Err(problem) => problem.into(),
        }
    }

    /// Restart the authorization of a connection (the user abandoned the consent page, or it
    /// was interrupted): a fresh authorize URL.
    #[oai(
        path = "/connections/:id/authorize",
        method = "post",
        operation_id = "authorizeConnection"
    )]
    async fn authorize(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
    ) -> AuthorizeResponse {
        let result = async {
            let connection = caller
                .connection(self.workflows.store(), &id, CONNECTION_ROLES)
                .await?;
            Ok::<_, Problem>(
                self.workflows
                    .authorize(connection.id, caller.actor())
                    .await?,
            )
        };
        match result.await {
            Ok(authorization) => AuthorizeResponse::Ok(Json(authorization.into())),
            Err(problem) => problem.into(),
        }
    }

    /// Disconnect: tokens are discarded at once and the grant is revoked at the partner in
    /// the background. The connection (and its data cursor) remains for a later reconnect.
    #[oai(
        path = "/connections/:id/disconnect",
        method = "post",
        operation_id = "disconnectConnection"
    )]
    async fn disconnect(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
    ) -> DisconnectResponse {
        let result = async {
            let connection = caller
                .connection(self.workflows.store(), &id, CONNECTION_ROLES)
                .await?;
            Ok::<_, Problem>(
                self.workflows
                    .disconnect(connection.id, caller.actor())
                    .await?,
            )
        };
        match result.await {
            Ok(connection) => DisconnectResponse::Ok(Json(connection.into())),
            Err(problem) => problem.into(),
        }
    }

    /// Ask for a transfer now instead of at the next scheduled time. At most one request per
    /// connection per interval (a minute by default).
    #[oai(
        path = "/connections/:id/sync",
        method = "post",
        operation_id = "syncConnection"
    )]
    async fn sync(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
    ) -> SyncResponse {
        let store = self.workflows.store();
        let result = async {
            let connection = caller.connection(store, &id, CONNECTION_ROLES).await?;
            self.workflows
                .request_sync(connection.id)
                .await
                .map_err(Problem::from)
        };
        match result.await {
            Ok(Ok(connection)) => SyncResponse::Accepted(Json(connection.into())),
            Ok(Err(retry_at)) => {
                let millis = (retry_at - store.clock().now()).num_milliseconds();
                // Whole seconds, rounded up, and never 0 (0 would invite an immediate retry).
                let seconds = u64::try_from(millis).unwrap_or(0).div_ceil(1000).max(1);
                let problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "sync_rate_limited",
                    format!("a sync was requested recently; retry in {seconds} s"),
                );
                SyncResponse::RateLimited(ProblemJson(problem), seconds)
            }
            Err(problem) => problem.into(),
        }
    }

    /// The connection's journal: every transition, who caused it and why.
    #[oai(
        path = "/connections/:id/events",
        method = "get",
        operation_id = "listConnectionEvents"
    )]
    async fn events(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
    ) -> EventsResponse {
        let result = async {
            let connection = caller
                .connection(self.workflows.store(), &id, CONNECTION_ROLES)
                .await?;
            Ok::<_, Problem>(self.workflows.store().journal(connection.id).await?)
        };
        match result.await {
            Ok(entries) => EventsResponse::Ok(Json(entries.into_iter().map(Into::into).collect())),
            Err(problem) => problem.into(),
        }
    }
}
