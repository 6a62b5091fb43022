//! Partner records → Tidepool data (docs/data-model.md). Pure functions: no IO, no clock,
//! never a panic. One bad record is skipped and reported, the rest of the batch maps
//! (docs/partner-data.md); unknown values of hint-like enums (transmitter generation, trend,
//! display device) keep the record.
//!
//! # Layout
//! - `mod.rs`: the API, the datum builder shared by every kind, JSON field readers.
//! - `time.rs`: `time`, `deviceTime`, `timezoneOffset`, `clockDriftOffset`, `conversionOffset`.
//! - `dexcom.rs`: EGV → `cbg`, calibration → `deviceEvent/calibration`, alert → `alert`, and
//!   what every Dexcom record shares (ids, device fields, times).
//! - `dexcom_event.rs`: events → `food`, `insulin`, `physicalActivity`, `reportedState`,
//!   `smbg`; `eventStatus: deleted` retires.
//! - `dexcom_device.rs`: device → `cgmSettings`.
//! - `pump.rs`: basal → `basal`, bolus → `bolus`.
//!
//! # Every datum
//! `type`, `time`, `uploadId`, `deviceId` (non-empty), `origin {id, name, type: "service"}`,
//! `payload` (the partner record verbatim), and when the source allows `deviceTime`,
//! `timezoneOffset`, `clockDriftOffset`/`conversionOffset` (omitted when 0), `timezone`, and
//! the device fields `deviceManufacturer`, `deviceModel`, `deviceName`, `deviceSerialNumber`
//! (docs/data-model.md#device-fields). Numbers that are whole are written as JSON integers.

mod dexcom;
mod dexcom_device;
mod dexcom_event;
mod pump;
#[cfg(test)]
mod tests;
pub mod time;

use std::panic::{AssertUnwindSafe, catch_unwind};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use self::time::LocalTime;
use crate::records::{MappedRecord, RawRecord, RecordKind};

/// Tidepool limits `origin.id` to 100 characters.
const ORIGIN_ID_MAX: usize = 100;

/// What every datum of one connection shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingContext {
    /// The connection's continuous data set id (`uploadId`).
    pub upload_id: String,
    /// Partner name, e.g. `sandbox-cgm`.
    pub partner: String,
    /// `origin.name`, e.g. `com.dexcom.api` or the partner display name.
    pub origin_name: String,
}

/// The result of mapping a batch: everything that mapped, and what did not (and why).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapOutcome {
    pub records: Vec<MappedRecord>,
    pub skipped: Vec<Skipped>,
}

/// A record that could not be mapped. `reason` names the field and the problem, never a
/// health value ("value out of range", not the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub kind: RecordKind,
    pub partner_record_id: Option<String>,
    pub reason: String,
}

/// Maps a batch, record by record; never panics, never fails as a whole.
pub fn map_records(ctx: &MappingContext, raw: &[RawRecord]) -> MapOutcome {
    let mut out = MapOutcome::default();
    for record in raw {
        match map_record(ctx, record) {
            Ok(mapped) => out.records.push(mapped),
            Err(skipped) => out.skipped.push(skipped),
        }
    }
    out
}

/// Maps one record.
pub fn map_record(ctx: &MappingContext, raw: &RawRecord) -> Result<MappedRecord, Skipped> {
    let value = &raw.value;
    // Belt and braces: the mappers avoid panicking operations, but one record must never take
    // the batch down even if one slipped through.
    let result = catch_unwind(AssertUnwindSafe(|| {
        if !value.is_object() {
            return Err("record is not a JSON object".to_owned());
        }
        match raw.kind {
            RecordKind::Egv => dexcom::egv(ctx, value),
            RecordKind::Calibration => dexcom::calibration(ctx, value),
            RecordKind::Alert => dexcom::alert(ctx, value),
            RecordKind::Event => dexcom_event::event(ctx, value),
            RecordKind::Device => dexcom_device::device(ctx, value),
            RecordKind::Basal => pump::basal(ctx, value),
            RecordKind::Bolus => pump::bolus(ctx, value),
        }
    }))
    .unwrap_or_else(|_| Err("internal mapping error".to_owned()));
    result.map_err(|reason| Skipped {
        kind: raw.kind,
        partner_record_id: record_id(raw.kind, value),
        reason,
    })
}

