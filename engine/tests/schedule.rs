//! Next-sync times: intervals, blackouts on real dates (including DST changes in
//! America/Los_Angeles and Europe/London), backoff, and the configuration shape. Every instant is
//! fixed and every random source seeded.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::{America::Los_Angeles, Tz};
use engine::schedule::{Blackout, ScheduleError, SyncPolicy, backoff};
use proptest::prelude::*;
use rand::{SeedableRng, rngs::StdRng};
use serde::Deserialize;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn window(from: &str, to: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    Some((utc(from), utc(to)))
}

fn policy(blackouts: Vec<Blackout>, spread_secs: u64) -> SyncPolicy {
    SyncPolicy {
        blackouts,
        blackout_spread_secs: spread_secs,
        ..SyncPolicy::default()
    }
}

fn daily(start: &str, end: &str, zone: &str) -> Blackout {
    Blackout::daily(start, end, zone).unwrap()
}

fn cron(expression: &str, minutes: u64, zone: &str) -> Blackout {
    Blackout::cron(expression, Duration::from_secs(minutes * 60), zone).unwrap()
}

fn secs(n: u64) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(n).unwrap())
}

// --- Dexcom's daily window in America/Los_Angeles -------------------------------------------

#[test]
fn dexcom_window_on_a_winter_day_is_in_pst() {
    let p = SyncPolicy::dexcom();
    let expected = window("2026-01-15T10:45:00Z", "2026-01-15T11:45:00Z");
    assert_eq!(p.blackout_at(utc("2026-01-15T10:45:00Z")), expected);
    assert_eq!(p.blackout_at(utc("2026-01-15T11:44:59Z")), expected);
    assert_eq!(p.blackout_at(utc("2026-01-15T10:44:59Z")), None);
    assert_eq!(p.blackout_at(utc("2026-01-15T11:45:00Z")), None);
}

#[test]
fn dexcom_window_on_a_summer_day_is_in_pdt() {
    let p = SyncPolicy::dexcom();
    let expected = window("2026-07-15T09:45:00Z", "2026-07-15T10:45:00Z");
    assert_eq!(p.blackout_at(utc("2026-07-15T10:00:00Z")), expected);
    assert_eq!(p.blackout_at(utc("2026-07-15T09:44:59Z")), None);
    assert_eq!(p.blackout_at(utc("2026-07-15T10:45:00Z")), None);
    assert_eq!(p.blackout_at(utc("2026-07-15T11:00:00Z")), None);
}

#[test]
fn spring_forward_starts_the_window_when_the_clocks_jump() {
    // 2026-03-08: 02:00 PST becomes 03:00 PDT (10:00Z); 02:45 does not exist.
    let p = SyncPolicy::dexcom();
    let expected = window("2026-03-08T10:00:00Z", "2026-03-08T10:45:00Z");
    assert_eq!(p.blackout_at(utc("2026-03-08T10:00:00Z")), expected);
    assert_eq!(p.blackout_at(utc("2026-03-08T10:44:59Z")), expected);
    assert_eq!(p.blackout_at(utc("2026-03-08T09:59:59Z")), None); // 01:59:59 PST
    assert_eq!(p.blackout_at(utc("2026-03-08T10:45:00Z")), None);
    // The days around it are ordinary.
    assert_eq!(
        p.blackout_at(utc("2026-03-07T11:00:00Z")),
        window("2026-03-07T10:45:00Z", "2026-03-07T11:45:00Z")
    );
    assert_eq!(
        p.blackout_at(utc("2026-03-09T10:00:00Z")),
        window("2026-03-09T09:45:00Z", "2026-03-09T10:45:00Z")
    );
}

#[test]
fn fall_back_leaves_the_dexcom_window_unambiguous_in_pst() {
    // 2026-11-01: 02:00 PDT becomes 01:00 PST (09:00Z); 02:45–03:45 happens once, in PST.
    let p = SyncPolicy::dexcom();
    let expected = window("2026-11-01T10:45:00Z", "2026-11-01T11:45:00Z");
    assert_eq!(p.blackout_at(utc("2026-11-01T10:45:00Z")), expected);
    assert_eq!(p.blackout_at(utc("2026-11-01T09:45:00Z")), None); // 01:45 PST
    assert_eq!(p.blackout_at(utc("2026-11-01T11:45:00Z")), None);
    assert_eq!(
        p.blackout_at(utc("2026-10-31T10:00:00Z")),
        window("2026-10-31T09:45:00Z", "2026-10-31T10:45:00Z")
    );
}

