//! Turning a local wall-clock reading into an instant, on every day including DST changes.
//!
//! A blackout is the set of instants whose wall-clock reading falls inside the window, so a
//! reading that does not exist or exists twice has to resolve to the instant that keeps the
//! window honest:
//! - A reading in a gap (spring forward) resolves to the instant the clocks jump: the first instant
//!   that exists after it. The same rule holds for a window's start and its end, so a window that
//!   lies wholly inside a gap is empty that day.
//! - A reading in a fold (fall back) resolves to its earlier occurrence when it starts a window and
//!   to its later occurrence when it ends one, so the window covers both (erring wide is safe for
//!   a blackout).

use chrono::{DateTime, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// The first instant whose wall-clock reading in `tz` is `local` (a window's start).
pub(crate) fn earliest(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => gap_end(tz, local),
    }
}

/// The last instant whose wall-clock reading in `tz` is `local` (a window's end).
pub(crate) fn latest(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local).latest() {
        Some(t) => t.with_timezone(&Utc),
        None => gap_end(tz, local),
    }
}

/// The UTC offset in force at `t`, in seconds.
pub(crate) fn offset_secs(tz: Tz, t: DateTime<Utc>) -> i64 {
    i64::from(
        tz.offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc(),
    )
}

/// The instant the clocks jump over `local`, which does not exist in `tz`.
///
/// chrono-tz does not expose transitions, so this searches for the first whole second whose
/// reading is at or past `local`. The reading only moves forward between the two offsets around
/// the gap, so the search is a bisection over at most the gap's width.
fn gap_end(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let as_utc = local.and_utc();
    let day = TimeDelta::days(1);
    let offsets = [
        offset_secs(tz, as_utc.checked_sub_signed(day).unwrap_or(as_utc)),
        offset_secs(tz, as_utc.checked_add_signed(day).unwrap_or(as_utc)),
    ];
    let max_offset = offsets.iter().copied().max().unwrap_or(0);
    let min_offset = offsets.iter().copied().min().unwrap_or(0);
    let target = as_utc.timestamp();
    let reading_reached = |secs: i64| {
        DateTime::from_timestamp(secs, 0)
            .and_then(|u| {
                u.naive_utc()
                    .checked_add_signed(TimeDelta::seconds(offset_secs(tz, u)))
            })
            .is_some_and(|reading| reading >= local)
    };
    let (mut lo, mut hi) = (target - max_offset, target - min_offset);
    if !reading_reached(hi) {
        // Not a plain gap between the two offsets (should not happen with real zones): look a
        // day further rather than return something before the gap.
        hi += 86_400;
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if reading_reached(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    DateTime::from_timestamp(hi, 0).unwrap_or(as_utc)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_reading_in_the_spring_gap_resolves_to_the_jump() {
        let tz = chrono_tz::America::Los_Angeles;
        let t = local(2026, 3, 8, 2, 45);
        assert_eq!(earliest(tz, t), utc("2026-03-08T10:00:00Z"));
        assert_eq!(latest(tz, t), utc("2026-03-08T10:00:00Z"));
        let london = chrono_tz::Europe::London;
        assert_eq!(
            earliest(london, local(2026, 3, 29, 1, 30)),
            utc("2026-03-29T01:00:00Z")
        );
    }

    #[test]
    fn a_reading_in_the_autumn_fold_has_two_instants() {
        let tz = chrono_tz::America::Los_Angeles;
        let t = local(2026, 11, 1, 1, 15);
        assert_eq!(earliest(tz, t), utc("2026-11-01T08:15:00Z"));
        assert_eq!(latest(tz, t), utc("2026-11-01T09:15:00Z"));
    }

    #[test]
    fn an_ordinary_reading_has_one_instant() {
        let tz = chrono_tz::America::Los_Angeles;
        let t = local(2026, 1, 15, 2, 45);
        assert_eq!(earliest(tz, t), utc("2026-01-15T10:45:00Z"));
        assert_eq!(latest(tz, t), earliest(tz, t));
    }
}
