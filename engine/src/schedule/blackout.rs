//! Blackout windows: spans during which a partner must not be called.

use std::{str::FromStr, time::Duration};

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::{ScheduleError, local};

/// A half-open span `[start, end)` of instants.
pub(crate) type Window = (DateTime<Utc>, DateTime<Utc>);

/// Longest a cron window may last: a day or more would make every day a blackout.
const ONE_DAY: Duration = Duration::from_secs(86_400);

/// Upper bound on the cron fire times examined for one instant, so a schedule that fires every
/// second cannot turn a lookup into an unbounded walk.
const MAX_FIRES_EXAMINED: usize = 200_000;

/// A recurring span during which the partner must not be called.
///
/// Configured as an externally tagged table, times of day as `"HH:MM"` or `"HH:MM:SS"`, zones by
/// IANA name, and the cron expression with seconds first (cron crate syntax, zone-local):
///
/// ```toml
/// [partners.dexcom.sync]
/// blackouts = [
///   { daily = { start = "02:45", end = "03:45", time_zone = "America/Los_Angeles" } },
///   { cron = { expression = "0 0 3 * * Sun", duration_secs = 3600, time_zone = "UTC" } },
/// ]
/// ```
///
/// # DST
/// A window is the set of instants whose wall-clock reading in `time_zone` falls in it, made
/// contiguous:
/// - A reading that does not exist (spring forward) resolves to the instant the clocks jump, the
///   first instant that exists after it: 02:45–03:45 America/Los_Angeles on 2026-03-08 is 03:00
///   PDT–03:45 PDT (10:00Z–10:45Z). A window wholly inside the gap is empty that day.
/// - A reading that exists twice (fall back) starts a window at its earlier occurrence and ends
///   one at its later occurrence: 01:15–01:45 on 2026-11-01 runs from 01:15 PDT to 01:45 PST
///   (08:15Z–09:45Z), covering both passes through the hour.
/// - A cron fire time is resolved the same way, as a start (the cron crate itself would skip a
///   fire time in a gap); a fire time in a fold blacks out from its earlier occurrence to
///   `duration` after its later one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "BlackoutConfig")]
#[allow(
    clippy::large_enum_variant,
    reason = "a handful per partner, read once from configuration"
)]
pub enum Blackout {
    /// Every day from `start` to `end`, local time; `end` before `start` crosses midnight.
    Daily {
        start: NaiveTime,
        end: NaiveTime,
        time_zone: Tz,
    },
    /// A window of `duration` starting at each fire time of `schedule`, evaluated in `time_zone`.
    Cron {
        schedule: cron::Schedule,
        duration: Duration,
        time_zone: Tz,
    },
}

impl Blackout {
    /// A daily window from a configuration-style description (`"02:45"`, `"America/Los_Angeles"`).
    pub fn daily(start: &str, end: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        Self::try_from(BlackoutConfig::Daily(DailyConfig {
            start: start.to_owned(),
            end: end.to_owned(),
            time_zone: time_zone.to_owned(),
        }))
    }

    /// A cron window from a configuration-style description (seconds-first expression).
    pub fn cron(
        expression: &str,
        duration: Duration,
        time_zone: &str,
    ) -> Result<Self, ScheduleError> {
        let blackout = Self::Cron {
            schedule: parse_cron(expression)?,
            duration,
            time_zone: parse_zone(time_zone)?,
        };
        blackout.validate()?;
        Ok(blackout)
    }

    pub fn validate(&self) -> Result<(), ScheduleError> {
        match self {
            Self::Daily { start, end, .. } if start == end => {
                Err(ScheduleError::EmptyDailyWindow(*start))
            }
            Self::Cron { duration, .. } if duration.is_zero() || *duration >= ONE_DAY => {
                Err(ScheduleError::CronDuration(*duration))
            }
            _ => Ok(()),
        }
    }

    /// The union of this blackout's windows that contain `t`, if any.
    /// Instants within a few days of the ends of chrono's range (years ±262,000) are treated as
    /// outside every blackout, so local-time arithmetic near them cannot overflow.
    pub(crate) fn window_at(&self, t: DateTime<Utc>) -> Option<Window> {
        let margin = TimeDelta::days(4);
        if t < DateTime::<Utc>::MIN_UTC + margin || t > DateTime::<Utc>::MAX_UTC - margin {
            return None;
        }
        match self {
            Self::Daily {
                start,
                end,
                time_zone,
            } => daily_window_at(*start, *end, *time_zone, t),
            Self::Cron {
                schedule,
                duration,
                time_zone,
            } => {
                let duration = TimeDelta::from_std(*duration).ok()?;
                cron_window_at(schedule, duration, *time_zone, t)
            }
        }
    }
}

/// The smallest window covering both.
pub(crate) fn union(a: Option<Window>, b: Window) -> Option<Window> {
    Some(match a {
        Some(a) => (a.0.min(b.0), a.1.max(b.1)),
        None => b,
    })
}

fn contains(w: Window, t: DateTime<Utc>) -> bool {
    w.0 <= t && t < w.1
}

/// The window that starts on local `date`, or `None` if it is empty that day (inside a gap).
fn daily_window_on(date: NaiveDate, start: NaiveTime, end: NaiveTime, tz: Tz) -> Option<Window> {
    let end_date = if end > start { date } else { date.succ_opt()? };
    let from = local::earliest(tz, date.and_time(start));
    let to = local::latest(tz, end_date.and_time(end));
    (from < to).then_some((from, to))
}

