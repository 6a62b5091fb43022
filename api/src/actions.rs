//! What operators can do to workflows (docs/actions.md#actions): replay a connection's
//! current step, pause and resume a connection, a partner or everything, move a connection to
//! failed, clear its error; and list the pauses in force. `ops` only. Every action takes a body
//! `{"reason": "…"}` (checked: 422 `invalid_reason`), is journaled with the caller as actor, and
//! is idempotent: asked again it answers `changed: false` and writes nothing.

pub(crate) mod json;

use engine::{
    ids::PartnerName,
    store::{ConnectionAction, PauseScope, Reason, Store},
};
use poem::http::StatusCode;
use poem_openapi::{OpenApi, param::Path, payload::Json};
use workflows::Workflows;

use self::json::{ActedJson, PausedJson, PausesJson, ReasonJson, ReplayJson, ResumedJson};
use crate::{
    ApiTags,
    params::ConnectionIdParam,
    problem::{Problem, endpoint_response},
    security::{BearerAuth, Caller, OPS_ROLES},
};

fn reason(body: &ReasonJson) -> Result<Reason, Problem> {
    checked_reason(&body.reason.0)
}

/// An operator's reason, checked (422 `invalid_reason`).
pub(crate) fn checked_reason(text: &str) -> Result<Reason, Problem> {
    Reason::parse(text).map_err(|err| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_reason",
            err.to_string(),
        )
    })
}

fn unknown_partner(name: &str) -> Problem {
    let shown: String = name.chars().take(40).collect();
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_partner",
        format!("partner `{shown}` is not configured"),
    )
}

