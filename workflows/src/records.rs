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

/// One record in the Tidepool data model, ready to store (defined in the engine, which stores it).
pub use engine::model::MappedRecord;
