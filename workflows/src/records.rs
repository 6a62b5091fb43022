//! Record types shared by the partner data adapters (which produce [`RawRecord`]s) and the
//! mapping to the Tidepool data model (which turns them into [`MappedRecord`]s).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What kind of partner record a raw JSON value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// Dexcom estimated glucose value (`/egvs`).
    Egv,
    /// Dexcom calibration (`/calibrations`).
    Calibration,
    /// Dexcom user event (`/events`): carbs, insulin, exercise, health, notes, bloodGlucose.
    Event,
    /// Dexcom alert (`/alerts`).
    Alert,
    /// Dexcom device record (`/devices`).
    Device,
    /// Pump basal segment.
    Basal,
    /// Pump bolus.
    Bolus,
}

/// One record as the partner sent it (untrusted JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    pub kind: RecordKind,
    pub value: serde_json::Value,
}

/// One record in the Tidepool data model, ready to store.
#[derive(Debug, Clone, PartialEq)]
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
    /// payload, type-specific fields).
    pub datum: serde_json::Value,
}