#[test]
fn a_window_in_the_repeated_hour_covers_both_occurrences() {
    let p = policy(vec![daily("01:15", "01:45", "America/Los_Angeles")], 0);
    // From 01:15 PDT (08:15Z) to 01:45 PST (09:45Z), including the stretch between passes.
    let expected = window("2026-11-01T08:15:00Z", "2026-11-01T09:45:00Z");
    for t in ["08:15:00", "08:30:00", "09:00:00", "09:30:00", "09:44:59"] {
        assert_eq!(
            p.blackout_at(utc(&format!("2026-11-01T{t}Z"))),
            expected,
            "{t}"
        );
    }
    assert_eq!(p.blackout_at(utc("2026-11-01T08:14:59Z")), None);
    assert_eq!(p.blackout_at(utc("2026-11-01T09:45:00Z")), None);
    assert_eq!(
        p.blackout_at(utc("2026-10-31T08:30:00Z")),
        window("2026-10-31T08:15:00Z", "2026-10-31T08:45:00Z")
    );
    assert_eq!(
        p.blackout_at(utc("2026-11-02T09:30:00Z")),
        window("2026-11-02T09:15:00Z", "2026-11-02T09:45:00Z")
    );
}

// --- Europe/London ------------------------------------------------------------------------------

#[test]
fn london_spring_forward() {
    // 2026-03-29: 01:00 GMT becomes 02:00 BST (01:00Z).
    let starts_in_gap = policy(vec![daily("01:30", "02:30", "Europe/London")], 0);
    assert_eq!(
        starts_in_gap.blackout_at(utc("2026-03-29T01:00:00Z")),
        window("2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z")
    );
    assert_eq!(starts_in_gap.blackout_at(utc("2026-03-29T00:59:59Z")), None);
    let ends_in_gap = policy(vec![daily("00:30", "01:30", "Europe/London")], 0);
    assert_eq!(
        ends_in_gap.blackout_at(utc("2026-03-29T00:45:00Z")),
        window("2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z")
    );
    assert_eq!(ends_in_gap.blackout_at(utc("2026-03-29T01:00:00Z")), None);
    assert_eq!(
        ends_in_gap.blackout_at(utc("2026-03-30T00:00:00Z")),
        window("2026-03-29T23:30:00Z", "2026-03-30T00:30:00Z")
    );
}

#[test]
fn london_fall_back() {
    // 2026-10-25: 02:00 BST becomes 01:00 GMT (01:00Z); 01:00–02:00 happens twice.
    let p = policy(
        vec![
            daily("01:15", "01:45", "Europe/London"),
            daily("03:00", "04:00", "Europe/London"),
        ],
        0,
    );
    assert_eq!(
        p.blackout_at(utc("2026-10-25T01:30:00Z")),
        window("2026-10-25T00:15:00Z", "2026-10-25T01:45:00Z")
    );
    assert_eq!(
        p.blackout_at(utc("2026-10-25T03:00:00Z")),
        window("2026-10-25T03:00:00Z", "2026-10-25T04:00:00Z")
    );
    assert_eq!(
        p.blackout_at(utc("2026-10-24T02:30:00Z")),
        window("2026-10-24T02:00:00Z", "2026-10-24T03:00:00Z")
    );
    assert_eq!(p.blackout_at(utc("2026-10-25T04:00:00Z")), None);
}

// --- Windows crossing midnight ------------------------------------------------------------------

#[test]
fn a_window_crossing_midnight_is_found_from_either_side() {
    let p = policy(vec![daily("23:30", "00:30", "America/Los_Angeles")], 0);
    let expected = window("2026-01-16T07:30:00Z", "2026-01-16T08:30:00Z");
    assert_eq!(p.blackout_at(utc("2026-01-16T07:45:00Z")), expected); // 23:45 on the 15th
    assert_eq!(p.blackout_at(utc("2026-01-16T08:15:00Z")), expected); // 00:15 on the 16th
    assert_eq!(p.blackout_at(utc("2026-01-16T08:30:00Z")), None);
}

