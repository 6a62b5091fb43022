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
