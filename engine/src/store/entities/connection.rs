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
    /// Consecutive failed transfers (the transfer path changes it by SQL arithmetic only).
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
    /// Start of the earliest window ever committed (docs/coverage.md#coverage).
    pub fetched_from: Option<DateTimeUtc>,
    /// Start of the current streak of failed transfers (the failure budget runs from here).
    pub failing_since: Option<DateTimeUtc>,
    /// While in the future, a dispatcher or worker holds the connection's transfer.
    pub sync_lease_until: Option<DateTimeUtc>,
    /// Set by the worker that started the transfer; every progress write checks it.
    pub sync_lease_token: Option<String>,
    /// Last user-requested immediate sync (rate limit).
    pub sync_requested_at: Option<DateTimeUtc>,
    /// Distinct partner records skipped over the connection's life (one per `skipped_records`
    /// row, so a bad record re-read by the overlap counts once).
    pub records_skipped: i64,
    /// Consecutive failed refreshes (written only by refresh transitions, under the version).
    pub refresh_failures: i32,
    /// When the next refresh is due; the refresh dispatcher's claim moves it ahead (a lease).
    pub refresh_due_at: Option<DateTimeUtc>,
    /// The last refresh was abandoned after its request went out: its outcome is unknown.
    pub refresh_outcome_unknown_at: Option<DateTimeUtc>,
    /// Records that came twice in one window with different contents (the last one kept).
    pub records_conflicting: i64,
    /// When the partner's late-change horizon was last re-read.
    pub reread_at: Option<DateTimeUtc>,
    /// The patient's email address for notices, AES-256-GCM sealed; associated data =
    /// `contact:<id>` (docs/notifications.md#personal-data).
    pub contact_ciphertext: Option<Vec<u8>>,
    pub contact_key_id: Option<String>,
    /// Consecutive completed transfers that did not move `latest_data_time`.
    pub idle_runs: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
