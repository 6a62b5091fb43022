//! Dexcom v3 records (docs/dexcom.md#records): what every record shares, EGV → `cbg`,
//! calibration → `deviceEvent/calibration`, alert → `alert`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{
    Common, Datum, MappingContext, Reason, glucose_limit, glucose_units, num, number,
    required_number, text, time,
};
use crate::records::MappedRecord;

/// `sampleInterval` of Dexcom EGVs (every 5 minutes), ms.
const SAMPLE_INTERVAL_MS: i64 = 300_000;

/// Out-of-range pinning (Tidepool's Dexcom translation): a reading below `low` is stored as
/// `low - step` with an annotation, above `high` as `high + step`. mmol/L uses 2.2 and 22.2
/// (40 and 400 mg/dL converted and rounded to one decimal), with 0.1 steps.
struct Pinning {
    low: f64,
    high: f64,
    step: f64,
}

fn pinning(units: &str) -> Pinning {
    if units == "mmol/L" {
        Pinning {
            low: 2.2,
            high: 22.2,
            step: 0.1,
        }
    } else {
        Pinning {
            low: 40.0,
            high: 400.0,
            step: 1.0,
        }
    }
}

/// The common fields of a Dexcom record whose time is `systemTime`/`displayTime`.
pub(super) fn common(v: &Value) -> Result<Common<'_>, Reason> {
    let id = text(v, "recordId").ok_or("missing recordId")?;
    let system = text(v, "systemTime").ok_or("missing systemTime")?;
    let time = time::parse_utc(system).ok_or("unparsable systemTime")?;
    // A missing or unreadable displayTime costs the local-time fields, not the record.
    let local = text(v, "displayTime")
        .and_then(time::parse)
        .and_then(|display| time::from_display(time, &display));
    Ok(with_time(v, id.to_owned(), time, local))
}

/// Common fields with the time already decided (the device record has no `systemTime`).
pub(super) fn with_time(
    v: &Value,
    partner_record_id: String,
    time: DateTime<Utc>,
    local: Option<time::LocalTime>,
) -> Common<'_> {
    Common {
        partner_record_id,
        time,
        device_id: device_id(v),
        local,
        timezone: None,
        device: device_fields(v),
        raw: v,
    }
}

/// `Dexcom_<transmitterGeneration>_<transmitterId>`, `unknown` for a missing part; stable for
/// a transmitter, whatever its generation string (new values are kept:
/// docs/data-model.md#unknown-values).
pub(super) fn device_id(v: &Value) -> String {
    let generation: String = text(v, "transmitterGeneration")
        .unwrap_or("unknown")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-");
    let generation = if generation.is_empty() {
        "unknown".to_owned()
    } else {
        generation
    };
    let transmitter = text(v, "transmitterId").unwrap_or("unknown");
    format!("Dexcom_{generation}_{transmitter}")
}

/// The common device fields (docs/data-model.md#device-fields): Dexcom is the manufacturer, the
/// generation the model (when Dexcom says which); the transmitter id is a hash, not a serial
/// number.
fn device_fields(v: &Value) -> Vec<(&'static str, String)> {
    let model = text(v, "transmitterGeneration").filter(|g| *g != "unknown");
    let mut fields = vec![("deviceManufacturer", "Dexcom".to_owned())];
    match model {
        Some(m) => {
            fields.push(("deviceModel", m.to_owned()));
            fields.push(("deviceName", format!("Dexcom {m}")));
        }
        None => fields.push(("deviceName", "Dexcom".to_owned())),
    }
    fields
}

/// Dexcom trend → Tidepool trend; `none`, `unknown`, `notComputable`, `rateOutOfRange` and new
/// values give no trend.
fn trend(t: &str) -> Option<&'static str> {
    Some(match t {
        "doubleUp" => "rapidRise",
        "singleUp" => "moderateRise",
        "fortyFiveUp" => "slowRise",
        "flat" => "constant",
        "fortyFiveDown" => "slowFall",
        "singleDown" => "moderateFall",
        "doubleDown" => "rapidFall",
        _ => return None,
    })
}

