//! Workflow errors, transport-agnostic; `api` maps them to HTTP.

use engine::{StoreError, state::InvalidTransition};

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("connection not found")]
    NotFound,
    #[error("partner {0:?} is not configured")]
    UnknownPartner(String),
    #[error("the connection is already active")]
    AlreadyActive,
    #[error(transparent)]
    InvalidTransition(InvalidTransition),
    #[error("the connection was changed concurrently; retry")]
    Conflict,
    /// Only a connection that may transfer data can be asked to sync.
    #[error("only active connections transfer data; this one is {0}")]
    NotTransferring(engine::state::State),
    /// Invitations need an email transport (`[email]`).
    #[error("email is not configured: invitations cannot be sent")]
    EmailNotConfigured,
    /// The invitation is no longer pending (accepted, declined, cancelled or expired).
    #[error("the invitation is no longer pending")]
    InvitationClosed,
    /// Asked again too soon (an invitation email within its resend interval).
    #[error("too soon; retry in {retry_after_secs} s")]
    TooSoon { retry_after_secs: u64 },
    #[error("internal error: {0}")]
    Internal(String),
    /// A test stopped the step at a named boundary, as if the process had died there.
    #[error(transparent)]
    Injected(#[from] engine::failpoint::Injected),
}

impl WorkflowError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            WorkflowError::NotFound => "not_found",
            WorkflowError::UnknownPartner(_) => "unknown_partner",
            WorkflowError::AlreadyActive => "already_active",
            WorkflowError::InvalidTransition(_) => "invalid_transition",
            WorkflowError::Conflict => "conflict",
            WorkflowError::NotTransferring(_) => "invalid_transition",
            WorkflowError::EmailNotConfigured => "email_not_configured",
            WorkflowError::InvitationClosed => "invitation_closed",
            WorkflowError::TooSoon { .. } => "too_soon",
            WorkflowError::Internal(_) => "internal",
            WorkflowError::Injected(_) => "failpoint",
        }
    }
}

impl From<StoreError> for WorkflowError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => WorkflowError::NotFound,
            StoreError::Conflict { .. } | StoreError::AlreadyLive => WorkflowError::Conflict,
            StoreError::InvalidTransition(t) => WorkflowError::InvalidTransition(t),
            StoreError::Injected(point) => WorkflowError::Injected(point),
            other => {
                tracing::error!(error = %other, "storage failure");
                WorkflowError::Internal(other.to_string())
            }
        }
    }
}
