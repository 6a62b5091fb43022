//! Pushing times out of blackouts (chained windows, spread), the next sync and delays, and
//! properties of the next sync over every instant of a year.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::America::Los_Angeles;
use engine::schedule::SyncPolicy;
use proptest::prelude::*;
use rand::{SeedableRng, rngs::StdRng};

use crate::{cron, daily, policy, secs, utc, window};

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