endpoint_response! {
    pub enum ActionResponse {
        /// Done, or already so (`changed: false`).
        Ok(Json<ActedJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` acts on workflows (`forbidden`).
        Forbidden = 403,
        /// No such connection (`not_found`).
        NotFound = 404,
        /// A step in flight would race the action (`step_in_flight`), the state does not allow
        /// it (`invalid_transition`), or the connection kept changing (`conflict`).
        Conflict = 409,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
        /// The body is not `application/json` (`unsupported_media_type`).
        UnsupportedMediaType = 415,
        /// The reason is empty, too long, or looks like it holds a secret (`invalid_reason`).
        InvalidReason = 422,
    }
}

endpoint_response! {
    pub enum ReplayResponse {
        /// The step is due now (or already was: `changed: false`).
        Ok(Json<ReplayJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` replays (`forbidden`).
        Forbidden = 403,
        /// No such connection (`not_found`).
        NotFound = 404,
        /// No step to run again (`nothing_to_replay`), the step runs right now
        /// (`step_in_flight`), transfers are paused (`paused`), or the connection kept changing
        /// (`conflict`).
        Conflict = 409,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
        /// The body is not `application/json` (`unsupported_media_type`).
        UnsupportedMediaType = 415,
        /// The reason is empty, too long, or looks like it holds a secret (`invalid_reason`).
        InvalidReason = 422,
    }
}

endpoint_response! {
    pub enum PauseResponse {
        /// Paused, or already paused (`changed: false`, the pause in force).
        Ok(Json<PausedJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` pauses (`forbidden`).
        Forbidden = 403,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
        /// The body is not `application/json` (`unsupported_media_type`).
        UnsupportedMediaType = 415,
        /// The partner is not configured (`unknown_partner`) or the reason is refused
        /// (`invalid_reason`).
        Unprocessable = 422,
    }
}

endpoint_response! {
    pub enum ResumeResponse {
        /// Resumed, or it was not paused (`changed: false`).
        Ok(Json<ResumedJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` resumes (`forbidden`).
        Forbidden = 403,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
        /// The body is not `application/json` (`unsupported_media_type`).
        UnsupportedMediaType = 415,
        /// Not a partner name (`unknown_partner`) or the reason is refused
        /// (`invalid_reason`).
        Unprocessable = 422,
    }
}

endpoint_response! {
    pub enum PausesResponse {
        /// The pauses in force.
        Ok(Json<PausesJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` sees pauses (`forbidden`).
        Forbidden = 403,
    }
}

pub struct ActionsApi {
    pub workflows: Workflows,
}

impl ActionsApi {
    fn store(&self) -> &Store {
        self.workflows.store()
    }

    /// The connection named by the path (role checked first) and the checked reason.
    async fn target(
        &self,
        caller: &Caller,
        id: &str,
        body: &ReasonJson,
    ) -> Result<(engine::ids::ConnectionId, Reason), Problem> {
        let connection = caller.connection(self.store(), id, OPS_ROLES).await?;
        Ok((connection.id, reason(body)?))
    }

    /// One of the connection actions that take only a reason, answered.
    async fn act(
        &self,
        caller: &Caller,
        id: &str,
        body: &ReasonJson,
        action: ConnectionAction,
    ) -> ActionResponse {
        let result = async {
            let (id, reason) = self.target(caller, id, body).await?;
            Ok::<_, Problem>(
                self.store()
                    .act_on(action, id, &caller.actor(), &reason)
                    .await?,
            )
        };
        match result.await {
            Ok(acted) => ActionResponse::Ok(Json(acted.into())),
            Err(problem) => problem.into(),
        }
    }

    async fn pause_scope(
        &self,
        caller: &Caller,
        scope: PauseScope,
        body: &ReasonJson,
    ) -> Result<PausedJson, Problem> {
        let reason = reason(body)?;
        let (pause, changed) = self.store().pause(&scope, &caller.actor(), &reason).await?;
        Ok(PausedJson {
            changed,
            pause: pause.into(),
        })
    }

    async fn resume_scope(
        &self,
        caller: &Caller,
        scope: PauseScope,
        body: &ReasonJson,
    ) -> Result<ResumedJson, Problem> {
        let reason = reason(body)?;
        let spread = self.workflows.settings().resume_spread;
        Ok(self
            .store()
            .resume(&scope, &caller.actor(), &reason, spread)
            .await?
            .into())
    }

    /// The partner of a `/ops/partners/{partner}/…` path (role checked first); pausing needs
    /// it configured, resuming only a partner name (a partner removed from the configuration
    /// can still be resumed).
    fn partner(
        &self,
        caller: &Caller,
        raw: &str,
        configured: bool,
    ) -> Result<PartnerName, Problem> {
        caller.require(OPS_ROLES)?;
        let name = PartnerName::parse(raw).map_err(|_| unknown_partner(raw))?;
        if configured && self.workflows.partners().get(name.as_str()).is_none() {
            return Err(unknown_partner(raw));
        }
        Ok(name)
    }
}

#[OpenApi(prefix_path = "/v1/ops", tag = "ApiTags::Operations")]
impl ActionsApi {
    /// Run the connection's current step now from its persisted state: an `active`
    /// connection's transfer (clearing an expired lease left behind), a refresh left stuck in
    /// `refreshing`, or a partner revocation a `revoked` or `failed` connection still owes
    /// (docs/actions.md#actions).
    #[oai(
        path = "/connections/:id/replay",
        method = "post",
        operation_id = "replayConnection"
    )]
    async fn replay(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
        body: Json<ReasonJson>,
    ) -> ReplayResponse {
        let result = async {
            let (id, reason) = self.target(&caller, &id, &body).await?;
            let settings = self.workflows.settings().actions();
            Ok::<_, Problem>(
                self.store()
                    .replay(id, &caller.actor(), &reason, &settings)
                    .await?,
            )
        };
        match result.await {
            Ok(replay) => ReplayResponse::Ok(Json(replay.into())),
            Err(problem) => problem.into(),
        }
    }

    /// Pause an `active` connection: it is neither transferred nor refreshed until resumed;
    /// a transfer running for it stops at its next write.
    #[oai(
        path = "/connections/:id/pause",
        method = "post",
        operation_id = "pauseConnection"
    )]
    async fn pause_connection(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
        body: Json<ReasonJson>,
    ) -> ActionResponse {
        self.act(&caller, &id, &body, ConnectionAction::Pause).await
    }

    /// Resume a paused connection; its overdue work is claimed at the next pass.
    #[oai(
        path = "/connections/:id/resume",
        method = "post",
        operation_id = "resumeConnection"
    )]
    async fn resume_connection(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
        body: Json<ReasonJson>,
    ) -> ActionResponse {
        self.act(&caller, &id, &body, ConnectionAction::Resume)
            .await
    }

    /// Move an `active` connection to `failed`, as a spent failure budget does: tokens
    /// dropped, a partner-side revocation owed, the patient notified.
    #[oai(
        path = "/connections/:id/fail",
        method = "post",
        operation_id = "failConnection"
    )]
    async fn fail(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
        body: Json<ReasonJson>,
    ) -> ActionResponse {
        self.act(&caller, &id, &body, ConnectionAction::Fail).await
    }

    /// Clear the connection's last error and its transfer failure streak.
    #[oai(
        path = "/connections/:id/clear-error",
        method = "post",
        operation_id = "clearConnectionError"
    )]
    async fn clear_error(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Connection id (UUID).
        id: Path<ConnectionIdParam>,
        body: Json<ReasonJson>,
    ) -> ActionResponse {
        self.act(&caller, &id, &body, ConnectionAction::ClearError)
            .await
    }

    /// Pause every connection of a partner: none is claimed for a transfer or a refresh
    /// until the partner is resumed. Steps already claimed finish.
    #[oai(
        path = "/partners/:partner/pause",
        method = "post",
        operation_id = "pausePartner"
    )]
    async fn pause_partner(
        &self,
        BearerAuth(caller): BearerAuth,
        /// A configured partner's name.
        partner: Path<String>,
        body: Json<ReasonJson>,
    ) -> PauseResponse {
        let result = async {
            let partner = self.partner(&caller, &partner, true)?;
            self.pause_scope(&caller, PauseScope::Partner(partner), &body)
                .await
        };
        match result.await {
            Ok(paused) => PauseResponse::Ok(Json(paused)),
            Err(problem) => problem.into(),
        }
    }

    /// Resume a partner; its overdue work is spread over the resume window.
    #[oai(
        path = "/partners/:partner/resume",
        method = "post",
        operation_id = "resumePartner"
    )]
    async fn resume_partner(
        &self,
        BearerAuth(caller): BearerAuth,
        /// A partner's name.
        partner: Path<String>,
        body: Json<ReasonJson>,
    ) -> ResumeResponse {
        let result = async {
            let partner = self.partner(&caller, &partner, false)?;
            self.resume_scope(&caller, PauseScope::Partner(partner), &body)
                .await
        };
        match result.await {
            Ok(resumed) => ResumeResponse::Ok(Json(resumed)),
            Err(problem) => problem.into(),
        }
    }

    /// Pause everything: no connection is claimed for a transfer or a refresh until resumed.
    #[oai(path = "/pause", method = "post", operation_id = "pauseEverything")]
    async fn pause_all(
        &self,
        BearerAuth(caller): BearerAuth,
        body: Json<ReasonJson>,
    ) -> PauseResponse {
        let result = async {
            caller.require(OPS_ROLES)?;
            self.pause_scope(&caller, PauseScope::All, &body).await
        };
        match result.await {
            Ok(paused) => PauseResponse::Ok(Json(paused)),
            Err(problem) => problem.into(),
        }
    }

    /// Resume everything; overdue work is spread over the resume window.
    #[oai(path = "/resume", method = "post", operation_id = "resumeEverything")]
    async fn resume_all(
        &self,
        BearerAuth(caller): BearerAuth,
        body: Json<ReasonJson>,
    ) -> ResumeResponse {
        let result = async {
            caller.require(OPS_ROLES)?;
            self.resume_scope(&caller, PauseScope::All, &body).await
        };
        match result.await {
            Ok(resumed) => ResumeResponse::Ok(Json(resumed)),
            Err(problem) => problem.into(),
        }
    }

    /// The pauses of partners and of everything in force, and how many connections are
    /// paused on their own.
    #[oai(path = "/pauses", method = "get", operation_id = "listPauses")]
    async fn pauses(&self, BearerAuth(caller): BearerAuth) -> PausesResponse {
        let result = async {
            caller.require(OPS_ROLES)?;
            let store = self.store();
            Ok::<_, Problem>(PausesJson {
                pauses: store.pauses().await?.into_iter().map(Into::into).collect(),
                paused_connections: store.paused_connections().await?,
            })
        };
        match result.await {
            Ok(pauses) => PausesResponse::Ok(Json(pauses)),
            Err(problem) => problem.into(),
        }
    }
}
