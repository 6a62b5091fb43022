use sea_orm::entity::prelude::*;

/// One run of a step on a connection (docs/operations.md#step-runs).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "step_runs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub connection_id: String,
    /// `fetch`, `refresh`, `revoke` or `deliver`.
    pub step: String,
    pub started_at: DateTimeUtc,
    pub finished_at: DateTimeUtc,
    /// How the run ended (`completed`, `yielded`, `failed`, `refreshed`, `sent`, …).
    pub outcome: String,
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub skipped: i64,
    /// Windows committed.
    pub windows: i64,
    /// The partner's HTTP status codes: a JSON object of status → count.
    pub statuses: Option<String>,
    pub error_code: Option<String>,
    pub duration_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