/// Windows are at most a day long, so one containing `t` starts on the local date of `t` or the
/// day before; the day after is checked too for zones whose clocks go back across midnight.
fn daily_window_at(start: NaiveTime, end: NaiveTime, tz: Tz, t: DateTime<Utc>) -> Option<Window> {
    let date = t.with_timezone(&tz).date_naive();
    [date.pred_opt(), Some(date), date.succ_opt()]
        .into_iter()
        .flatten()
        .filter_map(|d| daily_window_on(d, start, end, tz))
        .filter(|w| contains(*w, t))
        .fold(None, union)
}

/// Cron fire times are evaluated on naive local time (the cron crate is given UTC, which has no
/// DST) and resolved to instants here, so gaps and folds follow the same rules as daily windows.
/// A window containing `t` fired after `t - duration` and no later than `t`, in local readings
/// widened by the offsets in force and a margin for the shift of a DST change.
fn cron_window_at(
    schedule: &cron::Schedule,
    duration: TimeDelta,
    tz: Tz,
    t: DateTime<Utc>,
) -> Option<Window> {
    let earliest_start = t.checked_sub_signed(duration)?;
    let offsets = [
        local::offset_secs(tz, earliest_start),
        local::offset_secs(tz, t),
    ];
    let margin = TimeDelta::hours(3);
    let lower = earliest_start
        .naive_utc()
        .checked_add_signed(TimeDelta::seconds(offsets.iter().copied().min()?) - margin)?;
    let upper = t
        .naive_utc()
        .checked_add_signed(TimeDelta::seconds(offsets.iter().copied().max()?) + margin)?;
    schedule
        .after(&lower.and_utc())
        .take(MAX_FIRES_EXAMINED)
        .map(|fire| fire.naive_utc())
        .take_while(|fire| *fire <= upper)
        .filter_map(|fire| {
            let from = local::earliest(tz, fire);
            let to = local::latest(tz, fire).checked_add_signed(duration)?;
            Some((from, to))
        })
        .filter(|w| contains(*w, t))
        .fold(None, union)
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum BlackoutConfig {
    Daily(DailyConfig),
    Cron(CronConfig),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DailyConfig {
    start: String,
    end: String,
    time_zone: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CronConfig {
    expression: String,
    duration_secs: u64,
    time_zone: String,
}

impl TryFrom<BlackoutConfig> for Blackout {
    type Error = ScheduleError;

    fn try_from(config: BlackoutConfig) -> Result<Self, Self::Error> {
        let blackout = match config {
            BlackoutConfig::Daily(c) => Self::Daily {
                start: parse_time(&c.start)?,
                end: parse_time(&c.end)?,
                time_zone: parse_zone(&c.time_zone)?,
            },
            BlackoutConfig::Cron(c) => Self::Cron {
                schedule: parse_cron(&c.expression)?,
                duration: Duration::from_secs(c.duration_secs),
                time_zone: parse_zone(&c.time_zone)?,
            },
        };
        blackout.validate()?;
        Ok(blackout)
    }
}

fn parse_time(s: &str) -> Result<NaiveTime, ScheduleError> {
    NaiveTime::parse_from_str(s, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"))
        .map_err(|_| ScheduleError::InvalidTime(s.to_owned()))
}

fn parse_zone(s: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(s).map_err(|_| ScheduleError::UnknownTimeZone(s.to_owned()))
}

fn parse_cron(s: &str) -> Result<cron::Schedule, ScheduleError> {
    cron::Schedule::from_str(s).map_err(|e| ScheduleError::InvalidCron {
        expression: s.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn daily_window_skips_a_day_when_it_lies_inside_the_gap() {
        let b = Blackout::daily("02:15", "02:45", "America/Los_Angeles").unwrap();
        assert_eq!(b.window_at(utc("2026-03-08T10:00:00Z")), None);
        assert_eq!(b.window_at(utc("2026-03-08T09:59:59Z")), None);
        assert_eq!(
            b.window_at(utc("2026-03-09T09:20:00Z")),
            Some((utc("2026-03-09T09:15:00Z"), utc("2026-03-09T09:45:00Z")))
        );
    }

    #[test]
    fn cron_fire_in_a_gap_starts_when_the_clocks_jump() {
        let b = Blackout::cron(
            "0 30 2 * * *",
            Duration::from_secs(1800),
            "America/Los_Angeles",
        )
        .unwrap();
        assert_eq!(
            b.window_at(utc("2026-03-08T10:10:00Z")),
            Some((utc("2026-03-08T10:00:00Z"), utc("2026-03-08T10:30:00Z")))
        );
    }

    #[test]
    fn cron_fire_in_a_fold_covers_both_occurrences() {
        let b = Blackout::cron(
            "0 30 1 * * *",
            Duration::from_secs(1800),
            "America/Los_Angeles",
        )
        .unwrap();
        let expected = Some((utc("2026-11-01T08:30:00Z"), utc("2026-11-01T10:00:00Z")));
        assert_eq!(b.window_at(utc("2026-11-01T08:30:00Z")), expected);
        assert_eq!(b.window_at(utc("2026-11-01T09:45:00Z")), expected);
        assert_eq!(b.window_at(utc("2026-11-01T10:00:00Z")), None);
    }

    #[test]
    fn overlapping_cron_windows_merge() {
        let b = Blackout::cron("0 */10 * * * *", Duration::from_secs(1500), "UTC").unwrap();
        assert_eq!(
            b.window_at(utc("2026-05-05T12:05:00Z")),
            Some((utc("2026-05-05T11:50:00Z"), utc("2026-05-05T12:25:00Z")))
        );
    }
}
