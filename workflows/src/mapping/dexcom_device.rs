//! Dexcom device record → `cgmSettings` (fields as Tidepool's Dexcom translation:
//! `manufacturers`, `model`, `transmitterId`, `units`, `defaultAlerts`, `scheduledAlerts`).
//! The record has no `recordId`: its id is `device:<transmitterId>:<lastUploadDate>` (one
//! settings datum per upload, like Tidepool), its `time` is `lastUploadDate`. The alert
//! schedules are kept verbatim in `payload` too; a malformed schedule costs only its mapped
//! alerts, never the record.

use serde_json::{Map, Value, json};

use super::{Datum, MappingContext, Reason, dexcom, num, text, time};
use crate::records::MappedRecord;

/// The derived partner record id.
pub(super) fn record_id(v: &Value) -> Result<String, Reason> {
    let uploaded = text(v, "lastUploadDate").ok_or("missing lastUploadDate")?;
    let uploaded = time::parse_utc(uploaded).ok_or("unparsable lastUploadDate")?;
    let transmitter = text(v, "transmitterId").unwrap_or("unknown");
    Ok(format!(
        "device:{transmitter}:{}",
        time::format_utc(uploaded)
    ))
}

pub(super) fn device(ctx: &MappingContext, v: &Value) -> Result<MappedRecord, Reason> {
    let id = record_id(v)?;
    let uploaded = text(v, "lastUploadDate")
        .and_then(time::parse_utc)
        .ok_or("unparsable lastUploadDate")?;
    let common = dexcom::with_time(v, id, uploaded, None);
    let schedules: &[Value] = v
        .get("alertSchedules")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let mut d = Datum::new("cgmSettings");
    d.set("manufacturers", json!(["Dexcom"]))
        .set_opt(
            "model",
            text(v, "transmitterGeneration").filter(|g| *g != "unknown"),
        )
        .set_opt("transmitterId", text(v, "transmitterId"))
        .set("units", settings_units(schedules));
    let is_default = |s: &Value| {
        s.pointer("/alertScheduleSettings/isDefaultSchedule")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let default = schedules.iter().find(|s| is_default(s));
    d.set_opt("defaultAlerts", default.and_then(alerts));
    let scheduled: Vec<Value> = schedules
        .iter()
        .filter(|s| !is_default(s))
        .filter_map(scheduled_alert)
        .collect();
    if !scheduled.is_empty() {
        d.set("scheduledAlerts", scheduled);
    }
    d.finish(ctx, common, false)
}

/// `mmol/L` when a level alert says so, else Dexcom's usual `mg/dL`.
fn settings_units(schedules: &[Value]) -> &'static str {
    let mmol = schedules
        .iter()
        .filter_map(|s| s.get("alertSettings").and_then(Value::as_array))
        .flatten()
        .any(|a| text(a, "unit") == Some("mmol/L"));
    if mmol { "mmol/L" } else { "mg/dL" }
}

/// A non-default schedule: name, days, start and end (ms after midnight), alerts.
fn scheduled_alert(schedule: &Value) -> Option<Value> {
    let settings = schedule.get("alertScheduleSettings")?;
    let mut out = Map::new();
    if let Some(name) = text(settings, "alertScheduleName") {
        out.insert("name".into(), name.into());
    }
    if let Some(days) = settings.get("daysOfWeek").and_then(Value::as_array) {
        let days: Vec<Value> = days
            .iter()
            .filter_map(Value::as_str)
            .map(|d| Value::from(d.to_ascii_lowercase()))
            .collect();
        out.insert("days".into(), days.into());
    }
    for (key, field) in [("start", "startTime"), ("end", "endTime")] {
        if let Some(ms) = text(settings, field).and_then(clock_ms) {
            out.insert(key.into(), ms.into());
        }
    }
    out.insert("alerts".into(), alerts(schedule)?);
    Some(Value::Object(out))
}

/// `HH:MM` → milliseconds after midnight.
fn clock_ms(s: &str) -> Option<i64> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some((h * 60 + m) * 60_000)
}

/// One schedule's alert settings as Tidepool `Alerts`; `None` without `isEnabled`, which
/// Tidepool requires. Duplicate settings: the last one wins. `fixedLow` and new names have no
/// Tidepool counterpart and stay in `payload`.
fn alerts(schedule: &Value) -> Option<Value> {
    let enabled = schedule
        .pointer("/alertScheduleSettings/isEnabled")
        .and_then(Value::as_bool)?;
    let mut out = Map::new();
    out.insert("enabled".into(), enabled.into());
    let settings = schedule.get("alertSettings").and_then(Value::as_array);
    for setting in settings.into_iter().flatten() {
        let Some(name) = text(setting, "alertName") else {
            continue;
        };
        let (key, field) = match name {
            "high" => ("high", "level"),
            "low" => ("low", "level"),
            "urgentLow" => ("urgentLow", "level"),
            "urgentLowSoon" => ("urgentLowPredicted", "level"),
            "rise" => ("rise", "rate"),
            "fall" => ("fall", "rate"),
            "noReadings" => ("noData", "duration"),
            "outOfRange" => ("outOfRange", "duration"),
            _ => continue,
        };
        let mut alert = Map::new();
        if let Some(on) = setting.get("enabled").and_then(Value::as_bool) {
            alert.insert("enabled".into(), on.into());
        }
        if let Some(minutes) = setting.get("snooze").and_then(Value::as_f64) {
            alert.insert(
                "snooze".into(),
                json!({"duration": num(minutes), "units": "minutes"}),
            );
        }
        let unit = text(setting, "unit").unwrap_or_default();
        let units = match field {
            "level" if unit.starts_with("mmol/L") => Some("mmol/L"),
            "level" if unit.starts_with("mg/dL") => Some("mg/dL"),
            "rate" if unit.starts_with("mmol/L") => Some("mmol/L/minute"),
            "rate" if unit.starts_with("mg/dL") => Some("mg/dL/minute"),
            "duration" => Some("minutes"),
            _ => None,
        };
        if let Some(value) = setting.get("value").and_then(Value::as_f64) {
            alert.insert(field.into(), num(value));
            if let Some(units) = units {
                alert.insert("units".into(), units.into());
            }
        }
        out.insert(key.into(), Value::Object(alert));
    }
    Some(Value::Object(out))
}
