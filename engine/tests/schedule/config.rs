//! Validation of a policy and the configuration shape: the documented TOML, defaults, and bad
//! TOML rejected with a reason.

use std::{collections::BTreeMap, time::Duration};

use chrono::NaiveTime;
use chrono_tz::Tz;
use engine::schedule::{Blackout, ScheduleError, SyncPolicy};
use serde::Deserialize;

use crate::{cron, daily, policy};

#[test]
fn validate_accepts_the_defaults_and_dexcom() {
    assert_eq!(SyncPolicy::default().validate(), Ok(()));
    assert_eq!(SyncPolicy::dexcom().validate(), Ok(()));
    let crossing = policy(vec![daily("23:30", "00:30", "UTC")], 0);
    assert_eq!(crossing.validate(), Ok(()));
}

#[test]
fn validate_rejects_bad_intervals_and_durations() {
    let with = |min, max| SyncPolicy {
        interval_min_secs: min,
        interval_max_secs: max,
        ..SyncPolicy::default()
    };
    assert_eq!(
        with(100, 50).validate(),
        Err(ScheduleError::IntervalOrder { min: 100, max: 50 })
    );
    assert_eq!(with(0, 50).validate(), Err(ScheduleError::ZeroInterval));
    assert!(matches!(
        with(60, u64::MAX).validate(),
        Err(ScheduleError::IntervalTooLong(_))
    ));
    assert_eq!(with(60, 60).validate(), Ok(()));

    let schedule: cron::Schedule = "0 0 3 * * *".parse().unwrap();
    let cron_lasting = |secs| {
        policy(
            vec![Blackout::Cron {
                schedule: schedule.clone(),
                duration: Duration::from_secs(secs),
                time_zone: Tz::UTC,
            }],
            0,
        )
        .validate()
    };
    assert_eq!(
        cron_lasting(0),
        Err(ScheduleError::CronDuration(Duration::ZERO))
    );
    assert!(cron_lasting(86_400).is_err());
    assert_eq!(cron_lasting(86_399), Ok(()));
    let at = NaiveTime::from_hms_opt(3, 0, 0).unwrap();
    let empty = Blackout::Daily {
        start: at,
        end: at,
        time_zone: Tz::UTC,
    };
    assert_eq!(
        policy(vec![empty], 0).validate(),
        Err(ScheduleError::EmptyDailyWindow(at))
    );
    assert!(policy(Vec::new(), 2 * 86_400).validate().is_err());
}

#[derive(Debug, Deserialize)]
struct Config {
    partners: BTreeMap<String, Partner>,
}

#[derive(Debug, Deserialize)]
struct Partner {
    sync: SyncPolicy,
}

#[test]
fn the_documented_toml_shape_deserializes() {
    let config: Config = toml::from_str(
        r#"
        [partners.dexcom.sync]
        interval_min_secs = 2700
        interval_max_secs = 4500
        blackout_spread_secs = 900
        blackouts = [
          { daily = { start = "02:45", end = "03:45", time_zone = "America/Los_Angeles" } },
          { cron = { expression = "0 0 3 * * Sun", duration_secs = 3600, time_zone = "UTC" } },
        ]
        "#,
    )
    .unwrap();
    let sync = &config.partners["dexcom"].sync;
    let mut expected = SyncPolicy::dexcom();
    expected.blackouts.push(cron("0 0 3 * * Sun", 60, "UTC"));
    assert_eq!(sync, &expected);
}

#[test]
fn blackouts_also_read_as_an_array_of_tables_with_seconds() {
    let p: SyncPolicy = toml::from_str(
        r#"
        [[blackouts]]
        daily = { start = "23:30:15", end = "00:30", time_zone = "Europe/London" }
        "#,
    )
    .unwrap();
    assert_eq!(
        p.blackouts,
        vec![Blackout::Daily {
            start: NaiveTime::from_hms_opt(23, 30, 15).unwrap(),
            end: NaiveTime::from_hms_opt(0, 30, 0).unwrap(),
            time_zone: chrono_tz::Europe::London,
        }]
    );
}

#[test]
fn every_field_defaults() {
    assert_eq!(
        toml::from_str::<SyncPolicy>("").unwrap(),
        SyncPolicy::default()
    );
    let p: SyncPolicy = toml::from_str("interval_max_secs = 9000").unwrap();
    assert_eq!((p.interval_min_secs, p.interval_max_secs), (2700, 9000));
}

#[test]
fn bad_toml_is_rejected_with_a_reason() {
    let cases = [
        ("interval_min_secs = 5000", "more than interval_max_secs"),
        ("interval_min_secs = 0", "more than 0"),
        ("interval_minutes = 5", "unknown field"),
        ("blackout_spread_secs = -1", "invalid value"),
        (
            r#"blackouts = [{ daily = { start = "25:00", end = "03:45", time_zone = "UTC" } }]"#,
            "invalid time of day",
        ),
        (
            r#"blackouts = [{ daily = { start = "02:45", end = "03:45", time_zone = "Mars/Olympus" } }]"#,
            "unknown time zone",
        ),
        (
            r#"blackouts = [{ daily = { start = "02:45", end = "03:45" } }]"#,
            "missing field `time_zone`",
        ),
        (
            r#"blackouts = [{ daily = { start = "02:45", end = "02:45", time_zone = "UTC" } }]"#,
            "length is ambiguous",
        ),
        (
            r#"blackouts = [{ daily = { start = "02:45", end = "03:45", time_zone = "UTC", note = "x" } }]"#,
            "unknown field",
        ),
        (
            r#"blackouts = [{ cron = { expression = "0 3 * *", duration_secs = 60, time_zone = "UTC" } }]"#,
            "invalid cron expression",
        ),
        (
            r#"blackouts = [{ cron = { expression = "0 0 3 * * *", duration_secs = 0, time_zone = "UTC" } }]"#,
            "duration must be more than 0",
        ),
        (
            r#"blackouts = [{ weekly = { day = "Sun" } }]"#,
            "unknown variant",
        ),
    ];
    for (toml_text, reason) in cases {
        let err = toml::from_str::<SyncPolicy>(toml_text)
            .expect_err(toml_text)
            .to_string();
        assert!(err.contains(reason), "{toml_text}: {err}");
    }
}
