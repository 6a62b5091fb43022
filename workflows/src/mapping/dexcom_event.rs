//! Dexcom user events → `food`, `insulin`, `physicalActivity`, `reportedState`, `smbg`
//! (docs/data-model.md#types; state names and intensities as Tidepool's Dexcom translation).
//!
//! `value` may be a string (the schema) or a number (one documented example): both are read;
//! a present value that does not parse skips the record. `eventStatus`: `created` and
//! `updated` map normally (same `recordId`, so storage updates in place); `deleted` maps with
//! `retired: true`, and a deleted event whose value no longer parses still retires (the value
//! is then left out) so a deletion is never lost.

use serde_json::{Value, json};

use super::{
    Datum, MappingContext, Reason, dexcom, glucose_limit, glucose_units, in_range, num, number,
    text,
};
use crate::records::MappedRecord;

/// Tidepool's limits: carbohydrate net 0–1000 g, insulin dose 0–250 U, activity ≤ 1 week.
const CARBS_MAX: f64 = 1000.0;
const DOSE_MAX: f64 = 250.0;
const DURATION_MAX_MIN: f64 = 7.0 * 24.0 * 60.0;
/// Tidepool limits each note to 1000 characters.
const NOTE_MAX: usize = 1000;

pub(super) fn event(ctx: &MappingContext, v: &Value) -> Result<MappedRecord, Reason> {
    let common = dexcom::common(v)?;
    let retired = match v.get("eventStatus") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "created" || s == "updated" => false,
        Some(Value::String(s)) if s == "deleted" => true,
        // Unknown: whether the event still stands cannot be told, so it is not stored.
        Some(_) => return Err("unknown eventStatus".into()),
    };
    let event_type = text(v, "eventType").ok_or("missing eventType")?;
    let sub_type = text(v, "eventSubType");
    // The numeric value (not for health and notes, whose value is text).
    let value = || match number(v, "value") {
        Ok(x) => Ok(x),
        Err(_) if retired => Ok(None),
        Err(reason) => Err(reason),
    };
    // Required for carbs, insulin and bloodGlucose (unless deleted).
    let required = || -> Result<Option<f64>, Reason> {
        match value()? {
            None if !retired => Err("missing value".into()),
            other => Ok(other),
        }
    };
    let checked = |x: f64, max: f64| -> Result<Option<f64>, Reason> {
        match in_range(x, 0.0, max, "value") {
            Ok(x) => Ok(Some(x)),
            Err(_) if retired => Ok(None),
            Err(reason) => Err(reason),
        }
    };
    let mut d;
    match event_type {
        "carbs" => {
            d = Datum::new("food");
            if let Some(x) = required()?
                && let Some(net) = checked(x, CARBS_MAX)?
            {
                d.set(
                    "nutrition",
                    json!({"carbohydrate": {"net": num(net), "units": "grams"}}),
                );
            }
        }
        "insulin" => {
            d = Datum::new("insulin");
            if let Some(x) = required()?
                && let Some(total) = checked(x, DOSE_MAX)?
            {
                d.set("dose", json!({"total": num(total), "units": "Units"}));
            }
            let acting = match sub_type {
                Some("fastActing") => Some("rapid"),
                Some("longActing") => Some("long"),
                _ => None,
            };
            if let Some(acting) = acting {
                d.set("formulation", json!({"simple": {"actingType": acting}}));
            }
        }
        "exercise" => {
            d = Datum::new("physicalActivity");
            // Duration is optional: an exercise event without one is still an activity.
            if let Some(x) = value()?
                && let Some(minutes) = checked(x, DURATION_MAX_MIN)?
            {
                d.set(
                    "duration",
                    json!({"value": num(minutes), "units": "minutes"}),
                );
            }
            let intensity = match sub_type {
                Some("light") => Some("low"),
                Some("medium") => Some("medium"),
                Some("heavy") => Some("high"),
                _ => None,
            };
            d.set_opt("reportedIntensity", intensity);
        }
        "health" | "notes" => {
            d = Datum::new("reportedState");
            if let Some(sub) = sub_type {
                d.set("states", json!([state(sub)]));
            }
            if let Some(note) = note(v) {
                d.set("notes", json!([note]));
            }
        }
        "bloodGlucose" => {
            d = Datum::new("smbg");
            let units = glucose_units(text(v, "unit")).ok_or("unknown unit")?;
            d.set("subType", "manual").set("units", units);
            if let Some(x) = required()?
                && let Some(bg) = checked(x, glucose_limit(units))?
            {
                d.set("value", num(bg));
            }
        }
        _ => return Err("unsupported eventType".into()),
    }
    d.finish(ctx, common, retired)
}

/// Dexcom health subtype → Tidepool reported state; a new subtype is kept as `other`.
fn state(sub: &str) -> Value {
    let known = match sub {
        "illness" => "illness",
        "stress" => "stress",
        "highSymptoms" => "hyperglycemiaSymptoms",
        "lowSymptoms" => "hypoglycemiaSymptoms",
        "cycle" => "cycle",
        "alcohol" => "alcohol",
        other => return json!({"state": "other", "stateOther": truncate(other, 100)}),
    };
    json!({"state": known})
}

/// The free text of a health or notes event (its `value`), if any.
fn note(v: &Value) -> Option<String> {
    let text = match v.get("value")? {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then(|| truncate(&text, NOTE_MAX))
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
