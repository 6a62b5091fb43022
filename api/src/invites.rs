//! Clinician invitations: `/v1/clinics/{clinicId}/invites[/…]` (docs/notifications.md).
//! A clinician manages only the clinics of their token; `service` and `ops` any clinic. The
//! patient completes an invitation with the ordinary `POST /v1/connections/{id}/authorize`.

use chrono::{DateTime, Utc};
use engine::{
    ids::UserId,
    invitation::{EmailAddress, Invitation, InvitationStatus},
    store::InvitationQuery,
};
use poem_openapi::{
    Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use uuid::Uuid;
use workflows::{InviteOutcome, Inviter, WorkflowError, Workflows};

use crate::{
    ApiTags,
    models::{Nullable, StateJson, StrictString},
    params::{ClinicIdParam, UuidParam},
    problem::{Problem, ProblemJson, endpoint_response},
    security::{BearerAuth, Caller},
};

/// Invitations per page when no `limit` is given.
const DEFAULT_LIMIT: u32 = 50;

/// Who to invite, to which partner.
#[derive(Debug, Clone, Object)]
#[oai(
    rename = "NewInvitation",
    rename_all = "camelCase",
    deny_unknown_fields
)]
pub struct NewInvitationJson {
    /// The patient's Tidepool user id.
    pub patient_user_id: StrictString,
    /// Where the invitation is sent. Stored encrypted; shown to the clinic only masked.
    pub email: StrictString,
    /// A configured partner's name (see `GET /v1/partners`).
    pub partner: StrictString,
}

/// Where an invitation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "InvitationStatus", rename_all = "snake_case")]
pub enum InvitationStatusJson {
    /// Sent; the patient has not acted yet.
    Pending,
    /// The patient started connecting (see `connectionState`).
    Accepted,
    /// The patient declined (disconnected before connecting).
    Declined,
    /// The clinic withdrew it.
    Cancelled,
    /// Nobody acted before `expiresAt`.
    Expired,
}

impl From<InvitationStatus> for InvitationStatusJson {
    fn from(status: InvitationStatus) -> Self {
        match status {
            InvitationStatus::Pending => Self::Pending,
            InvitationStatus::Accepted => Self::Accepted,
            InvitationStatus::Declined => Self::Declined,
            InvitationStatus::Cancelled => Self::Cancelled,
            InvitationStatus::Expired => Self::Expired,
        }
    }
}

impl From<InvitationStatusJson> for InvitationStatus {
    fn from(status: InvitationStatusJson) -> Self {
        match status {
            InvitationStatusJson::Pending => Self::Pending,
            InvitationStatusJson::Accepted => Self::Accepted,
            InvitationStatusJson::Declined => Self::Declined,
            InvitationStatusJson::Cancelled => Self::Cancelled,
            InvitationStatusJson::Expired => Self::Expired,
        }
    }
}

/// An invitation as its clinic sees it: the connection's state, never the patient's data;
/// the address only masked.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Invitation", rename_all = "camelCase")]
pub struct InvitationJson {
    pub id: Uuid,
    pub clinic_id: String,
    /// The inviting clinician (their token's subject).
    pub clinician: String,
    pub patient_user_id: String,
    pub partner: String,
    /// `p***@example.org`.
    pub email: String,
    pub status: InvitationStatusJson,
    pub connection_id: Uuid,
    pub connection_state: StateJson,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// When the last invitation email was queued.
    pub last_sent_at: DateTime<Utc>,
    /// Emails queued so far (the first one and every resend).
    pub sent_count: u32,
    pub closed_at: Nullable<DateTime<Utc>>,
}

impl From<Invitation> for InvitationJson {
    fn from(i: Invitation) -> Self {
        Self {
            id: i.id.parse().unwrap_or_default(),
            clinic_id: i.clinic_id,
            clinician: i.clinician,
            patient_user_id: i.patient_user_id,
            partner: i.partner,
            email: i.email_masked,
            status: i.status.into(),
            connection_id: i.connection_id.as_uuid(),
            connection_state: i.connection_state.into(),
            created_at: i.created_at,
            expires_at: i.expires_at,
            last_sent_at: i.last_sent_at,
            sent_count: i.sent_count,
            closed_at: i.closed_at.into(),
        }
    }
}