/// A glucose value and its units, checked against Tidepool's range (0–1000 mg/dL,
/// 0–55 mmol/L); unknown units skip.
fn glucose(v: &Value) -> Result<(f64, &'static str), Reason> {
    let units = glucose_units(text(v, "unit")).ok_or("unknown unit")?;
    let value = required_number(v, "value")?;
    checked_glucose(value, units)
}

fn checked_glucose(value: f64, units: &'static str) -> Result<(f64, &'static str), Reason> {
    if !(0.0..=glucose_limit(units)).contains(&value) {
        return Err("value out of range".into());
    }
    Ok((value, units))
}

/// EGV → `cbg`.
pub(super) fn egv(ctx: &MappingContext, v: &Value) -> Result<MappedRecord, Reason> {
    let common = common(v)?;
    let units = glucose_units(text(v, "unit")).ok_or("unknown unit")?;
    let pin = pinning(units);
    // A reading without a value but with `status` low/high is a sensor extreme: pinned below
    // or above the range like any other.
    let value = match (number(v, "value")?, text(v, "status")) {
        (Some(x), _) => x,
        (None, Some("low")) => pin.low - pin.step,
        (None, Some("high")) => pin.high + pin.step,
        (None, _) => return Err("missing value".into()),
    };
    let (value, units) = checked_glucose(value, units)?;
    let mut d = Datum::new("cbg");
    d.set("units", units)
        .set("sampleInterval", SAMPLE_INTERVAL_MS);
    let (stored, annotation) = if value < pin.low {
        (pin.low - pin.step, Some("low"))
    } else if value > pin.high {
        (pin.high + pin.step, Some("high"))
    } else {
        (value, None)
    };
    d.set("value", num(round_tenth(stored)));
    if let Some(side) = annotation {
        let threshold = if side == "low" { pin.low } else { pin.high };
        d.set(
            "annotations",
            json!([{"code": "bg/out-of-range", "value": side, "threshold": num(threshold)}]),
        );
    }
    d.set_opt("trend", text(v, "trend").and_then(trend));
    // A trend rate that is null or not a number is left out; the reading is kept.
    if let Some(rate) = number(v, "trendRate").ok().flatten() {
        let rate_units = match text(v, "rateUnit") {
            Some("mg/dL/min") => "mg/dL/minute",
            Some("mmol/L/min") => "mmol/L/minute",
            // Default: the sample value's unit per minute (docs/data-model.md#cbg).
            _ if units == "mmol/L" => "mmol/L/minute",
            _ => "mg/dL/minute",
        };
        d.set("trendRate", num(rate))
            .set("trendRateUnits", rate_units);
    }
    d.set_opt("backfilled", v.get("backfilled").and_then(Value::as_bool));
    d.finish(ctx, common, false)
}

/// `2.2 - 0.1` is `2.1000000000000001` in binary; pinned values are shown as sent.
fn round_tenth(x: f64) -> f64 {
    let r = (x * 10.0).round() / 10.0;
    if (r - x).abs() < 1e-9 { r } else { x }
}

/// Calibration → `deviceEvent` subType `calibration`.
pub(super) fn calibration(ctx: &MappingContext, v: &Value) -> Result<MappedRecord, Reason> {
    let common = common(v)?;
    let (value, units) = glucose(v)?;
    let mut d = Datum::new("deviceEvent");
    d.set("subType", "calibration")
        .set("value", num(value))
        .set("units", units);
    d.finish(ctx, common, false)
}

/// Alert → `alert`, the type the Tidepool model has for Dexcom alerts (and Tidepool's own
/// Dexcom translation uses; docs/data-model.md#alert): `name` = `alertName` (new names kept),
/// `issuedTime` = `time`. Tidepool's `alert` has no state field; `alertState` stays in
/// `payload`. Not `deviceEvent/alarm`: its `alarmType` enum is about pump alarms (occlusion,
/// low insulin…) and would lose the CGM alert's name.
pub(super) fn alert(ctx: &MappingContext, v: &Value) -> Result<MappedRecord, Reason> {
    let common = common(v)?;
    let name = text(v, "alertName").ok_or("missing alertName")?;
    if name.chars().count() > 100 {
        return Err("alertName longer than 100 characters".into());
    }
    let mut d = Datum::new("alert");
    d.set("name", name)
        .set("issuedTime", time::format_utc(common.time));
    d.finish(ctx, common, false)
}
