//! Domain types the rest of the system reads and writes; rows are converted to these.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    ids::{ConnectionId, PartnerName, UserId},
    secret::SecretString,
    state::{Event, State},
};

/// A user↔partner connection as the engine sees it. Holds no token material: whether tokens
/// exist is a flag; reading them is an explicit [`crate::store::Store::tokens`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub id: ConnectionId,
    pub user_id: UserId,
    pub partner: PartnerName,
    pub state: State,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub state_changed_at: DateTime<Utc>,
    pub last_error: Option<ErrorInfo>,
    /// Consecutive failed transfers (the transfer backoff and budget run on these).
    pub failure_count: u32,
    pub paused: bool,
    pub has_tokens: bool,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub scope: Option<String>,
    pub earliest_data_time: Option<DateTime<Utc>>,
    pub latest_data_time: Option<DateTime<Utc>>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub next_sync_at: Option<DateTime<Utc>>,
    /// End of the last completely fetched window (the transfer cursor).
    pub fetched_through: Option<DateTime<Utc>>,
    /// Start of the earliest window ever committed: the connection has fetched
    /// `[fetched_from, fetched_through)` (docs/coverage.md#coverage).
    pub fetched_from: Option<DateTime<Utc>>,
    /// Start of the current streak of failed transfers.
    pub failing_since: Option<DateTime<Utc>>,
    /// Distinct partner records skipped (never stored) so far: unreadable, unmappable, or
    /// dated implausibly. A record re-read by a later transfer is not counted again.
    pub records_skipped: u64,
    /// Records that came twice in one window with different contents (the last one kept).
    pub records_conflicting: u64,
    /// Consecutive failed refreshes (apart from the transfer streak in `failure_count`).
    pub refresh_failures: u32,
    /// When the next refresh is due (a quarter of the token's lifetime ahead of its expiry, or
    /// the retry after a failure).
    pub refresh_due_at: Option<DateTime<Utc>>,
    /// Set when a refresh was abandoned after its request went out: its outcome is unknown.
    pub refresh_outcome_unknown_at: Option<DateTime<Utc>>,
    /// When the partner's late-change horizon was last re-read.
    pub reread_at: Option<DateTime<Utc>>,
}

/// The last thing that went wrong, in words safe to show (no secrets, no health data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Stable machine-readable code (`invalid_grant`, `partner_unavailable`, …).
    pub code: String,
    pub message: String,
}

impl ErrorInfo {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// One journal row.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub connection_id: ConnectionId,
    pub seq: i64,
    pub from: Option<State>,
    pub to: State,
    pub event: String,
    pub actor: String,
    pub reason: Option<String>,
    pub details: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// OAuth tokens of one connection (decrypted; handle with care).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_at: Option<DateTime<Utc>>,
    pub scope: Option<String>,
}

/// Who caused a transition, as recorded in the journal: `user:<id>`, `ops:<sub>`,
/// `system:<component>`, `partner:<name>`…
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor(String);

impl Actor {
    pub fn new(kind: &str, id: &str) -> Self {
        Self(format!("{kind}:{id}"))
    }

    pub fn system(component: &str) -> Self {
        Self::new("system", component)
    }

    pub fn partner(partner: &PartnerName) -> Self {
        Self::new("partner", partner.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What to do with the last-error field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ErrorUpdate {
    #[default]
    Keep,
    Clear,
    /// Clear, unless a transfer failure streak is running (its error stays until a transfer
    /// succeeds): what a successful refresh does.
    ClearUnlessTransfersFailing,
    Set(ErrorInfo),
}

/// A new pending OAuth authorization, stored with the transition that issues it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuthorization {
    pub state_hash: String,
    pub pkce_verifier: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// How a partner-side revocation ended, recorded by [`Event::RevocationFinished`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationFinish {
    pub revocation_id: String,
    /// The partner confirmed (`true`) or we gave up after the last attempt (`false`).
    pub confirmed: bool,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// The last attempt's error code, when it failed.
    pub error: Option<String>,
}

/// A transition request: the event (with the data its effects need) and what the journal says.
#[derive(Debug, Clone)]
pub struct Change {
    pub event: Event,
    pub actor: Actor,
    /// Human-readable reason for the journal (no secrets).
    pub reason: Option<String>,
    /// Non-secret structured details for the journal.
    pub details: serde_json::Value,
    pub error: ErrorUpdate,
}

impl Change {
    pub fn new(event: Event, actor: Actor) -> Self {
        Self {
            event,
            actor,
            reason: None,
            details: serde_json::Value::Object(Default::default()),
            error: ErrorUpdate::Keep,
        }
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn error(mut self, error: ErrorInfo) -> Self {
        self.error = ErrorUpdate::Set(error);
        self
    }

    pub fn clear_error(mut self) -> Self {
        self.error = ErrorUpdate::Clear;
        self
    }

    pub fn error_update(mut self, update: ErrorUpdate) -> Self {
        self.error = update;
        self
    }
}

/// An operator alert as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorAlert {
    pub id: String,
    pub partner: String,
    /// The connection of the latest occurrence, when there was one.
    pub connection_id: Option<String>,
    pub code: String,
    /// The latest occurrence's message.
    pub message: String,
    /// When the alert was first raised.
    pub created_at: DateTime<Utc>,
    /// Occurrences folded into this alert (same partner and code).
    pub count: u64,
    pub last_seen_at: DateTime<Utc>,
}

/// One record in the Tidepool data model, ready to store (produced by the mapping).
#[derive(Debug, Clone)]
pub struct MappedRecord {
    /// The partner's stable id of the record (`recordId`, pump `id`, or a derived key for
    /// records without one); with the connection, the idempotency key of storage.
    pub partner_record_id: String,
    /// Tidepool `type` (`cbg`, `basal`, `bolus`, `deviceEvent`, …).
    pub datum_type: String,
    /// Tidepool `time` (UTC).
    pub time: DateTime<Utc>,
    /// The partner deleted the record (`eventStatus: deleted`): retire the stored one.
    pub retired: bool,
    /// The complete Tidepool datum (type, time, deviceTime, timezoneOffset, deviceId, origin,
    /// payload, type-specific fields), already serialised: a window's records wait for their
    /// commit as compact text, several times smaller than parsed JSON
    /// (docs/partner-data.md#memory).
    pub datum: Box<serde_json::value::RawValue>,
}

impl MappedRecord {
    /// Serialises `datum` (a JSON value always serialises) into an allocation of its exact
    /// size: the serialiser's buffer grows by doubling, and shrinking it in place may keep the
    /// larger block, a third more memory for every record a window holds.
    pub fn datum_of(datum: &serde_json::Value) -> Box<serde_json::value::RawValue> {
        let text = serde_json::to_string(datum).unwrap_or_default();
        serde_json::value::RawValue::from_string(text.as_str().to_owned()).unwrap_or_default()
    }

    /// The datum parsed back (for tests and inspection; storage uses the text).
    pub fn datum_value(&self) -> serde_json::Value {
        serde_json::from_str(self.datum.get()).unwrap_or_default()
    }
}

impl PartialEq for MappedRecord {
    fn eq(&self, other: &Self) -> bool {
        self.partner_record_id == other.partner_record_id
            && self.datum_type == other.datum_type
            && self.time == other.time
            && self.retired == other.retired
            && self.datum.get() == other.datum.get()
    }
}

/// A stored record as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub connection_id: String,
    pub partner_record_id: String,
    pub datum_type: String,
    pub time: DateTime<Utc>,
    pub retired: bool,
    pub datum: serde_json::Value,
}
