//! Table-driven unit tests of the quirks and limits; golden data per kind are in
//! `workflows/tests/mapping.rs`.

mod dexcom;
mod pump;

use serde_json::{Value, json};

use super::{MapOutcome, MappingContext, Skipped, map_records};
use crate::records::{MappedRecord, RawRecord, RecordKind};

const TX: &str = "6f1c1e2d3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5";

fn run(kind: RecordKind, values: &[Value]) -> MapOutcome {
    let ctx = MappingContext {
        upload_id: "upload-1".into(),
        partner: "sandbox-pump".into(),
        origin_name: "Sandbox".into(),
    };
    let raw: Vec<RawRecord> = values
        .iter()
        .map(|v| RawRecord {
            kind,
            value: v.clone(),
        })
        .collect();
    map_records(&ctx, &raw)
}

fn map1(kind: RecordKind, v: Value) -> MappedRecord {
    let out = run(kind, &[v]);
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    out.records.into_iter().next().unwrap()
}

fn skip1(kind: RecordKind, v: Value) -> Skipped {
    let out = run(kind, &[v]);
    assert!(out.records.is_empty(), "{:?}", out.records);
    out.skipped.into_iter().next().unwrap()
}

/// `base` with `changes` applied; a `"-"` value removes the field.
fn with(base: &Value, changes: Value) -> Value {
    let mut v = base.clone();
    for (k, x) in changes.as_object().unwrap() {
        if x == "-" {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = x.clone();
        }
    }
    v
}

fn egv() -> Value {
    json!({
        "recordId": "egv-1", "systemTime": "2026-01-01T12:05:00",
        "displayTime": "2026-01-01T07:05:00-05:00", "transmitterId": TX,
        "transmitterTicks": 5_400, "value": 120, "status": null, "trend": "singleUp",
        "trendRate": 2.3, "unit": "mg/dL", "rateUnit": "mg/dL/min", "displayDevice": "iOS",
        "transmitterGeneration": "g7",
    })
}

fn event(event_type: &str, sub: Value, value: Value, unit: &str) -> Value {
    json!({"recordId": "ev-1", "systemTime": "2026-01-01T12:05:00",
        "displayTime": "2026-01-01T07:05:00-05:00", "eventStatus": "created",
        "eventType": event_type, "eventSubType": sub, "value": value, "unit": unit,
        "transmitterId": TX, "transmitterGeneration": "g7", "displayDevice": "iOS"})
}

fn pump(fields: Value) -> Value {
    with(
        &json!({"id": "p-1", "time": "2026-01-01T12:00:00Z", "deviceId": "ACMEPumpCo-00001234",
            "serialNumber": "00001234", "deviceModel": "ACMEPumpModel123",
            "deviceManufacturer": "ACME", "timezone": "America/New_York",
            "timezoneOffset": -300, "deviceTime": "2026-01-01T07:00:00"}),
        fields,
    )
}
