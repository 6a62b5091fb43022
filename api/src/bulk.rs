//! Bulk actions (docs/actions.md#bulk-actions): `POST /v1/ops/bulk/{action}`, one of pause,
//! resume, fail, clear-error and replay on every connection the list's filters match, in two
//! calls. The dry run (`{"filter": {…}, "reason": "…", "dryRun": true}`) stores the matching
//! connections and answers their count, a sample and a confirmation token; the confirmation
//! (`{"confirmationToken": "…"}`, a reason optional) acts on those connections and no others,
//! each through the single action. `ops` only. The token is in the dry run's answer and nowhere
//! else: the server keeps its sha256 and never logs it.

use chrono::{DateTime, Utc};
use engine::store::{
    BulkAction, BulkError, BulkPlan, BulkResult, BulkSettings, ConnectionFilter, Reason,
};
use poem::http::StatusCode;
use poem_openapi::{Enum, Object, OpenApi, Union, param::Path, payload::Json, types::ToJSON};
use workflows::Workflows;

use crate::{
    ApiTags,
    fleet::{FilterParts, connection_filter},
    fleet_models::StuckReasonJson,
    models::{Nullable, StateJson, StrictString},
    problem::{Problem, endpoint_response},
    security::{BearerAuth, Caller, OPS_ROLES},
};

/// The actions that have a bulk form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "BulkAction", rename_all = "kebab-case")]
pub enum BulkActionJson {
    Pause,
    Resume,
    Fail,
    ClearError,
    Replay,
}

impl From<BulkActionJson> for BulkAction {
    fn from(a: BulkActionJson) -> Self {
        match a {
            BulkActionJson::Pause => BulkAction::Pause,
            BulkActionJson::Resume => BulkAction::Resume,
            BulkActionJson::Fail => BulkAction::Fail,
            BulkActionJson::ClearError => BulkAction::ClearError,
            BulkActionJson::Replay => BulkAction::Replay,
        }
    }
}

/// Which connections: the filters of `GET /v1/ops/connections`, each `null` (or absent) when
/// not filtered on; every one given must hold.
#[derive(Debug, Clone, Object)]
#[oai(rename = "BulkFilter", rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkFilterJson {
    pub state: Nullable<StateJson>,
    /// A partner's name.
    pub partner: Nullable<StrictString>,
    /// A Tidepool user id.
    pub user: Nullable<StrictString>,
    pub paused: Nullable<bool>,
    /// The connection's last error code.
    pub error: Nullable<StrictString>,
    /// Stuck for some reason (`true`) or for none (`false`).
    pub stuck: Nullable<bool>,
    /// Stuck for this reason (perhaps others too).
    pub reason: Nullable<StuckReasonJson>,
}

/// A dry run (`filter`, `reason`, `dryRun: true`) or its confirmation (`confirmationToken`,
/// `reason` optional). Fields not used are `null` or absent.
#[derive(Debug, Clone, Object)]
#[oai(rename = "BulkRequest", rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkRequestJson {
    /// The dry run's filter; `null` or absent: every connection.
    pub filter: Nullable<BulkFilterJson>,
    /// Why, for the journal (required for a dry run; on a confirmation it replaces the dry
    /// run's): 1 to 500 characters of one line, no token, secret or email address.
    pub reason: Nullable<StrictString>,
    /// `true`: store the plan and answer it; nothing is acted on.
    pub dry_run: Nullable<bool>,
    /// The dry run's `confirmationToken`: act on the connections it showed.
    pub confirmation_token: Nullable<StrictString>,
}

/// One connection of a dry run's sample.
#[derive(Debug, Clone, Object)]
#[oai(rename = "BulkSampleConnection", rename_all = "camelCase")]
pub struct BulkSampleJson {
    pub id: String,
    pub user_id: String,
    pub partner: String,
    pub state: StateJson,
    pub paused: bool,
}