/// One page of a clinic's invitations, newest first.
#[derive(Debug, Clone, Object)]
#[oai(rename = "InvitationPage", rename_all = "camelCase")]
pub struct InvitationPageJson {
    pub invitations: Vec<InvitationJson>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

endpoint_response! {
    pub enum CreateInvitationResponse {
        /// A new invitation; its email is on its way.
        Created(Json<InvitationJson>) = 201,
        /// This clinic already has a pending invitation of this patient to this partner: that
        /// one (nothing is sent again; see `resend`).
        Existing(Json<InvitationJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not manage invitations (`forbidden`).
        Forbidden = 403,
        /// Not one of the clinician's clinics (`not_found`).
        NotFound = 404,
        /// The patient's connection to this partner is active (`already_active`), being
        /// authorized (`invalid_transition`), or changed concurrently (`conflict`).
        Conflict = 409,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
        /// The body is not `application/json` (`unsupported_media_type`).
        UnsupportedMediaType = 415,
        /// The partner is not configured (`unknown_partner`), or the email address or the
        /// user id is not valid (`invalid_email`, `invalid_user_id`).
        Unprocessable = 422,
        /// No email transport is configured (`email_not_configured`).
        Unavailable = 503,
    }
}

endpoint_response! {
    pub enum ListInvitationsResponse {
        /// The clinic's invitations, newest first.
        Ok(Json<InvitationPageJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not manage invitations (`forbidden`).
        Forbidden = 403,
        /// Not one of the clinician's clinics (`not_found`).
        NotFound = 404,
    }
}

endpoint_response! {
    pub enum InvitationResponse {
        /// The invitation.
        Ok(Json<InvitationJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not manage invitations (`forbidden`).
        Forbidden = 403,
        /// No such invitation in this clinic, or not one of the clinician's clinics
        /// (`not_found`).
        NotFound = 404,
    }
}

endpoint_response! {
    pub enum ChangeInvitationResponse {
        /// The invitation afterwards.
        Ok(Json<InvitationJson>) = 200,
        /// The last email went out less than the resend interval ago (`too_soon`);
        /// `Retry-After` says in how many seconds another may.
        TooSoon(ProblemJson, #[oai(header = "Retry-After")] u64) = 429,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not manage invitations (`forbidden`).
        Forbidden = 403,
        /// No such invitation in this clinic, or not one of the clinician's clinics
        /// (`not_found`).
        NotFound = 404,
        /// The invitation is no longer pending (`invitation_closed`), or its connection changed
        /// concurrently (`conflict`).
        Conflict = 409,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
    }
}

pub struct InvitesApi {
    pub workflows: Workflows,
}

fn not_found(err: WorkflowError) -> Problem {
    match err {
        WorkflowError::NotFound => Problem::not_found("invitation not found"),
        other => other.into(),
    }
}

fn parse_id(raw: &str) -> Result<String, Problem> {
    raw.parse::<Uuid>()
        .map(|id| id.to_string())
        .map_err(|_| Problem::bad_request("invalid_invitation_id", "an invitation id is a UUID"))
}

fn change_response(
    result: Result<Result<Invitation, WorkflowError>, Problem>,
) -> ChangeInvitationResponse {
    match result {
        Ok(Ok(invitation)) => ChangeInvitationResponse::Ok(Json(invitation.into())),
        Ok(Err(WorkflowError::TooSoon { retry_after_secs })) => {
            let problem = Problem::from(WorkflowError::TooSoon { retry_after_secs });
            ChangeInvitationResponse::TooSoon(ProblemJson(problem), retry_after_secs.max(1))
        }
        Ok(Err(err)) => not_found(err).into(),
        Err(problem) => problem.into(),
    }
}

impl InvitesApi {
    fn inviter(caller: &Caller, clinic: &str) -> Inviter {
        Inviter {
            clinic_id: clinic.to_owned(),
            clinician: caller.subject().to_owned(),
            actor: caller.clinic_actor(clinic),
        }
    }
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Invitations")]
impl InvitesApi {
    /// Invite a patient to connect a partner: a connection in `invited` (a new one, or the
    /// patient's revoked or failed one, its data cursor kept), and an email to the patient.
    #[oai(
        path = "/clinics/:clinicId/invites",
        method = "post",
        operation_id = "createInvitation"
    )]
    async fn create(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Clinic id.
        #[oai(name = "clinicId")]
        clinic_id: Path<ClinicIdParam>,
        body: Json<NewInvitationJson>,
    ) -> CreateInvitationResponse {
        let result = async {
            let clinic = caller.clinic_path(&clinic_id)?;
            let unprocessable = |code: &str, detail: String| {
                Problem::new(poem::http::StatusCode::UNPROCESSABLE_ENTITY, code, detail)
            };
            let user = UserId::parse(&body.patient_user_id.0)
                .map_err(|e| unprocessable("invalid_user_id", e.to_string()))?;
            let email = EmailAddress::parse(&body.email.0)
                .map_err(|e| unprocessable("invalid_email", e.to_string()))?;
            Ok::<_, Problem>(
                self.workflows
                    .invite(
                        &Self::inviter(&caller, &clinic),
                        &user,
                        &body.partner.0,
                        email,
                    )
                    .await?,
            )
        };
        match result.await {
            Ok(InviteOutcome::Created(i)) => CreateInvitationResponse::Created(Json(i.into())),
            Ok(InviteOutcome::Existing(i)) => CreateInvitationResponse::Existing(Json(i.into())),
            Err(problem) => problem.into(),
        }
    }

    /// A clinic's invitations, newest first, keyset-paged.
    #[oai(
        path = "/clinics/:clinicId/invites",
        method = "get",
        operation_id = "listInvitations"
    )]
    async fn list(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Clinic id.
        #[oai(name = "clinicId")]
        clinic_id: Path<ClinicIdParam>,
        /// Only invitations in this status.
        state: Query<Option<InvitationStatusJson>>,
        /// Only invitations to this partner.
        #[oai(validator(pattern = "^[a-z0-9-]{1,64}$"))]
        partner: Query<Option<String>>,
        /// Invitations per page, 1 to 200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
        /// `nextCursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> ListInvitationsResponse {
        let result = async {
            let clinic = caller.clinic_path(&clinic_id)?;
            let before_id = cursor
                .0
                .as_deref()
                .map(|c| {
                    c.parse::<Uuid>().map(|id| id.to_string()).map_err(|_| {
                        Problem::bad_request("invalid_cursor", "not a cursor of this list")
                    })
                })
                .transpose()?;
            let limit = limit.0.unwrap_or(DEFAULT_LIMIT);
            let query = InvitationQuery {
                status: state.0.map(Into::into),
                partner: partner.0.clone(),
                before_id,
                limit: u64::from(limit) + 1,
            };
            let mut invitations = self.workflows.invitations(&clinic, &query).await?;
            let more = invitations.len() > limit as usize;
            invitations.truncate(limit as usize);
            let next_cursor = more
                .then(|| invitations.last().map(|i| i.id.clone()))
                .flatten();
            Ok::<_, Problem>(InvitationPageJson {
                invitations: invitations.into_iter().map(Into::into).collect(),
                next_cursor: next_cursor.into(),
            })
        };
        match result.await {
            Ok(page) => ListInvitationsResponse::Ok(Json(page)),
            Err(problem) => problem.into(),
        }
    }

    /// One invitation of the clinic.
    #[oai(
        path = "/clinics/:clinicId/invites/:invitationId",
        method = "get",
        operation_id = "getInvitation"
    )]
    async fn get(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Clinic id.
        #[oai(name = "clinicId")]
        clinic_id: Path<ClinicIdParam>,
        /// Invitation id (UUID).
        #[oai(name = "invitationId")]
        invitation_id: Path<UuidParam>,
    ) -> InvitationResponse {
        let result = async {
            let clinic = caller.clinic_path(&clinic_id)?;
            let id = parse_id(&invitation_id)?;
            self.workflows
                .invitation(&clinic, &id)
                .await
                .map_err(not_found)
        };
        match result.await {
            Ok(invitation) => InvitationResponse::Ok(Json(invitation.into())),
            Err(problem) => problem.into(),
        }
    }