/// The partner id of a raw record, when it has one (for [`Skipped`]).
fn record_id(kind: RecordKind, value: &Value) -> Option<String> {
    let key = match kind {
        RecordKind::Basal | RecordKind::Bolus => "id",
        RecordKind::Device => return dexcom_device::record_id(value).ok(),
        _ => "recordId",
    };
    text(value, key).map(str::to_owned)
}

/// Why a record was skipped.
pub(crate) type Reason = String;

/// A datum under construction: type-specific fields first, then [`Datum::finish`] adds the
/// common ones.
pub(crate) struct Datum {
    fields: Map<String, Value>,
}

/// Common fields of one record, gathered by the source-specific code.
pub(crate) struct Common<'a> {
    pub partner_record_id: String,
    pub time: DateTime<Utc>,
    pub device_id: String,
    pub local: Option<LocalTime>,
    /// IANA zone, when the partner states it.
    pub timezone: Option<String>,
    /// `deviceManufacturer`, `deviceModel`, `deviceName`, `deviceSerialNumber` when known.
    pub device: Vec<(&'static str, String)>,
    pub raw: &'a Value,
}

impl Datum {
    pub fn new(datum_type: &'static str) -> Self {
        let mut fields = Map::new();
        fields.insert("type".into(), datum_type.into());
        Datum { fields }
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    pub fn set_opt(&mut self, key: &str, value: Option<impl Into<Value>>) -> &mut Self {
        if let Some(v) = value {
            self.set(key, v);
        }
        self
    }

    pub fn finish(
        mut self,
        ctx: &MappingContext,
        common: Common<'_>,
        retired: bool,
    ) -> Result<MappedRecord, Reason> {
        let id = common.partner_record_id;
        if id.is_empty() || id.chars().count() > ORIGIN_ID_MAX {
            return Err("record id empty or longer than 100 characters".into());
        }
        // PostgreSQL text cannot hold NUL; no partner id has control characters.
        if id.chars().any(char::is_control) {
            return Err("record id contains control characters".into());
        }
        let datum_type = self
            .fields
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.set("time", time::format_utc(common.time))
            .set("uploadId", ctx.upload_id.as_str())
            .set("deviceId", common.device_id)
            .set(
                "origin",
                json!({"id": id, "name": ctx.origin_name, "type": "service"}),
            )
            .set("payload", common.raw.clone())
            .set_opt("timezone", common.timezone);
        if let Some(local) = common.local {
            self.set("deviceTime", local.device_time)
                .set("timezoneOffset", local.timezone_offset);
            if local.clock_drift_offset != 0 {
                self.set("clockDriftOffset", local.clock_drift_offset);
            }
            if local.conversion_offset != 0 {
                self.set("conversionOffset", local.conversion_offset);
            }
        }
        for (key, value) in common.device {
            self.set(key, value);
        }
        Ok(MappedRecord {
            partner_record_id: id,
            datum_type,
            time: common.time,
            retired,
            datum: MappedRecord::datum_of(&Value::Object(self.fields)),
        })
    }
}

/// A JSON number, as an integer when whole (so `120` stays `120`, not `120.0`).
pub(crate) fn num(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// A non-empty string field.
pub(crate) fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A number given as a JSON number or a numeric string (partners do both): `Ok(None)` when
/// absent or null (or an empty string), `Err` when present but not a finite number.
pub(crate) fn number(v: &Value, key: &str) -> Result<Option<f64>, Reason> {
    let parsed = match v.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match parsed {
        Some(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(format!("{key} is not a number")),
    }
}

/// A required number.
pub(crate) fn required_number(v: &Value, key: &str) -> Result<f64, Reason> {
    number(v, key)?.ok_or_else(|| format!("missing {key}"))
}

/// Checks `lo <= x <= hi`.
pub(crate) fn in_range(x: f64, lo: f64, hi: f64, key: &str) -> Result<f64, Reason> {
    if (lo..=hi).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{key} out of range"))
    }
}

/// Glucose units as Tidepool spells them; `None` for `unknown` and anything else.
pub(crate) fn glucose_units(unit: Option<&str>) -> Option<&'static str> {
    match unit? {
        "mg/dL" | "mg/dl" => Some("mg/dL"),
        "mmol/L" | "mmol/l" => Some("mmol/L"),
        _ => None,
    }
}

/// Tidepool's accepted blood glucose range for `units`.
pub(crate) fn glucose_limit(units: &str) -> f64 {
    if units == "mmol/L" { 55.0 } else { 1000.0 }
}
