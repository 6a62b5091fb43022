use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "connections")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub user_id: String,
    pub partner: String,
    pub state: String,
    /// Compare-and-swap guard: every write is `… WHERE version = <read version>`.
    pub version: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub state_changed_at: DateTimeUtc,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub failure_count: i32,
    pub paused: bool,
    /// AES-256-GCM sealed JSON of the token set; associated data = `tokens:<id>`.
    pub token_ciphertext: Option<Vec<u8>>,
    pub token_key_id: Option<String>,
    pub token_expires_at: Option<DateTimeUtc>,
    pub scope: Option<String>,
    pub earliest_data_time: Option<DateTimeUtc>,
    pub latest_data_time: Option<DateTimeUtc>,
    pub last_sync_at: Option<DateTimeUtc>,
    pub next_sync_at: Option<DateTimeUtc>,
    /// End of the last completely fetched window (the transfer cursor).
    pub fetched_through: Option<DateTimeUtc>,
    /// Start of the current streak of failed transfers (the failure budget runs from here).
    pub failing_since: Option<DateTimeUtc>,
    /// While in the future, a dispatcher or worker holds the connection's transfer.
    pub sync_lease_until: Option<DateTimeUtc>,
    /// Set by the worker that started the transfer; every progress write checks it.
    pub sync_lease_token: Option<String>,
    /// Last user-requested immediate sync (rate limit).
    pub sync_requested_at: Option<DateTimeUtc>,
    /// Partner records the mapping could not understand, skipped over the connection's life.
    pub records_skipped: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