/// A dry run's plan.
#[derive(Debug, Clone, Object)]
#[oai(rename = "BulkPlan", rename_all = "camelCase")]
pub struct BulkPlanJson {
    pub action: BulkActionJson,
    /// Connections the confirmation acts on: these and no others.
    pub count: u64,
    /// The first 20 of them, smallest id first.
    pub sample: Vec<BulkSampleJson>,
    /// Send it back as `confirmationToken` to act; shown this once.
    pub confirmation_token: String,
    /// The token is refused (410 `bulk_plan_expired`) from then on.
    pub expires_at: DateTime<Utc>,
}

/// Members a single action refused, by its code.
#[derive(Debug, Clone, Object)]
#[oai(rename = "BulkRefusals", rename_all = "camelCase")]
pub struct BulkRefusalJson {
    /// `step_in_flight`, `invalid_transition`, `nothing_to_replay`, `paused`, `conflict`.
    pub code: String,
    pub count: u64,
}

/// What a confirmed bulk action did (the same answer to every confirmation of one plan).
#[derive(Debug, Clone, Object)]
#[oai(rename = "BulkResult", rename_all = "camelCase")]
pub struct BulkResultJson {
    /// Connections changed, each journaled with the caller as actor and the reason.
    pub acted: u64,
    /// Connections already so: nothing written.
    pub already: u64,
    /// Connections the single action refused (see `refusals`).
    pub refused: u64,
    /// Connections deleted since the dry run.
    pub gone: u64,
    pub refusals: Vec<BulkRefusalJson>,
}

/// A dry run's plan, or a confirmation's result.
#[derive(Debug, Clone, Union)]
#[oai(rename = "BulkAnswer")]
pub enum BulkAnswerJson {
    Plan(BulkPlanJson),
    Result(BulkResultJson),
}