    /// Send the invitation email again: at most once per resend interval (an hour by default).
    #[oai(
        path = "/clinics/:clinicId/invites/:invitationId/resend",
        method = "post",
        operation_id = "resendInvitation"
    )]
    async fn resend(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Clinic id.
        #[oai(name = "clinicId")]
        clinic_id: Path<ClinicIdParam>,
        /// Invitation id (UUID).
        #[oai(name = "invitationId")]
        invitation_id: Path<UuidParam>,
    ) -> ChangeInvitationResponse {
        let result = async {
            let clinic = caller.clinic_path(&clinic_id)?;
            let id = parse_id(&invitation_id)?;
            Ok::<_, Problem>(
                self.workflows
                    .resend_invitation(&clinic, &id, caller.clinic_actor(&clinic))
                    .await,
            )
        };
        change_response(result.await)
    }

    /// Withdraw a pending invitation. When it was the connection's only pending one, the
    /// connection leaves `invited` (to `revoked`, reason `invite_cancelled`).
    #[oai(
        path = "/clinics/:clinicId/invites/:invitationId/cancel",
        method = "post",
        operation_id = "cancelInvitation"
    )]
    async fn cancel(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Clinic id.
        #[oai(name = "clinicId")]
        clinic_id: Path<ClinicIdParam>,
        /// Invitation id (UUID).
        #[oai(name = "invitationId")]
        invitation_id: Path<UuidParam>,
    ) -> ChangeInvitationResponse {
        let result = async {
            let clinic = caller.clinic_path(&clinic_id)?;
            let id = parse_id(&invitation_id)?;
            Ok::<_, Problem>(
                self.workflows
                    .cancel_invitation(&clinic, &id, caller.clinic_actor(&clinic))
                    .await,
            )
        };
        change_response(result.await)
    }
}
