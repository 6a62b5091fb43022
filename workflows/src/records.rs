//! Record types shared by the partner data adapters (which produce [`RawRecord`]s) and the
//! mapping to the Tidepool data model (which turns them into [`MappedRecord`]s).

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

/// A record that arrived but cannot be read as JSON (a number out of range, invalid UTF-8, a
/// lone surrogate, too large): skipped and counted, never a reason to drop its neighbours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Names the same bytes on every re-read (a digest), so a re-read does not count it again.
    pub key: String,
    /// What is wrong, in the parser's words; never the record's text.
    pub reason: String,
}

/// Where a data client hands each record of a window as it arrives.
pub type RecordSink<'a> = dyn FnMut(RecordKind, Result<serde_json::Value, Unreadable>) + Send + 'a;

/// One record in the Tidepool data model, ready to store (defined in the engine, which stores it).
pub use engine::model::MappedRecord;
