//! The JSON the API answers, for the `tributary ops` tools that read the database directly:
//! they print exactly what the endpoints would (`--json`) and render their tables from it, so
//! a table reads the same against a server or a database.

use engine::{
    model::{Connection, JournalEntry},
    store::{Coverage, StepRun},
};
use poem_openapi::types::ToJSON;
use serde_json::Value;

use crate::{
    coverage::CoverageJson,
    models::{ConnectionJson, EventJson},
    runs::{StepRunJson, StepRunPageJson},
};

fn json(value: impl ToJSON) -> Value {
    value.to_json().unwrap_or_default()
}

/// As `GET /v1/connections/{id}` answers it.
pub fn connection_json(connection: Connection) -> Value {
    json(ConnectionJson::from(connection))
}

/// As `GET /v1/connections/{id}/events` answers it.
pub fn journal_json(entries: Vec<JournalEntry>) -> Value {
    json(entries.into_iter().map(EventJson::from).collect::<Vec<_>>())
}

/// As `GET /v1/connections/{id}/runs` answers a page of them (`nextBefore` null).
pub fn runs_json(runs: Vec<(i64, StepRun)>) -> Value {
    json(StepRunPageJson {
        runs: runs
            .into_iter()
            .map(|(id, run)| StepRunJson::new(id, run))
            .collect(),
        next_before: None.into(),
    })
}

/// As `GET /v1/connections/{id}/coverage` answers it.
pub fn coverage_json(coverage: Coverage) -> Value {
    json(CoverageJson::from(coverage))
}

/// As `POST /v1/ops/connections/{id}/replay` answers it.
pub fn replay_json(replay: engine::store::Replay) -> Value {
    json(crate::actions::json::ReplayJson::from(replay))
}

/// As the connection actions (`pause`, `resume`, `fail`, `clear-error`) answer.
pub fn acted_json(acted: engine::store::Acted) -> Value {
    json(crate::actions::json::ActedJson::from(acted))
}

/// As a pause of a partner or of everything answers.
pub fn paused_json(pause: engine::store::Pause, changed: bool) -> Value {
    json(crate::actions::json::PausedJson {
        changed,
        pause: pause.into(),
    })
}

/// As a resume of a partner or of everything answers.
pub fn resumed_json(resumed: engine::store::ScopeResumed) -> Value {
    json(crate::actions::json::ResumedJson::from(resumed))
}

/// As `GET /v1/ops/pauses` answers it.
pub fn pauses_json(pauses: Vec<engine::store::Pause>, paused_connections: u64) -> Value {
    json(crate::actions::json::PausesJson {
        pauses: pauses.into_iter().map(Into::into).collect(),
        paused_connections,
    })
}

/// As `GET /v1/ops/doctor` (and its repair) answers it.
pub fn doctor_json(report: engine::store::DoctorReport) -> Value {
    json(crate::doctor::DoctorReportJson::from(report))
}