#[test]
fn a_window_crossing_midnight_into_a_dst_change() {
    let p = policy(vec![daily("23:30", "02:30", "America/Los_Angeles")], 0);
    // Into spring forward: ends when the clocks jump, 02:30 does not exist.
    assert_eq!(
        p.blackout_at(utc("2026-03-08T09:59:59Z")),
        window("2026-03-08T07:30:00Z", "2026-03-08T10:00:00Z")
    );
    assert_eq!(p.blackout_at(utc("2026-03-08T10:00:00Z")), None);
    // Into fall back: 02:30 happens once (PST), after both passes through 01:00–02:00.
    assert_eq!(
        p.blackout_at(utc("2026-11-01T09:30:00Z")),
        window("2026-11-01T06:30:00Z", "2026-11-01T10:30:00Z")
    );
    let london = policy(vec![daily("22:00", "01:30", "Europe/London")], 0);
    assert_eq!(
        london.blackout_at(utc("2026-03-29T00:59:00Z")),
        window("2026-03-28T22:00:00Z", "2026-03-29T01:00:00Z")
    );
    assert_eq!(
        london.blackout_at(utc("2026-10-25T01:00:00Z")),
        window("2026-10-24T21:00:00Z", "2026-10-25T01:30:00Z")
    );
}

// --- Cron windows -------------------------------------------------------------------------------

#[test]
fn cron_window_in_utc() {
    let p = policy(vec![cron("0 0 3 * * *", 30, "UTC")], 0);
    let expected = window("2026-05-05T03:00:00Z", "2026-05-05T03:30:00Z");
    assert_eq!(p.blackout_at(utc("2026-05-05T03:00:00Z")), expected);
    assert_eq!(p.blackout_at(utc("2026-05-05T03:29:59Z")), expected);
    assert_eq!(p.blackout_at(utc("2026-05-05T02:59:59Z")), None);
    assert_eq!(p.blackout_at(utc("2026-05-05T03:30:00Z")), None);
}

#[test]
fn cron_window_in_a_local_zone_follows_dst() {
    let p = policy(vec![cron("0 0 3 * * *", 30, "America/New_York")], 0);
    assert_eq!(
        p.blackout_at(utc("2026-07-01T07:10:00Z")),
        window("2026-07-01T07:00:00Z", "2026-07-01T07:30:00Z")
    );
    assert_eq!(
        p.blackout_at(utc("2026-01-05T08:10:00Z")),
        window("2026-01-05T08:00:00Z", "2026-01-05T08:30:00Z")
    );
    assert_eq!(p.blackout_at(utc("2026-01-05T07:10:00Z")), None);
}

#[test]
fn weekly_cron_window() {
    // 2026-05-03 is a Sunday.
    let p = policy(vec![cron("0 0 3 * * Sun", 60, "UTC")], 0);
    assert_eq!(
        p.blackout_at(utc("2026-05-03T03:59:00Z")),
        window("2026-05-03T03:00:00Z", "2026-05-03T04:00:00Z")
    );
    assert_eq!(p.blackout_at(utc("2026-05-04T03:30:00Z")), None);
    assert_eq!(p.blackout_at(utc("2026-05-02T03:30:00Z")), None);
}

// --- Pushing out of blackouts -------------------------------------------------------------------

#[test]
fn a_time_outside_every_blackout_is_left_alone() {
    let mut rng = StdRng::seed_from_u64(1);
    let t = utc("2026-01-15T12:00:00Z");
    assert_eq!(SyncPolicy::dexcom().push_out_of_blackout(t, &mut rng), t);
}

