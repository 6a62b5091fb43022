//! Dexcom quirks: trends, out-of-range readings, units, generations, times, event values and
//! statuses.

use serde_json::{Value, json};

use super::{TX, egv, event, map1, skip1, with};
use crate::records::RecordKind;

#[test]
fn every_dexcom_trend() {
    let cases = [
        ("doubleUp", Some("rapidRise")),
        ("singleUp", Some("moderateRise")),
        ("fortyFiveUp", Some("slowRise")),
        ("flat", Some("constant")),
        ("fortyFiveDown", Some("slowFall")),
        ("singleDown", Some("moderateFall")),
        ("doubleDown", Some("rapidFall")),
        ("none", None),
        ("unknown", None),
        ("notComputable", None),
        ("rateOutOfRange", None),
        ("sideways", None),
    ];
    for (dexcom, tidepool) in cases {
        let r = map1(RecordKind::Egv, with(&egv(), json!({ "trend": dexcom })));
        let datum = r.datum_value();
        let trend = datum.get("trend").and_then(Value::as_str);
        assert_eq!(trend, tidepool, "{dexcom}");
    }
    // A null trend rate (notComputable readings) drops trendRate and its units only.
    let r = map1(
        RecordKind::Egv,
        with(&egv(), json!({"trend": null, "trendRate": null})),
    );
    assert!(
        r.datum_value().get("trendRate").is_none()
            && r.datum_value().get("trendRateUnits").is_none()
    );
}

#[test]
fn out_of_range_readings_are_pinned_and_annotated() {
    let ann = |v: &str, t: Value| json!([{"code": "bg/out-of-range", "value": v, "threshold": t}]);
    let cases = [
        ("mg/dL", json!(30), json!(39), Some(ann("low", json!(40)))),
        ("mg/dL", json!(40), json!(40), None),
        ("mg/dL", json!(400), json!(400), None),
        (
            "mg/dL",
            json!(450),
            json!(401),
            Some(ann("high", json!(400))),
        ),
        (
            "mmol/L",
            json!(1.5),
            json!(2.1),
            Some(ann("low", json!(2.2))),
        ),
        ("mmol/L", json!(6.7), json!(6.7), None),
        (
            "mmol/L",
            json!(25),
            json!(22.3),
            Some(ann("high", json!(22.2))),
        ),
    ];
    for (unit, value, stored, annotations) in cases {
        let raw = with(&egv(), json!({"unit": unit, "value": value}));
        let r = map1(RecordKind::Egv, raw);
        assert_eq!(
            (&r.datum_value()["units"], &r.datum_value()["value"]),
            (&json!(unit), &stored)
        );
        assert_eq!(
            r.datum_value().get("annotations"),
            annotations.as_ref(),
            "{unit} {value}"
        );
    }
    // Beyond what Tidepool accepts (0–1000 mg/dL, 0–55 mmol/L): skipped, value not named.
    for (unit, value) in [("mg/dL", 1001), ("mg/dL", -1), ("mmol/L", 56)] {
        let s = skip1(
            RecordKind::Egv,
            with(&egv(), json!({"unit": unit, "value": value})),
        );
        assert_eq!(s.reason, "value out of range");
        assert_eq!(s.partner_record_id.as_deref(), Some("egv-1"));
    }
    // The status quirk: no value but status low/high is a pinned reading.
    let r = map1(
        RecordKind::Egv,
        with(&egv(), json!({"value": null, "status": "high"})),
    );
    assert_eq!(r.datum_value()["value"], 401);
    assert_eq!(r.datum_value()["annotations"][0]["value"], "high");
    let s = skip1(RecordKind::Egv, with(&egv(), json!({ "value": null })));
    assert_eq!(s.reason, "missing value");
}

