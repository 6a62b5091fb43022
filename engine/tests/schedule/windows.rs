//! Which blackout window contains an instant: Dexcom's daily window in America/Los_Angeles
//! across DST changes, Europe/London, windows crossing midnight, and cron windows.

use engine::schedule::SyncPolicy;

use crate::{cron, daily, policy, utc, window};

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
