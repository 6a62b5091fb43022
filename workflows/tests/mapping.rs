//! The mapping of partner records to Tidepool data: golden data per kind, the quirks, and the
//! sandbox's own generators run through `map_records`. Pure: no IO.

use chrono::{Duration as TimeDelta, SecondsFormat, TimeZone, Utc};
use serde_json::{Value, json};
use workflows::{
    mapping::{MapOutcome, MappingContext, Skipped, map_records},
    records::{MappedRecord, RawRecord, RecordKind},
};

const TX: &str = "6f1c1e2d3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5";

fn ctx() -> MappingContext {
    MappingContext {
        upload_id: "upload-1".into(),
        partner: "sandbox-cgm".into(),
        origin_name: "com.dexcom.api".into(),
    }
}

fn run(kind: RecordKind, values: &[Value]) -> MapOutcome {
    let raw: Vec<RawRecord> = values
        .iter()
        .map(|v| RawRecord {
            kind,
            value: v.clone(),
        })
        .collect();
    map_records(&ctx(), &raw)
}

fn map1(kind: RecordKind, v: Value) -> MappedRecord {
    let out = run(kind, &[v]);
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    out.records.into_iter().next().unwrap()
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

/// The fields of a Dexcom datum besides the type-specific ones.
fn dexcom_common(id: &str, raw: &Value, extra: Value) -> Value {
    let d = json!({
        "time": "2026-01-01T12:05:00Z", "uploadId": "upload-1",
        "deviceId": format!("Dexcom_g7_{TX}"), "deviceTime": "2026-01-01T07:05:00",
        "timezoneOffset": -300, "origin": {"id": id, "name": "com.dexcom.api", "type": "service"},
        "payload": raw, "deviceManufacturer": "Dexcom", "deviceModel": "g7",
        "deviceName": "Dexcom g7",
    });
    with(&d, extra)
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

#[test]
fn golden_egv() {
    let r = map1(RecordKind::Egv, egv());
    let expected = dexcom_common(
        "egv-1",
        &egv(),
        json!({
            "type": "cbg", "units": "mg/dL", "value": 120, "trend": "moderateRise",
            "trendRate": 2.3, "trendRateUnits": "mg/dL/minute", "sampleInterval": 300_000,
        }),
    );
    assert_eq!(r.datum_value(), expected);
    assert_eq!(r.partner_record_id, "egv-1");
    assert_eq!(r.datum_type, "cbg");
    assert_eq!(r.time, Utc.with_ymd_and_hms(2026, 1, 1, 12, 5, 0).unwrap());
    assert!(!r.retired);
}

#[test]
fn golden_calibration_and_alert() {
    let cal = json!({"recordId": "cal-1", "systemTime": "2026-01-01T12:05:00",
        "displayTime": "2026-01-01T07:05:00-05:00", "unit": "mg/dL", "value": 104,
        "transmitterId": TX, "transmitterTicks": 99, "transmitterGeneration": "g7",
        "displayDevice": "iOS"});
    let expected = dexcom_common(
        "cal-1",
        &cal,
        json!({"type": "deviceEvent",
        "subType": "calibration", "value": 104, "units": "mg/dL"}),
    );
    assert_eq!(map1(RecordKind::Calibration, cal).datum_value(), expected);

    let alert = json!({"recordId": "al-1", "systemTime": "2026-01-01T12:05:00",
        "displayTime": "2026-01-01T07:05:00-05:00", "alertName": "urgentLowSoon",
        "alertState": "activeSnoozed", "transmitterId": TX, "transmitterGeneration": "g7",
        "displayDevice": "iOS", "displayApp": "G7"});
    let expected = dexcom_common(
        "al-1",
        &alert,
        json!({"type": "alert",
        "name": "urgentLowSoon", "issuedTime": "2026-01-01T12:05:00Z"}),
    );
    assert_eq!(
        map1(RecordKind::Alert, alert.clone()).datum_value(),
        expected
    );
    let r = map1(
        RecordKind::Alert,
        with(&alert, json!({"alertName": "newAlert2027"})),
    );
    assert_eq!(r.datum_value()["name"], "newAlert2027");
}

fn event(event_type: &str, sub: Value, value: Value, unit: &str) -> Value {
    json!({"recordId": "ev-1", "systemTime": "2026-01-01T12:05:00",
        "displayTime": "2026-01-01T07:05:00-05:00", "eventStatus": "created",
        "eventType": event_type, "eventSubType": sub, "value": value, "unit": unit,
        "transmitterId": TX, "transmitterGeneration": "g7", "displayDevice": "iOS"})
}

#[test]
fn golden_events() {
    let cases = [
        (
            event("carbs", json!(null), json!("45"), "grams"),
            json!({"type": "food", "nutrition": {"carbohydrate": {"net": 45, "units": "grams"}}}),
        ),
        (
            event("insulin", json!("fastActing"), json!(4.5), "units"),
            json!({"type": "insulin", "dose": {"total": 4.5, "units": "Units"},
                "formulation": {"simple": {"actingType": "rapid"}}}),
        ),
        (
            event("insulin", json!("longActing"), json!("20"), "units"),
            json!({"type": "insulin", "dose": {"total": 20, "units": "Units"},
                "formulation": {"simple": {"actingType": "long"}}}),
        ),
        (
            event("exercise", json!("heavy"), json!("30"), "minutes"),
            json!({"type": "physicalActivity", "reportedIntensity": "high",
                "duration": {"value": 30, "units": "minutes"}}),
        ),
        (
            event("health", json!("highSymptoms"), json!(""), "unknown"),
            json!({"type": "reportedState", "states": [{"state": "hyperglycemiaSymptoms"}]}),
        ),
        (
            event("notes", json!(null), json!("sensor felt loose"), "unknown"),
            json!({"type": "reportedState", "notes": ["sensor felt loose"]}),
        ),
        (
            event("bloodGlucose", json!(null), json!("98"), "mg/dL"),
            json!({"type": "smbg", "subType": "manual", "value": 98, "units": "mg/dL"}),
        ),
    ];
    for (raw, fields) in cases {
        let r = map1(RecordKind::Event, raw.clone());
        assert_eq!(r.datum_value(), dexcom_common("ev-1", &raw, fields));
        assert!(!r.retired);
    }
}

#[test]
fn golden_device() {
    let setting = |name: &str, value: Value, snooze: i64, unit: &str| {
        json!({"alertName": name,
        "value": value, "unit": unit, "snooze": snooze, "enabled": true})
    };
    let device = json!({"lastUploadDate": "2026-01-01T12:05:00", "transmitterId": TX,
        "transmitterGeneration": "g7", "displayDevice": "iOS", "displayApp": "G7",
        "alertSchedules": [
            {"alertScheduleSettings": {"alertScheduleName": "Default", "isEnabled": true,
                "isDefaultSchedule": true, "startTime": "00:00", "endTime": "00:00",
                "daysOfWeek": ["sunday", "monday"]},
             "alertSettings": [setting("high", json!(250), 120, "mg/dL"),
                setting("rise", json!(3), 0, "mg/dL/min"),
                setting("noReadings", json!(null), 20, "minutes"),
                setting("fixedLow", json!(55), 0, "mg/dL"),
                setting("high", json!(250), 120, "mg/dL")]},
            {"alertScheduleSettings": {"alertScheduleName": "Night", "isEnabled": false,
                "isDefaultSchedule": false, "startTime": "22:30", "endTime": "06:00",
                "daysOfWeek": ["Saturday"]},
             "alertSettings": [setting("low", json!(70), 30, "mg/dL")]}]});
    let r = map1(RecordKind::Device, device.clone());
    let id = format!("device:{TX}:2026-01-01T12:05:00Z");
    let snooze = |m: i64| json!({"duration": m, "units": "minutes"});
    let expected = json!({"type": "cgmSettings", "time": "2026-01-01T12:05:00Z",
        "uploadId": "upload-1", "deviceId": format!("Dexcom_g7_{TX}"),
        "origin": {"id": id, "name": "com.dexcom.api", "type": "service"}, "payload": device,
        "deviceManufacturer": "Dexcom", "deviceModel": "g7", "deviceName": "Dexcom g7",
        "manufacturers": ["Dexcom"], "model": "g7", "transmitterId": TX, "units": "mg/dL",
        "defaultAlerts": {"enabled": true,
            "high": {"enabled": true, "snooze": snooze(120), "level": 250, "units": "mg/dL"},
            "rise": {"enabled": true, "snooze": snooze(0), "rate": 3, "units": "mg/dL/minute"},
            "noData": {"enabled": true, "snooze": snooze(20)}},
        "scheduledAlerts": [{"name": "Night", "days": ["saturday"], "start": 81_000_000,
            "end": 21_600_000, "alerts": {"enabled": false,
                "low": {"enabled": true, "snooze": snooze(30), "level": 70, "units": "mg/dL"}}}]});
    assert_eq!(r.datum_value(), expected);
    assert_eq!(
        (r.partner_record_id, r.datum_type.as_str()),
        (id, "cgmSettings")
    );
}

fn pump(fields: Value) -> Value {
    let device = json!({"id": "p-1", "time": "2026-01-01T12:00:00Z",
        "deviceId": "ACMEPumpCo-00001234", "serialNumber": "00001234",
        "deviceModel": "ACMEPumpModel123", "deviceManufacturer": "ACME",
        "deviceName": "ACME ACMEPumpModel123", "timezone": "America/New_York",
        "timezoneOffset": -300, "deviceTime": "2026-01-01T07:00:00"});
    with(&device, fields)
}

fn pump_datum(raw: &Value, fields: Value) -> Value {
    let d = json!({"time": "2026-01-01T12:00:00Z", "uploadId": "upload-1",
        "deviceId": "ACMEPumpCo-00001234", "deviceTime": "2026-01-01T07:00:00",
        "timezoneOffset": -300, "timezone": "America/New_York",
        "origin": {"id": "p-1", "name": "com.dexcom.api", "type": "service"}, "payload": raw,
        "deviceModel": "ACMEPumpModel123", "deviceManufacturer": "ACME",
        "deviceName": "ACME ACMEPumpModel123", "deviceSerialNumber": "00001234"});
    with(&d, fields)
}

#[test]
fn golden_basal_each_delivery_type() {
    let scheduled = json!({"deliveryType": "scheduled", "rate": 0.85, "duration": 1_800_000,
        "expectedDuration": 1_800_000, "scheduleName": "Standard"});
    let temp = json!({"deliveryType": "temp", "rate": 0.45, "percent": 0.5,
        "duration": 1_800_000, "expectedDuration": 3_600_000, "scheduleName": "Standard",
        "suppressed": {"type": "basal", "deliveryType": "scheduled", "rate": 0.9}});
    let automated = json!({"deliveryType": "automated", "rate": 1.2, "duration": 1_800_000});
    let suspend = json!({"deliveryType": "suspend", "duration": 1_800_000});
    // The Tidepool fields are the partner's, same names, same values.
    for fields in [scheduled, temp, automated, suspend] {
        let raw = pump(with(&fields, json!({"type": "basal"})));
        let r = map1(RecordKind::Basal, raw.clone());
        let expected = pump_datum(&raw, with(&fields, json!({"type": "basal"})));
        assert_eq!(r.datum_value(), expected);
        let ids = (r.partner_record_id.as_str(), r.datum_type.as_str());
        assert_eq!(ids, ("p-1", "basal"));
    }
}

#[test]
fn golden_bolus_each_sub_type() {
    let normal = json!({"subType": "normal", "normal": 2.5, "expectedNormal": 5,
        "deliveryContext": "remote"});
    let square = json!({"subType": "square", "extended": 3, "expectedExtended": 3,
        "duration": 5_400_000, "expectedDuration": 5_400_000});
    let dual = json!({"subType": "dual/square", "normal": 1.5, "extended": 2.25,
        "duration": 3_600_000, "deliveryContext": "device"});
    let automated = json!({"subType": "automated", "normal": 0.35, "deliveryContext": "algorithm"});
    for fields in [normal, square, dual, automated] {
        let raw = pump(fields.clone());
        let r = map1(RecordKind::Bolus, raw.clone());
        let expected = pump_datum(&raw, with(&fields, json!({"type": "bolus"})));
        assert_eq!(r.datum_value(), expected);
    }
}

#[test]
fn one_broken_record_never_fails_the_batch() {
    let new_generation = json!({"recordId": "egv-2", "transmitterGeneration": "g8 ultra"});
    let good = [
        egv(),
        with(&egv(), new_generation),
        with(&egv(), json!({"recordId": "egv-3", "value": 35})),
    ];
    let broken = [
        (json!({"value": "1x0"}), "value is not a number"),
        (json!({"systemTime": "-"}), "missing systemTime"),
        (
            json!({"systemTime": "2026-13-01T00:00:00"}),
            "unparsable systemTime",
        ),
        (json!({"unit": "mg/100mL"}), "unknown unit"),
        (json!({"value": 5000}), "value out of range"),
    ];
    for (change, reason) in broken {
        let bad = with(&with(&egv(), json!({"recordId": "bad"})), change);
        let batch = [good[0].clone(), bad, good[1].clone(), good[2].clone()];
        let out = run(RecordKind::Egv, &batch);
        let ids: Vec<&str> = out
            .records
            .iter()
            .map(|r| r.partner_record_id.as_str())
            .collect();
        assert_eq!(ids, ["egv-1", "egv-2", "egv-3"]);
        let skipped = Skipped {
            kind: RecordKind::Egv,
            partner_record_id: Some("bad".into()),
            reason: reason.into(),
        };
        assert_eq!(out.skipped, [skipped]);
        assert!(
            !reason.chars().any(|c| c.is_ascii_digit()),
            "no values in reasons"
        );
    }
    // An id the database could not store (PostgreSQL text holds no NUL) is skipped too.
    let nul = with(&egv(), json!({"recordId": "bad\u{0}id"}));
    let out = run(RecordKind::Egv, &[nul, good[1].clone()]);
    assert_eq!(out.records.len(), 1);
    assert_eq!(
        out.skipped[0].reason,
        "record id contains control characters"
    );
    // A new enum value in a pump batch.
    let basal = |id: &str, delivery: &str| {
        pump(json!({"id": id, "deliveryType": delivery, "rate": 1, "duration": 1_800_000}))
    };
    let batch = [
        basal("a", "scheduled"),
        basal("b", "boost"),
        basal("c", "temp"),
    ];
    let out = run(RecordKind::Basal, &batch);
    assert_eq!(out.records.len(), 2);
    let skipped: Vec<_> = out
        .skipped
        .iter()
        .map(|s| (s.partner_record_id.as_deref(), s.reason.as_str()))
        .collect();
    assert_eq!(skipped, [(Some("b"), "unknown deliveryType")]);
}

/// A few days of a few sandbox users, every kind, through `map_records`.
#[test]
fn the_sandbox_partner_maps_without_loss() {
    use sandbox::data as sb;
    let start = Utc.with_ymd_and_hms(2026, 3, 7, 0, 0, 0).unwrap(); // spans the US DST switch
    let end = start + TimeDelta::days(3);
    let faults = sandbox::faults::Faults {
        backfill: true,
        ..Default::default()
    };
    let dc = sb::DataContext::new(start, &faults);
    let (mut total, mut all) = (0, MapOutcome::default());
    for user in ["alice", "bob", "carol", "dave", "erin", "frank", "grace"] {
        let early = start + TimeDelta::hours(30); // events before their corrections
        let batches = [
            (
                RecordKind::Egv,
                to_json(sb::expected_egvs(&dc, user, start, end)),
            ),
            (
                RecordKind::Calibration,
                to_json(sb::expected_calibrations(&dc, user, start, end)),
            ),
            (
                RecordKind::Event,
                to_json(sb::expected_events(&dc, user, start, end)),
            ),
            (
                RecordKind::Event,
                to_json(sb::events(&dc, user, start, end, early)),
            ),
            (
                RecordKind::Alert,
                to_json(sb::expected_alerts(&dc, user, start, end)),
            ),
            (RecordKind::Device, to_json(sb::devices(&dc, user, end))),
            (
                RecordKind::Basal,
                to_json(sb::expected_basal(&dc, user, start, end)),
            ),
            (
                RecordKind::Bolus,
                to_json(sb::expected_bolus(&dc, user, start, end)),
            ),
        ];
        let records: Vec<RawRecord> = batches
            .into_iter()
            .flat_map(|(kind, values)| {
                values
                    .into_iter()
                    .map(move |value| RawRecord { kind, value })
            })
            .collect();
        total += records.len();
        let out = map_records(&ctx(), &records);
        all.records.extend(out.records);
        all.skipped.extend(out.skipped);
    }
    // The sandbox's quirks (unknown generations, out-of-range readings, null status and trend
    // rates, numeric event values, deletions, receiver drift, backfill, duplicate alert
    // settings, a user without a device record) all map: nothing is skipped.
    assert_eq!(all.skipped, []);
    assert_eq!(all.records.len(), total);
    for r in &all.records {
        let d = &r.datum_value();
        for key in ["type", "time", "uploadId", "deviceId", "origin", "payload"] {
            let present = d.get(key).is_some_and(|x| !x.is_null() && x != "");
            assert!(present, "{key} in {d}");
        }
        assert_eq!(d["time"], r.time.to_rfc3339_opts(SecondsFormat::Secs, true));
        assert_eq!(d["type"], r.datum_type);
        assert_eq!(d["origin"]["id"], r.partner_record_id);
        if r.datum_type != "cgmSettings" {
            assert!(
                d["deviceTime"].is_string() && d["timezoneOffset"].is_i64(),
                "{d}"
            );
        }
    }
    let count =
        |f: &dyn Fn(&Value) -> bool| all.records.iter().filter(|r| f(&r.datum_value())).count();
    assert!(count(&|d| d["payload"]["transmitterGeneration"] == "g6 pro") > 0);
    assert!(count(&|d| d["payload"]["transmitterGeneration"] == "g715day") > 0);
    assert!(count(&|d| d.get("annotations").is_some()) > 0);
    assert!(count(&|d| d["type"] == "cbg" && d.get("trend").is_none()) > 0);
    assert!(count(&|d| d["backfilled"] == true) > 0);
    assert!(
        count(&|d| d["payload"]["eventType"].is_string() && d["payload"]["value"].is_number()) > 0
    );
    assert!(count(&|d| d.get("clockDriftOffset").is_some()) > 0);
    assert!(all.records.iter().any(|r| r.retired));
    let types = [
        "cbg",
        "deviceEvent",
        "food",
        "insulin",
        "physicalActivity",
        "reportedState",
        "smbg",
        "alert",
        "cgmSettings",
        "basal",
        "bolus",
    ];
    for t in types {
        assert!(count(&|d| d["type"] == t) > 0, "{t}");
    }
}

fn to_json<T: serde::Serialize>(records: Vec<T>) -> Vec<Value> {
    records
        .into_iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}