#[test]
fn units_generations_and_backfill() {
    let s = skip1(RecordKind::Egv, with(&egv(), json!({"unit": "unknown"})));
    assert_eq!(
        (s.kind, s.reason.as_str()),
        (RecordKind::Egv, "unknown unit")
    );
    let r = map1(
        RecordKind::Egv,
        with(
            &egv(),
            json!({"unit": "mmol/l", "value": 5.5, "rateUnit": "unknown"}),
        ),
    );
    assert_eq!(r.datum_value()["units"], "mmol/L");
    // Without a known rate unit: the value's unit per minute (docs/data-model.md#cbg).
    assert_eq!(r.datum_value()["trendRateUnits"], "mmol/L/minute");
    for (generation, device_id, model) in [
        ("g6 pro", format!("Dexcom_g6-pro_{TX}"), Some("g6 pro")),
        ("g715day", format!("Dexcom_g715day_{TX}"), Some("g715day")),
        ("unknown", format!("Dexcom_unknown_{TX}"), None),
    ] {
        let raw = with(&egv(), json!({ "transmitterGeneration": generation }));
        let r = map1(RecordKind::Egv, raw);
        assert_eq!(r.datum_value()["deviceId"], device_id);
        assert_eq!(
            r.datum_value().get("deviceModel").and_then(Value::as_str),
            model
        );
    }
    let raw = with(
        &egv(),
        json!({"transmitterId": "", "transmitterGeneration": "-"}),
    );
    assert_eq!(
        map1(RecordKind::Egv, raw).datum_value()["deviceId"],
        "Dexcom_unknown_unknown"
    );
    let r = map1(RecordKind::Egv, with(&egv(), json!({ "backfilled": true })));
    assert_eq!(r.datum_value()["backfilled"], true);
}

#[test]
fn display_time_with_and_without_offset() {
    let local = |display: Value| {
        map1(
            RecordKind::Egv,
            with(&egv(), json!({"displayTime": display})),
        )
        .datum_value()
    };
    let fields = |d: &Value| {
        [
            "deviceTime",
            "timezoneOffset",
            "clockDriftOffset",
            "conversionOffset",
        ]
        .map(|k| d.get(k).cloned().unwrap_or(Value::Null))
    };
    let cases = [
        // Receiver: no zone, clock 90 s fast, UTC−5: offset from the gap, drift in ms.
        (
            "2026-01-01T07:06:30",
            json!(["2026-01-01T07:06:30", -300, 90_000, null]),
        ),
        // Receiver set to the wrong day: the whole day goes to conversionOffset.
        (
            "2026-01-02T07:05:00",
            json!(["2026-01-02T07:05:00", -300, null, 86_400_000]),
        ),
        // App: the display time's own offset, half-hour zones included.
        (
            "2026-01-01T17:35:00+05:30",
            json!(["2026-01-01T17:35:00", 330, null, null]),
        ),
        // No seconds.
        (
            "2026-01-01T07:05",
            json!(["2026-01-01T07:05:00", -300, null, null]),
        ),
        // An offset with seconds: whole minutes, the seconds in drift.
        (
            "2026-01-01T05:05:02-06:59:58",
            json!(["2026-01-01T05:05:02", -420, 2_000, null]),
        ),
    ];
    for (display, expected) in cases {
        assert_eq!(json!(fields(&local(json!(display)))), expected, "{display}");
    }
    let r = map1(
        RecordKind::Egv,
        with(&egv(), json!({"systemTime": "2021-02-03T14:15Z"})),
    );
    assert_eq!(r.datum_value()["time"], "2021-02-03T14:15:00Z");
    // No or garbled displayTime: the reading is kept without local-time fields.
    for display in [json!("-"), json!("noon"), json!(null)] {
        assert_eq!(
            json!(fields(&local(display))),
            json!([null, null, null, null])
        );
    }
}

