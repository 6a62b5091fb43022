//! Pump limits and fallbacks, and garbage in every field of every kind.

use serde_json::json;

use super::{egv, event, map1, pump, run, skip1, with};
use crate::records::RecordKind;

#[test]
fn basal_limits() {
    let cases = [
        (
            json!({"deliveryType": "boost", "rate": 1, "duration": 1}),
            "unknown deliveryType",
        ),
        (
            json!({"deliveryType": null, "rate": 1, "duration": 1}),
            "missing deliveryType",
        ),
        (
            json!({"deliveryType": "scheduled", "duration": 1}),
            "missing rate",
        ),
        (
            json!({"deliveryType": "scheduled", "rate": 101, "duration": 1}),
            "rate out of range",
        ),
        (
            json!({"deliveryType": "scheduled", "rate": -0.1, "duration": 1}),
            "rate out of range",
        ),
        (
            json!({"deliveryType": "temp", "rate": 1, "percent": 11, "duration": 1}),
            "percent out of range",
        ),
        (
            json!({"deliveryType": "automated", "rate": 1, "duration": 604_800_001}),
            "duration out of range",
        ),
        (
            json!({"deliveryType": "temp", "rate": 1, "duration": 10, "expectedDuration": 9}),
            "expectedDuration out of range",
        ),
        (json!({"deliveryType": "suspend"}), "missing duration"),
        (
            json!({"deliveryType": "suspend", "duration": 1, "time": null}),
            "missing time",
        ),
        (
            json!({"deliveryType": "suspend", "duration": 1, "id": null}),
            "missing id",
        ),
    ];
    for (fields, reason) in cases {
        assert_eq!(skip1(RecordKind::Basal, pump(fields)).reason, reason);
    }
    // Percent only on temp, rate never on suspend.
    let r = map1(
        RecordKind::Basal,
        pump(json!({"deliveryType": "suspend", "rate": 1, "duration": 1})),
    );
    assert!(r.datum_value().get("rate").is_none());
    let r = map1(
        RecordKind::Basal,
        pump(json!({"deliveryType": "automated", "rate": 1, "percent": 1, "duration": 1})),
    );
    assert!(r.datum_value().get("percent").is_none());
}

#[test]
fn bolus_limits() {
    let cases = [
        (
            json!({"subType": "superBolus", "normal": 1}),
            "unknown subType",
        ),
        (
            json!({"subType": "normal", "normal": "two"}),
            "normal is not a number",
        ),
        (
            json!({"subType": "normal", "normal": 100.5}),
            "normal out of range",
        ),
        (
            json!({"subType": "normal", "normal": 2, "expectedNormal": 1}),
            "expectedNormal out of range",
        ),
        (json!({"subType": "automated"}), "missing normal"),
        (
            json!({"subType": "square", "extended": 1}),
            "missing duration",
        ),
        (
            json!({"subType": "square", "duration": 1}),
            "missing extended",
        ),
        (
            json!({"subType": "dual/square", "extended": 1, "duration": 1}),
            "missing normal",
        ),
        (
            json!({"subType": "dual/square", "normal": 1, "extended": 1, "duration": 86_400_001}),
            "duration out of range",
        ),
    ];
    for (fields, reason) in cases {
        assert_eq!(skip1(RecordKind::Bolus, pump(fields)).reason, reason);
    }
    // deliveryType names the sub type when subType is absent; an unknown deliveryContext is
    // left out (it stays in payload; docs/data-model.md#bolus).
    let raw = pump(json!({"deliveryType": "automated", "normal": 1, "deliveryContext": "phone"}));
    let r = map1(RecordKind::Bolus, raw);
    assert_eq!(r.datum_value()["subType"], "automated");
    assert!(r.datum_value().get("deliveryContext").is_none());
}

