//! Pump records (the sandbox pump cloud's format: docs/data-model.md#pump-records) → `basal`
//! and `bolus`, with the model's ranges (docs/data-model.md#types). A missing or
//! out-of-range amount, rate or duration skips the record; an unknown `deliveryType` or
//! `subType` too (Tidepool requires both to be known).
//!
//! Times: `time` (RFC 3339) is the instant; the record's own `deviceTime`, `timezoneOffset`
//! (minutes) and `timezone` are kept (see `time::from_device`).

use serde_json::Value;

use super::{Common, Datum, MappingContext, Reason, in_range, num, number, text, time};
use crate::records::MappedRecord;

/// Rates and amounts: 0–100 (U/h, U).
const INSULIN_MAX: f64 = 100.0;
/// Basal durations: up to 7 days, ms.
const BASAL_DURATION_MAX: f64 = 604_800_000.0;
/// Extended bolus durations: up to 1 day, ms.
const BOLUS_DURATION_MAX: f64 = 86_400_000.0;
/// Temp basal `percent`: a fraction of the scheduled rate, 0–10 (0–1000 %).
const PERCENT_MAX: f64 = 10.0;
/// Tidepool's `deliveryContext` values.
const DELIVERY_CONTEXTS: [&str; 4] = ["device", "algorithm", "remote", "undetermined"];

/// Fields common to every pump record.
fn common<'a>(ctx: &MappingContext, v: &'a Value) -> Result<Common<'a>, Reason> {
    let id = text(v, "id").ok_or("missing id")?;
    let time = text(v, "time").ok_or("missing time")?;
    let time = time::parse_utc(time).ok_or("unparsable time")?;
    // Unreadable local-time fields cost those fields, not the record.
    let device_time = text(v, "deviceTime").and_then(time::parse).map(|t| t.local);
    let offset = v
        .get("timezoneOffset")
        .and_then(Value::as_f64)
        .filter(|m| m.fract() == 0.0 && m.abs() <= 1e6)
        .map(|m| m as i64);
    let serial = text(v, "deviceSerialNumber").or_else(|| text(v, "serialNumber"));
    let device_id = text(v, "deviceId")
        .or(serial)
        .map_or_else(|| format!("{}_unknown", ctx.partner), str::to_owned);
    let manufacturer = text(v, "deviceManufacturer");
    let model = text(v, "deviceModel");
    // Without a display name, combine manufacturer and model (docs/data-model.md#device-fields).
    let name = text(v, "deviceName").map(str::to_owned).or_else(|| {
        let parts: Vec<&str> = [manufacturer, model].into_iter().flatten().collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    });
    let device = [
        ("deviceManufacturer", manufacturer.map(str::to_owned)),
        ("deviceModel", model.map(str::to_owned)),
        ("deviceName", name),
        ("deviceSerialNumber", serial.map(str::to_owned)),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
    .collect();
    Ok(Common {
        partner_record_id: id.to_owned(),
        time,
        device_id,
        local: time::from_device(time, device_time, offset),
        timezone: text(v, "timezone").map(str::to_owned),
        device,
        raw: v,
    })
}

/// A duration in ms within `[min, max]`, as an integer.
fn duration(v: &Value, key: &str, min: f64, max: f64) -> Result<Option<i64>, Reason> {
    number(v, key)?
        .map(|ms| in_range(ms, min, max, key).map(|ms| ms.round() as i64))
        .transpose()
}

/// An amount within `[min, 100]`.
fn amount(v: &Value, key: &str, min: f64) -> Result<Option<f64>, Reason> {
    number(v, key)?
        .map(|x| in_range(x, min, INSULIN_MAX, key))
        .transpose()
}

/// Basal segment → `basal`.
pub(super) fn basal(ctx: &MappingContext, v: &Value) -> Result<MappedRecord, Reason> {
    let common = common(ctx, v)?;
    let delivery = text(v, "deliveryType").ok_or("missing deliveryType")?;
    let delivery = ["scheduled", "temp", "automated", "suspend"]
        .into_iter()
        .find(|d| *d == delivery)
        .ok_or("unknown deliveryType")?;
    let dur = duration(v, "duration", 0.0, BASAL_DURATION_MAX)?.ok_or("missing duration")?;
    let expected = duration(v, "expectedDuration", dur as f64, BASAL_DURATION_MAX)?;
    let mut d = Datum::new("basal");
    d.set("deliveryType", delivery)
        .set("duration", dur)
        .set_opt("expectedDuration", expected);
    if delivery != "suspend" {
        let rate = amount(v, "rate", 0.0)?.ok_or("missing rate")?;
        d.set("rate", num(rate))
            .set_opt("scheduleName", text(v, "scheduleName"));
    }
    if delivery == "temp" {
        let percent = number(v, "percent")?
            .map(|p| in_range(p, 0.0, PERCENT_MAX, "percent"))
            .transpose()?;
        d.set_opt("percent", percent.map(num));
    }
    if matches!(delivery, "scheduled" | "temp") {
        d.set_opt("insulinFormulation", object(v, "insulinFormulation"));
    }
    if delivery != "scheduled" {
        d.set_opt("suppressed", object(v, "suppressed"));
    }
    d.finish(ctx, common, false)
}

/// Bolus → `bolus`: `normal`, `square`, `dual/square` (a combination bolus: both sets of
/// fields) or `automated`. The sub type is `subType`, or else `deliveryType`
/// (docs/data-model.md#bolus).
pub(super) fn bolus(ctx: &MappingContext, v: &Value) -> Result<MappedRecord, Reason> {
    let common = common(ctx, v)?;
    let sub = text(v, "subType")
        .or_else(|| text(v, "deliveryType"))
        .ok_or("missing subType")?;
    let sub = ["normal", "square", "dual/square", "automated"]
        .into_iter()
        .find(|s| *s == sub)
        .ok_or("unknown subType")?;
    let mut d = Datum::new("bolus");
    d.set("subType", sub);
    if sub != "square" {
        let normal = amount(v, "normal", 0.0)?.ok_or("missing normal")?;
        let expected = amount(v, "expectedNormal", normal)?;
        d.set("normal", num(normal))
            .set_opt("expectedNormal", expected.map(num));
    }
    if matches!(sub, "square" | "dual/square") {
        let extended = amount(v, "extended", 0.0)?.ok_or("missing extended")?;
        let expected = amount(v, "expectedExtended", extended)?;
        let dur = duration(v, "duration", 0.0, BOLUS_DURATION_MAX)?.ok_or("missing duration")?;
        let expected_dur = duration(v, "expectedDuration", dur as f64, BOLUS_DURATION_MAX)?;
        d.set("extended", num(extended))
            .set_opt("expectedExtended", expected.map(num))
            .set("duration", dur)
            .set_opt("expectedDuration", expected_dur);
    }
    // An unknown delivery context is a hint, not a reason to drop a dose; it stays in payload.
    let context = text(v, "deliveryContext").filter(|c| DELIVERY_CONTEXTS.contains(c));
    d.set_opt("deliveryContext", context)
        .set_opt("insulinFormulation", object(v, "insulinFormulation"));
    d.finish(ctx, common, false)
}

fn object(v: &Value, key: &str) -> Option<Value> {
    v.get(key).filter(|x| x.is_object()).cloned()
}