endpoint_response! {
    pub enum BulkResponse {
        /// The plan (dry run) or the result (confirmation).
        Ok(Json<BulkAnswerJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` acts on workflows (`forbidden`).
        Forbidden = 403,
        /// No plan has this confirmation token (`bulk_plan_unknown`).
        NotFound = 404,
        /// The token is for another action (`bulk_plan_action_mismatch`).
        Conflict = 409,
        /// The token expired (`bulk_plan_expired`): make a new dry run.
        Gone = 410,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
        /// The body is not `application/json` (`unsupported_media_type`).
        UnsupportedMediaType = 415,
        /// More connections match than one plan may hold (`bulk_too_many`), or the reason is
        /// refused (`invalid_reason`).
        Unprocessable = 422,
    }
}

impl From<BulkError> for Problem {
    fn from(err: BulkError) -> Self {
        let status = match &err {
            BulkError::UnknownPlan => StatusCode::NOT_FOUND,
            BulkError::Expired(_) => StatusCode::GONE,
            BulkError::ActionMismatch { .. } => StatusCode::CONFLICT,
            BulkError::TooMany { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            BulkError::Store(_) => match err {
                BulkError::Store(err) => return err.into(),
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        };
        Problem::new(status, err.code(), err.to_string())
    }
}

fn reason(text: &str) -> Result<Reason, Problem> {
    Reason::parse(text).map_err(|err| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_reason",
            err.to_string(),
        )
    })
}

fn invalid_body(detail: &str) -> Problem {
    Problem::bad_request("invalid_body", detail)
}

fn text(s: &Nullable<StrictString>) -> Option<&str> {
    s.as_ref().map(|s| s.0.as_str())
}

fn filter_of(json: &BulkFilterJson) -> Result<ConnectionFilter, Problem> {
    connection_filter(FilterParts {
        state: json.state.0,
        partner: text(&json.partner),
        user: text(&json.user),
        paused: json.paused.0,
        error: text(&json.error),
        stuck: json.stuck.0,
        reason: json.reason.0,
    })
}

pub struct BulkApi {
    pub workflows: Workflows,
}

impl BulkApi {
    fn settings(&self) -> BulkSettings {
        self.workflows.settings().bulk()
    }

    async fn answer(
        &self,
        caller: &Caller,
        action: BulkAction,
        body: &BulkRequestJson,
    ) -> Result<BulkAnswerJson, Problem> {
        caller.require(OPS_ROLES)?;
        let store = self.workflows.store();
        let settings = self.settings();
        let dry_run = body.dry_run.0 == Some(true);
        if let Some(token) = body.confirmation_token.as_ref() {
            if dry_run || !body.filter.is_null() {
                return Err(invalid_body(
                    "a confirmation carries `confirmationToken` only (and perhaps a `reason`): \
                     no `filter`, no `dryRun`",
                ));
            }
            let reason = body.reason.as_ref().map(|r| reason(&r.0)).transpose()?;
            let result = store
                .execute_bulk(
                    &token.0,
                    action,
                    &caller.actor(),
                    reason.as_ref(),
                    &settings,
                )
                .await?;
            return Ok(BulkAnswerJson::Result(result.into()));
        }
        if !dry_run {
            return Err(invalid_body(
                "without `confirmationToken` a bulk action is a dry run: send `dryRun: true`, \
                 then confirm with the token it answers",
            ));
        }
        let Some(text) = body.reason.as_ref() else {
            return Err(invalid_body("a dry run needs a `reason`"));
        };
        let reason = reason(&text.0)?;
        let filter = match body.filter.as_ref() {
            Some(json) => filter_of(json)?,
            None => ConnectionFilter::default(),
        };
        let plan = store
            .plan_bulk(action, &filter, &reason, &caller.actor(), &settings)
            .await?;
        Ok(BulkAnswerJson::Plan(plan.into()))
    }
}

#[OpenApi(prefix_path = "/v1/ops", tag = "ApiTags::Operations")]
impl BulkApi {
    /// A bulk action on the connections matching the list's filters, in two calls: a dry run
    /// (`dryRun: true`) stores them and answers their count, a sample and a confirmation
    /// token; the confirmation (`confirmationToken`) acts on exactly those, each through the
    /// single action, and answers what became of them (docs/actions.md#bulk-actions).
    #[oai(path = "/bulk/:action", method = "post", operation_id = "bulkAction")]
    async fn bulk(
        &self,
        BearerAuth(caller): BearerAuth,
        /// `pause`, `resume`, `fail`, `clear-error` or `replay`.
        action: Path<BulkActionJson>,
        body: Json<BulkRequestJson>,
    ) -> BulkResponse {
        match self.answer(&caller, action.0.into(), &body).await {
            Ok(answer) => BulkResponse::Ok(Json(answer)),
            Err(problem) => problem.into(),
        }
    }
}

impl From<BulkAction> for BulkActionJson {
    fn from(a: BulkAction) -> Self {
        match a {
            BulkAction::Pause => BulkActionJson::Pause,
            BulkAction::Resume => BulkActionJson::Resume,
            BulkAction::Fail => BulkActionJson::Fail,
            BulkAction::ClearError => BulkActionJson::ClearError,
            BulkAction::Replay => BulkActionJson::Replay,
        }
    }
}

impl From<BulkPlan> for BulkPlanJson {
    fn from(p: BulkPlan) -> Self {
        Self {
            action: p.action.into(),
            count: p.count,
            sample: p
                .sample
                .into_iter()
                .map(|c| BulkSampleJson {
                    id: c.id.to_string(),
                    user_id: c.user_id.as_str().to_owned(),
                    partner: c.partner.as_str().to_owned(),
                    state: c.state.into(),
                    paused: c.paused,
                })
                .collect(),
            confirmation_token: p.token,
            expires_at: p.expires_at,
        }
    }
}

impl From<BulkResult> for BulkResultJson {
    fn from(r: BulkResult) -> Self {
        Self {
            acted: r.acted,
            already: r.already,
            refused: r.refused,
            gone: r.gone,
            refusals: r
                .refusals
                .into_iter()
                .map(|(code, count)| BulkRefusalJson { code, count })
                .collect(),
        }
    }
}

/// A plan as the dry run answers it (the CLI's `--json`).
pub fn plan_json(plan: BulkPlan) -> serde_json::Value {
    BulkPlanJson::from(plan).to_json().unwrap_or_default()
}

/// A result as the confirmation answers it (the CLI's `--json`).
pub fn result_json(result: BulkResult) -> serde_json::Value {
    BulkResultJson::from(result).to_json().unwrap_or_default()
}