#[test]
fn chained_windows_push_past_both() {
    let blackouts = vec![
        daily("02:00", "03:00", "UTC"),
        daily("02:30", "04:00", "UTC"),
    ];
    let exact = policy(blackouts.clone(), 0);
    let mut rng = StdRng::seed_from_u64(1);
    let t = utc("2026-02-02T02:15:00Z");
    // Only the first window contains t; its end lies in the second.
    assert_eq!(
        exact.blackout_at(t),
        window("2026-02-02T02:00:00Z", "2026-02-02T03:00:00Z")
    );
    assert_eq!(
        exact.blackout_at(utc("2026-02-02T02:45:00Z")),
        window("2026-02-02T02:00:00Z", "2026-02-02T04:00:00Z")
    );
    assert_eq!(
        exact.push_out_of_blackout(t, &mut rng),
        utc("2026-02-02T04:00:00Z")
    );

    let spread = policy(blackouts, 600);
    let end = utc("2026-02-02T04:00:00Z");
    for seed in 0..200 {
        let mut rng = StdRng::seed_from_u64(seed);
        let pushed = spread.push_out_of_blackout(t, &mut rng);
        assert!(pushed >= end && pushed <= end + secs(600), "{pushed}");
    }
}

#[test]
fn chains_through_daily_and_cron_windows() {
    let p = policy(
        vec![
            daily("02:45", "03:45", "America/Los_Angeles"),
            cron("0 30 11 * * *", 45, "UTC"),
        ],
        0,
    );
    let mut rng = StdRng::seed_from_u64(1);
    // 11:00Z is in Dexcom's window (10:45–11:45Z), which ends inside the cron one (11:30–12:15Z).
    assert_eq!(
        p.push_out_of_blackout(utc("2026-01-15T11:00:00Z"), &mut rng),
        utc("2026-01-15T12:15:00Z")
    );
}

#[test]
fn a_spread_landing_in_the_next_window_is_pushed_again() {
    let p = policy(
        vec![
            daily("02:00", "03:00", "UTC"),
            daily("03:05", "03:30", "UTC"),
        ],
        900,
    );
    let first_end = utc("2026-02-02T03:00:00Z");
    let (second_start, second_end) = (utc("2026-02-02T03:05:00Z"), utc("2026-02-02T03:30:00Z"));
    let mut seen_second = false;
    for seed in 0..500 {
        let mut rng = StdRng::seed_from_u64(seed);
        let t = p.push_out_of_blackout(utc("2026-02-02T02:30:00Z"), &mut rng);
        assert_eq!(p.blackout_at(t), None, "{t}");
        let after_first = t >= first_end && t < second_start;
        let after_second = t >= second_end && t <= second_end + secs(900);
        seen_second |= after_second;
        assert!(after_first || after_second, "{t}");
    }
    assert!(seen_second);
}

#[test]
fn next_sync_inside_a_window_lands_after_it_within_the_spread() {
    // now + 45..75 min = 10:45Z..11:15Z, wholly inside 10:45–11:45Z.
    let p = SyncPolicy::dexcom();
    let now = utc("2026-01-15T10:00:00Z");
    let end = utc("2026-01-15T11:45:00Z");
    for seed in 0..200 {
        let mut rng = StdRng::seed_from_u64(seed);
        let next = p.next_sync(now, &mut rng);
        assert!(next >= end && next <= end + secs(900), "{next}");
    }
}

#[test]
fn next_sync_without_blackouts_spans_the_interval() {
    let p = SyncPolicy::default();
    let now = utc("2026-04-01T00:00:00Z");
    let (lo, hi) = (now + secs(2700), now + secs(4500));
    let mut rng = StdRng::seed_from_u64(42);
    let times: Vec<_> = (0..2000).map(|_| p.next_sync(now, &mut rng)).collect();
    assert!(times.iter().all(|t| *t >= lo && *t <= hi));
    // Uniform, not clustered: both ends of the range are reached.
    assert!(times.iter().any(|t| *t < lo + secs(60)));
    assert!(times.iter().any(|t| *t > hi - secs(60)));
}

#[test]
fn after_delay_is_exact_outside_blackouts_and_pushed_inside() {
    let p = SyncPolicy::dexcom();
    let mut rng = StdRng::seed_from_u64(3);
    let now = utc("2026-01-15T08:00:00Z");
    assert_eq!(
        p.after_delay(now, Duration::from_secs(3600), &mut rng),
        utc("2026-01-15T09:00:00Z")
    );
    let pushed = p.after_delay(now, Duration::from_secs(3 * 3600), &mut rng);
    let end = utc("2026-01-15T11:45:00Z");
    assert!(pushed >= end && pushed <= end + secs(900), "{pushed}");
}

// --- Properties over a whole year ---------------------------------------------------------------

