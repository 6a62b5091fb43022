//! The JSON of the operators' actions (docs/actions.md#actions) and its conversions from the
//! engine's types.

use chrono::{DateTime, Utc};
use engine::store::{Acted, ActionError, Pause, PauseScope, Replay, ReplayStep, ScopeResumed};
use poem::http::StatusCode;
use poem_openapi::{Enum, Object};

use crate::{
    models::{ConnectionJson, Nullable, StrictString},
    problem::Problem,
};

/// Why the operator acts.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ActionReason", rename_all = "camelCase", deny_unknown_fields)]
pub struct ReasonJson {
    /// Why, for the journal: 1 to 500 characters of one line, without a token, a secret or an
    /// email address (422 `invalid_reason` otherwise).
    pub reason: StrictString,
}

/// Which step a replay ran again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "ReplayStep", rename_all = "snake_case")]
pub enum ReplayStepJson {
    /// The connection's data transfer (an `active` connection).
    Transfer,
    /// Its token refresh (a connection left `refreshing` by a stopped worker).
    Refresh,
    /// A partner-side revocation it still owes (a `revoked` or `failed` connection).
    Revocation,
}

/// What a replay scheduled.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ReplayResult", rename_all = "camelCase")]
pub struct ReplayJson {
    pub step: ReplayStepJson,
    /// When the step is due: now, or earlier when it already was.
    pub due_at: DateTime<Utc>,
    /// `false`: the step was already due; nothing was written.
    pub changed: bool,
    /// A transfer lease left behind (expired) was cleared.
    pub lease_cleared: bool,
    /// The connection afterwards.
    pub connection: ConnectionJson,
}

/// What an action on a connection did.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ActionResult", rename_all = "camelCase")]
pub struct ActedJson {
    /// `false`: it already was so; nothing was written.
    pub changed: bool,
    /// A transfer was running and lost its lease: it stops at its next write.
    pub transfer_stopped: bool,
    /// The connection afterwards.
    pub connection: ConnectionJson,
}

/// A pause of a partner or of everything, in force.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Pause", rename_all = "camelCase")]
pub struct PauseJson {
    pub id: String,
    /// `all` or `partner:<name>`.
    pub scope: String,
    /// The paused partner; `null` when everything is paused.
    pub partner: Nullable<String>,
    pub reason: String,
    /// Who paused (`ops:<subject>`).
    pub actor: String,
    pub since: DateTime<Utc>,
}

/// What a pause of a partner or of everything did.
#[derive(Debug, Clone, Object)]
#[oai(rename = "PauseResult", rename_all = "camelCase")]
pub struct PausedJson {
    /// `false`: it already was paused; the pause in force is unchanged.
    pub changed: bool,
    pub pause: PauseJson,
}

/// What a resume of a partner or of everything did.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ResumeResult", rename_all = "camelCase")]
pub struct ResumedJson {
    /// `false`: it was not paused; nothing was written.
    pub changed: bool,
    /// Connections whose transfer or refresh fell due while paused, now due at a random time
    /// within the resume spread (`workers.resume_spread_secs`).
    pub rescheduled: u64,
}

/// What is paused.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Pauses", rename_all = "camelCase")]
pub struct PausesJson {
    /// Pauses of partners and of everything in force, oldest first.
    pub pauses: Vec<PauseJson>,
    /// Connections paused on their own (their journal says by whom and why).
    pub paused_connections: u64,
}

impl From<Pause> for PauseJson {
    fn from(p: Pause) -> Self {
        Self {
            id: p.id,
            scope: p.scope.key(),
            partner: match p.scope {
                PauseScope::All => None,
                PauseScope::Partner(partner) => Some(partner.as_str().to_owned()),
            }
            .into(),
            reason: p.reason,
            actor: p.actor,
            since: p.since,
        }
    }
}

impl From<Acted> for ActedJson {
    fn from(a: Acted) -> Self {
        Self {
            changed: a.changed,
            transfer_stopped: a.transfer_stopped,
            connection: a.connection.into(),
        }
    }
}

impl From<Replay> for ReplayJson {
    fn from(r: Replay) -> Self {
        Self {
            step: match r.step {
                ReplayStep::Transfer => ReplayStepJson::Transfer,
                ReplayStep::Refresh => ReplayStepJson::Refresh,
                ReplayStep::Revocation => ReplayStepJson::Revocation,
            },
            due_at: r.due_at,
            changed: r.changed,
            lease_cleared: r.lease_cleared,
            connection: r.connection.into(),
        }
    }
}

impl From<ScopeResumed> for ResumedJson {
    fn from(r: ScopeResumed) -> Self {
        Self {
            changed: r.changed,
            rescheduled: r.rescheduled,
        }
    }
}

impl From<ActionError> for Problem {
    fn from(err: ActionError) -> Self {
        match err {
            ActionError::Refused(refusal) => {
                Problem::new(StatusCode::CONFLICT, refusal.code(), refusal.detail())
            }
            ActionError::Store(engine::StoreError::Conflict { .. }) => Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                "the connection kept changing concurrently; retry",
            ),
            ActionError::Store(err) => err.into(),
        }
    }
}
