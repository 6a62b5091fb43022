//! The JSON the API speaks (camelCase), kept apart from the engine's types with explicit
//! conversions so a change in storage never silently changes the wire format. Nothing here can
//! hold token material: the engine's `Connection` has none, and these types copy field by field.
//! A field without a value is `null` and always present ([`Nullable`]).

use chrono::{DateTime, Utc};
use engine::{
    model::{Connection, ErrorInfo, JournalEntry, OperatorAlert},
    state::State,
};
use poem_openapi::{
    Enum, Object,
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;
use uuid::Uuid;
use workflows::partner::{PartnerConfig, PartnerKind};

pub use crate::nullable::Nullable;

/// Where a connection is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "ConnectionState", rename_all = "snake_case")]
pub enum StateJson {
    /// A clinician invited the patient; nothing authorized yet.
    Invited,
    /// The user is at the partner's consent page.
    Authorizing,
    /// Tokens held; data are transferred.
    Active,
    /// An access-token refresh is in flight.
    Refreshing,
    /// Disconnected by the user or revoked by the partner.
    Revoked,
    /// Gave up (declined consent, misconfiguration, failure budget spent).
    Failed,
}

impl From<State> for StateJson {
    fn from(state: State) -> Self {
        match state {
            State::Invited => StateJson::Invited,
            State::Authorizing => StateJson::Authorizing,
            State::Active => StateJson::Active,
            State::Refreshing => StateJson::Refreshing,
            State::Revoked => StateJson::Revoked,
            State::Failed => StateJson::Failed,
        }
    }
}

/// The last thing that went wrong with a connection.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ConnectionError", rename_all = "camelCase")]
pub struct ErrorInfoJson {
    /// Stable machine-readable code (`invalid_grant`, `partner_unavailable`, …).
    pub code: String,
    pub message: String,
}

impl From<ErrorInfo> for ErrorInfoJson {
    fn from(info: ErrorInfo) -> Self {
        Self {
            code: info.code,
            message: info.message,
        }
    }
}

/// A user's connection to one partner. Never carries tokens.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Connection", rename_all = "camelCase")]
pub struct ConnectionJson {
    pub id: Uuid,
    pub user_id: String,
    pub partner: String,
    pub state: StateJson,
    /// Incremented by every change (compare-and-swap guard).
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub state_changed_at: DateTime<Utc>,
    pub last_error: Nullable<ErrorInfoJson>,
    /// Consecutive failed transfers (the transfer backoff and the failure budget run on them).
    pub failure_count: u32,
    /// Consecutive failed token refreshes, apart from the transfer streak.
    pub refresh_failures: u32,
    /// When the access token is next refreshed (a quarter of its lifetime before it expires, or
    /// the retry after a failed refresh).
    pub refresh_due_at: Nullable<DateTime<Utc>>,
    /// Set when a refresh was interrupted after its request went out: its outcome is unknown
    /// (with a partner that rotates refresh tokens, the next refresh may lose the grant).
    pub refresh_outcome_unknown_at: Nullable<DateTime<Utc>>,
    pub paused: bool,
    /// When the current access token expires (not the token itself).
    pub token_expires_at: Nullable<DateTime<Utc>>,
    /// The scope the partner granted.
    pub scope: Nullable<String>,
    pub earliest_data_time: Nullable<DateTime<Utc>>,
    pub latest_data_time: Nullable<DateTime<Utc>>,
    /// When the last transfer ended (completed or yielded).
    pub last_sync_at: Nullable<DateTime<Utc>>,
    /// When the next transfer is due (`POST /v1/connections/{id}/sync` makes it now).
    pub next_sync_at: Nullable<DateTime<Utc>>,
    /// Data up to this time have been completely fetched (the transfer cursor).
    pub fetched_through: Nullable<DateTime<Utc>>,
    /// Start of the current streak of failed transfers; `null` when the last one succeeded.
    pub failing_since: Nullable<DateTime<Utc>>,
    /// Distinct partner records that could not be stored (unreadable, not mappable to the
    /// Tidepool model, or dated implausibly) and were skipped, over the connection's life; a
    /// record read again is not counted again. Nonzero means the partner sends something we do
    /// not understand: the server log and the skipped-record list name the field and reason.
    pub records_skipped: u64,
    /// Records that came twice in one response with different contents (the last one kept).
    pub records_conflicting: u64,
}

impl From<Connection> for ConnectionJson {
    fn from(c: Connection) -> Self {
        Self {
            id: c.id.as_uuid(),
            user_id: c.user_id.to_string(),
            partner: c.partner.to_string(),
            state: c.state.into(),
            version: c.version,
            created_at: c.created_at,
            updated_at: c.updated_at,
            state_changed_at: c.state_changed_at,
            last_error: c.last_error.map(Into::into).into(),
            failure_count: c.failure_count,
            refresh_failures: c.refresh_failures,
            refresh_due_at: c.refresh_due_at.into(),
            refresh_outcome_unknown_at: c.refresh_outcome_unknown_at.into(),
            paused: c.paused,
            token_expires_at: c.token_expires_at.into(),
            scope: c.scope.into(),
            earliest_data_time: c.earliest_data_time.into(),
            latest_data_time: c.latest_data_time.into(),
            last_sync_at: c.last_sync_at.into(),
            next_sync_at: c.next_sync_at.into(),
            fetched_through: c.fetched_through.into(),
            failing_since: c.failing_since.into(),
            records_skipped: c.records_skipped,
            records_conflicting: c.records_conflicting,
        }
    }
}

/// One page of a user's data.
#[derive(Debug, Clone, Object)]
#[oai(rename = "DataPage", rename_all = "camelCase")]
pub struct DataPageJson {
    /// Tidepool datums (`type`, `time`, `deviceTime`, `origin`, type-specific fields, `id`),
    /// oldest first.
    pub data: Vec<Value>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

/// A connection in `authorizing` and where to send the user's browser.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Authorization", rename_all = "camelCase")]
pub struct AuthorizationJson {
    #[oai(flatten)]
    pub connection: ConnectionJson,
    /// The partner's consent page, with a fresh `state` and PKCE (S256) challenge. Single use;
    /// valid for a few minutes.
    pub authorize_url: String,
}

impl From<workflows::Authorization> for AuthorizationJson {
    fn from(a: workflows::Authorization) -> Self {
        Self {
            connection: a.connection.into(),
            authorize_url: a.authorize_url.to_string(),
        }
    }
}

/// One journal entry: a transition (or a note) of a connection.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ConnectionEvent", rename_all = "camelCase")]
pub struct EventJson {
    /// Position in this connection's journal, from 1.
    pub seq: i64,
    /// `null` for the entry that created the connection.
    pub from: Nullable<StateJson>,
    pub to: StateJson,
    /// `start_authorization`, `authorized`, `disconnect`, `note`, …
    pub event: String,
    /// `user:<id>`, `ops:<sub>`, `partner:<name>`, `system:<component>`.
    pub actor: String,
    pub reason: Nullable<String>,
    /// Non-secret structured details.
    pub details: serde_json::Value,
    pub at: DateTime<Utc>,
}

impl From<JournalEntry> for EventJson {
    fn from(e: JournalEntry) -> Self {
        Self {
            seq: e.seq,
            from: e.from.map(Into::into).into(),
            to: e.to.into(),
            event: e.event,
            actor: e.actor,
            reason: e.reason.into(),
            details: e.details,
            at: e.at,
        }
    }
}

/// Which data adapter a partner uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "PartnerKind", rename_all = "snake_case")]
pub enum PartnerKindJson {
    /// A Dexcom API v3 shaped CGM cloud.
    Dexcom,
    /// An insulin-pump cloud.
    Pump,
}

/// A configured partner.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Partner", rename_all = "camelCase")]
pub struct PartnerJson {
    /// Used in URLs and in `POST /v1/users/{userId}/connections`.
    pub name: String,
    pub display_name: String,
    pub kind: PartnerKindJson,
    /// The scopes requested at authorization.
    pub scopes: Vec<String>,
}

impl PartnerJson {
    pub fn new(name: &str, config: &PartnerConfig) -> Self {
        Self {
            name: name.to_owned(),
            display_name: config.display_name.clone(),
            kind: match config.kind {
                PartnerKind::Dexcom => PartnerKindJson::Dexcom,
                PartnerKind::Pump => PartnerKindJson::Pump,
            },
            scopes: config.scopes.clone(),
        }
    }
}

/// A configuration fault operators must look at (not charged to any user).
#[derive(Debug, Clone, Object)]
#[oai(rename = "OperatorAlert", rename_all = "camelCase")]
pub struct AlertJson {
    pub id: String,
    pub partner: String,
    pub connection_id: Nullable<String>,
    pub code: String,
    /// The latest occurrence's message (at most 500 characters).
    pub message: String,
    /// When the alert was first raised.
    pub created_at: DateTime<Utc>,
    /// Occurrences of this partner and code folded into the alert.
    pub count: u64,
    pub last_seen_at: DateTime<Utc>,
}

impl From<OperatorAlert> for AlertJson {
    fn from(a: OperatorAlert) -> Self {
        Self {
            id: a.id,
            partner: a.partner,
            connection_id: a.connection_id.into(),
            code: a.code,
            message: a.message,
            created_at: a.created_at,
            count: a.count,
            last_seen_at: a.last_seen_at,
        }
    }
}

/// A partner-side (RFC 7009) revocation owed for a disconnected connection. The token itself is
/// never shown.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Revocation", rename_all = "camelCase")]
pub struct RevocationJson {
    pub id: String,
    pub connection_id: String,
    pub partner: String,
    /// Attempts made so far.
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    /// The last attempt's error code, if it failed.
    pub last_error: Nullable<String>,
    pub completed_at: Nullable<DateTime<Utc>>,
    /// `revoked` (the partner confirmed) or `abandoned` (attempt limit reached); `null` while
    /// pending.
    pub outcome: Nullable<String>,
}

/// A JSON string, and only a string: poem-openapi's `String` also accepts numbers and booleans
/// (`{"partner": 42}` would read as `"42"`), which hides client bugs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictString(pub String);

impl Type for StrictString {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> std::borrow::Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromJSON for StrictString {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Ok(Self(s)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ToJSON for StrictString {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}