/// Dexcom's window for a local date, computed independently: 02:45 (or 03:00 when 02:45 is
/// skipped) to 03:45, America/Los_Angeles.
fn dexcom_oracle(date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let at = |h, m| {
        Los_Angeles
            .from_local_datetime(&date.and_time(NaiveTime::from_hms_opt(h, m, 0).unwrap()))
            .single()
            .map(|t| t.with_timezone(&Utc))
    };
    let start = at(2, 45).or_else(|| at(3, 0)).unwrap();
    (start, at(3, 45).unwrap())
}

fn instant_in_2026() -> impl Strategy<Value = DateTime<Utc>> {
    let start = utc("2026-01-01T00:00:00Z").timestamp();
    (start..start + 366 * 86_400).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn dexcom_next_sync_respects_interval_and_blackout(now in instant_in_2026(), seed: u64) {
        let p = SyncPolicy::dexcom();
        let next = p.next_sync(now, &mut StdRng::seed_from_u64(seed));
        let (lo, hi) = (now + secs(p.interval_min_secs), now + secs(p.interval_max_secs));
        let local = now.with_timezone(&Los_Angeles).date_naive();
        let windows: Vec<_> = (-1..=2)
            .map(|d| dexcom_oracle(local + TimeDelta::days(d)))
            .collect();
        prop_assert!(next >= lo);
        prop_assert_eq!(p.blackout_at(next), None);
        prop_assert!(windows.iter().all(|(s, e)| next < *s || next >= *e));
        if next > hi {
            let spread = secs(p.blackout_spread_secs);
            prop_assert!(
                windows
                    .iter()
                    .any(|(s, e)| *s <= hi && *e >= lo && next >= *e && next <= *e + spread),
                "{} pushed to {} not explained by {:?}", now, next, windows
            );
        }
    }

    #[test]
    fn pushed_times_land_exactly_on_a_window_end(now in instant_in_2026(), seed: u64) {
        // Several zones, a fold-covering window, midnight crossing, cron; spread 0 so a pushed
        // time must be the end of the windows it left.
        let p = SyncPolicy {
            interval_min_secs: 600,
            interval_max_secs: 7200,
            blackouts: vec![
                daily("02:45", "03:45", "America/Los_Angeles"),
                daily("01:15", "01:45", "America/Los_Angeles"),
                daily("23:30", "01:30", "Europe/London"),
                cron("0 0 3 * * *", 30, "America/New_York"),
                cron("0 50 */6 * * *", 20, "UTC"),
            ],
            blackout_spread_secs: 0,
        };
        let next = p.next_sync(now, &mut StdRng::seed_from_u64(seed));
        prop_assert!(next >= now + secs(600));
        prop_assert_eq!(p.blackout_at(next), None);
        if next > now + secs(7200) {
            let just_before = next - TimeDelta::milliseconds(1);
            prop_assert_eq!(p.blackout_at(just_before).map(|w| w.1), Some(next));
        }
    }
}

// --- Backoff ------------------------------------------------------------------------------------

#[test]
fn backoff_doubles_within_half_to_full_and_caps() {
    let (base, cap) = (
        Duration::from_secs(2 * 3600),
        Duration::from_secs(16 * 3600),
    );
    let mut rng = StdRng::seed_from_u64(9);
    for (attempt, hours) in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 16), (30, 16), (31, 16)] {
        let full = Duration::from_secs(hours * 3600);
        let samples: Vec<_> = (0..500)
            .map(|_| backoff(attempt, base, cap, &mut rng))
            .collect();
        assert!(
            samples.iter().all(|d| *d >= full / 2 && *d <= full),
            "attempt {attempt}"
        );
        // Jittered across the whole range, not pinned to one end.
        assert!(samples.iter().any(|d| *d < full * 6 / 10));
        assert!(samples.iter().any(|d| *d > full * 9 / 10));
    }
}

#[test]
fn backoff_is_repeatable_with_a_seed() {
    let run = || {
        let mut rng = StdRng::seed_from_u64(5);
        (1..8)
            .map(|a| {
                backoff(
                    a,
                    Duration::from_secs(30),
                    Duration::from_secs(600),
                    &mut rng,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

// --- Validation and configuration ---------------------------------------------------------------

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