#[test]
fn event_values_and_statuses() {
    // String and number values map the same.
    let s = map1(
        RecordKind::Event,
        event("carbs", json!(null), json!("12.5"), "grams"),
    );
    let n = map1(
        RecordKind::Event,
        event("carbs", json!(null), json!(12.5), "grams"),
    );
    assert_eq!(s.datum_value()["nutrition"], n.datum_value()["nutrition"]);
    // Unparsable, missing, out of range, unknown: that record is skipped.
    let cases = [
        (
            event("carbs", json!(null), json!("lots"), "grams"),
            "value is not a number",
        ),
        (
            event("insulin", json!(null), json!(null), "units"),
            "missing value",
        ),
        (
            event("insulin", json!(null), json!(900), "units"),
            "value out of range",
        ),
        (
            event("bloodGlucose", json!(null), json!(90), "unknown"),
            "unknown unit",
        ),
        (
            event("unknown", json!(null), json!(1), "unknown"),
            "unsupported eventType",
        ),
    ];
    for (raw, reason) in cases {
        let s = skip1(RecordKind::Event, raw);
        assert_eq!(
            (s.reason.as_str(), s.partner_record_id.as_deref()),
            (reason, Some("ev-1"))
        );
    }
    // Optional value, subtype kept as `other`, number as note text.
    let r = map1(
        RecordKind::Event,
        event("exercise", json!(null), json!(null), "minutes"),
    );
    assert!(
        r.datum_value().get("duration").is_none()
            && r.datum_value().get("reportedIntensity").is_none()
    );
    let r = map1(
        RecordKind::Event,
        event("health", json!("jetLag"), json!(7), "unknown"),
    );
    assert_eq!(
        r.datum_value()["states"],
        json!([{"state": "other", "stateOther": "jetLag"}])
    );
    assert_eq!(r.datum_value()["notes"], json!(["7"]));
    // updated → same partner id, not retired; deleted → retired, even with a junk value.
    let created = event("carbs", json!(null), json!("40"), "grams");
    let updated = with(&created, json!({"eventStatus": "updated", "value": "47"}));
    let updated = map1(RecordKind::Event, updated);
    assert_eq!(
        (updated.partner_record_id.as_str(), updated.retired),
        ("ev-1", false)
    );
    assert_eq!(
        updated.datum_value()["nutrition"]["carbohydrate"]["net"],
        47
    );
    let deleted = map1(
        RecordKind::Event,
        with(&created, json!({"eventStatus": "deleted"})),
    );
    assert_eq!(
        (deleted.partner_record_id.as_str(), deleted.retired),
        ("ev-1", true)
    );
    let junk = with(&created, json!({"eventStatus": "deleted", "value": "?"}));
    let junk = map1(RecordKind::Event, junk);
    assert!(junk.retired && junk.datum_value().get("nutrition").is_none());
    let missing = map1(
        RecordKind::Event,
        with(&created, json!({"eventStatus": "-"})),
    );
    assert!(!missing.retired);
    let archived = with(&created, json!({"eventStatus": "archived"}));
    assert_eq!(
        skip1(RecordKind::Event, archived).reason,
        "unknown eventStatus"
    );
}

#[test]
fn health_states_and_intensities() {
    let states = [
        ("illness", "illness"),
        ("stress", "stress"),
        ("highSymptoms", "hyperglycemiaSymptoms"),
        ("lowSymptoms", "hypoglycemiaSymptoms"),
        ("cycle", "cycle"),
        ("alcohol", "alcohol"),
    ];
    for (sub, state) in states {
        let r = map1(
            RecordKind::Event,
            event("health", json!(sub), json!(""), "unknown"),
        );
        assert_eq!(r.datum_value()["states"], json!([{ "state": state }]));
        assert!(r.datum_value().get("notes").is_none());
    }
    for (sub, intensity) in [("light", "low"), ("medium", "medium"), ("heavy", "high")] {
        let r = map1(
            RecordKind::Event,
            event("exercise", json!(sub), json!(10), "minutes"),
        );
        assert_eq!(r.datum_value()["reportedIntensity"], intensity);
    }
}

#[test]
fn device_quirks() {
    let device = json!({"lastUploadDate": "2026-01-01T12:05Z", "transmitterId": null,
        "transmitterGeneration": "g7", "alertSchedules": "oops"});
    // Garbled schedules cost the mapped alerts only; no transmitter id → `unknown`.
    let r = map1(RecordKind::Device, device.clone());
    assert!(
        r.datum_value().get("defaultAlerts").is_none()
            && r.datum_value().get("transmitterId").is_none()
    );
    assert_eq!(r.partner_record_id, "device:unknown:2026-01-01T12:05:00Z");
    let s = skip1(
        RecordKind::Device,
        with(&device, json!({"lastUploadDate": "-"})),
    );
    assert_eq!(
        (s.reason.as_str(), s.partner_record_id),
        ("missing lastUploadDate", None)
    );
    // mmol/L alert levels make the settings mmol/L.
    let schedules = json!([{"alertScheduleSettings": {"isEnabled": true, "isDefaultSchedule": true},
        "alertSettings": [{"alertName": "low", "value": 3.9, "unit": "mmol/L", "enabled": true}]}]);
    let r = map1(
        RecordKind::Device,
        with(&device, json!({ "alertSchedules": schedules })),
    );
    assert_eq!(r.datum_value()["units"], "mmol/L");
    let low = json!({"enabled": true, "level": 3.9, "units": "mmol/L"});
    assert_eq!(
        r.datum_value()["defaultAlerts"],
        json!({"enabled": true, "low": low})
    );
}