#[test]
fn pump_device_and_time_fallbacks() {
    let bolus = |fields| {
        map1(
            RecordKind::Bolus,
            with(&pump(json!({"subType": "normal", "normal": 1})), fields),
        )
        .datum_value()
    };
    // Only the offset: deviceTime derived. A time without seconds, with an offset: UTC.
    let d = bolus(json!({"deviceTime": "-", "time": "2026-01-01T07:00-05:00"}));
    assert_eq!(
        (&d["time"], &d["deviceTime"]),
        (
            &json!("2026-01-01T12:00:00Z"),
            &json!("2026-01-01T07:00:00")
        )
    );
    // A pump clock 2 minutes slow: drift; the stated offset is kept.
    let d = bolus(json!({"deviceTime": "2026-01-01T06:58:00"}));
    assert_eq!(
        (&d["timezoneOffset"], &d["clockDriftOffset"]),
        (&json!(-300), &json!(-120_000))
    );
    // Only deviceTime: the offset from the gap.
    let d = bolus(json!({"timezoneOffset": "-", "deviceTime": "2026-01-01T17:30:00"}));
    assert_eq!(d["timezoneOffset"], 330);
    // Neither: no local-time fields. Device id: deviceId, else serial, else the partner.
    let d = bolus(json!({"timezoneOffset": "-", "deviceTime": "-", "deviceId": "-"}));
    assert!(d.get("deviceTime").is_none() && d.get("timezoneOffset").is_none());
    assert_eq!(d["deviceId"], "00001234");
    assert_eq!(d["deviceName"], "ACME ACMEPumpModel123");
    let d = bolus(json!({"deviceId": "-", "serialNumber": "-"}));
    assert_eq!(d["deviceId"], "sandbox-pump_unknown");
}

#[test]
fn garbage_never_panics() {
    let junk = [json!(null), json!([1]), json!("egv"), json!(7)];
    for kind in [
        RecordKind::Egv,
        RecordKind::Event,
        RecordKind::Device,
        RecordKind::Basal,
    ] {
        let out = run(kind, &junk);
        assert_eq!(out.skipped.len(), 4);
        assert!(
            out.skipped
                .iter()
                .all(|s| s.reason == "record is not a JSON object")
        );
    }
    let samples = [
        (RecordKind::Egv, egv()),
        (RecordKind::Calibration, with(&egv(), json!({"trend": "-"}))),
        (
            RecordKind::Alert,
            with(&egv(), json!({"alertName": "high"})),
        ),
        (
            RecordKind::Event,
            event("carbs", json!(null), json!("4"), "grams"),
        ),
        (
            RecordKind::Event,
            event("exercise", json!("light"), json!("4"), "minutes"),
        ),
        (
            RecordKind::Device,
            json!({"lastUploadDate": "2026-01-01T00:00:00", "alertSchedules": [
            {"alertScheduleSettings": {"isEnabled": true, "startTime": "01:00"},
             "alertSettings": [{"alertName": "high", "value": 1, "snooze": 1}]}]}),
        ),
        (
            RecordKind::Basal,
            pump(json!({"deliveryType": "temp", "rate": 1, "percent": 1, "duration": 9})),
        ),
        (
            RecordKind::Bolus,
            pump(json!({"subType": "dual/square", "normal": 1, "extended": 1, "duration": 9})),
        ),
    ];
    let garbage = [
        json!(null),
        json!(""),
        json!("x"),
        json!(1e308),
        json!(-1),
        json!(i64::MIN),
        json!(u64::MAX),
        json!([]),
        json!({}),
        json!(true),
        json!("9999-12-31T23:59:59-23:59"),
    ];
    for (kind, sample) in samples {
        for key in sample.as_object().unwrap().keys() {
            for g in &garbage {
                let out = run(kind, &[with(&sample, json!({ key.as_str(): g }))]);
                let internal = out
                    .skipped
                    .iter()
                    .any(|s| s.reason == "internal mapping error");
                assert!(!internal, "{kind:?} {key}={g}");
            }
        }
    }
}
