//! When a connection syncs next: a randomised interval, kept out of partner blackouts, and
//! backoff for retries after partner errors.
//!
//! Everything here takes the current time and a random source as arguments, so schedules, jitter,
//! blackouts and DST changes are tested deterministically.
//!
//! # Layout
//! - `mod.rs`: [`SyncPolicy`] (interval, blackouts, spread) and [`backoff`].
//! - `blackout.rs`: [`Blackout`] windows (daily local time or cron) and their configuration shape.
//! - `local.rs`: resolving local wall-clock readings to instants across DST gaps and folds.
//! - `refresh.rs`: when a token is refreshed ahead of its expiry.

mod blackout;
mod local;
pub mod refresh;

use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use rand::Rng;
use serde::Deserialize;

pub use self::blackout::Blackout;
use self::blackout::{Window, union};

/// Longest regular interval accepted: a month, far above any partner's policy, well below the
/// range where instant arithmetic could overflow.
pub const MAX_INTERVAL_SECS: u64 = 30 * 86_400;

/// Longest blackout spread accepted.
pub const MAX_SPREAD_SECS: u64 = 86_400;

/// Bound on the windows a single push walks through. Only a policy whose blackouts cover all of
/// time (for example two daily windows that together span the day) gets near it.
const MAX_PUSHES: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("interval_min_secs must be more than 0")]
    ZeroInterval,
    #[error("interval_min_secs ({min}) is more than interval_max_secs ({max})")]
    IntervalOrder { min: u64, max: u64 },
    #[error("interval_max_secs ({0}) is more than {MAX_INTERVAL_SECS}")]
    IntervalTooLong(u64),
    #[error("blackout_spread_secs ({0}) is more than {MAX_SPREAD_SECS}")]
    SpreadTooLong(u64),
    #[error("daily blackout starts and ends at {0}: its length is ambiguous")]
    EmptyDailyWindow(NaiveTime),
    #[error("cron blackout duration must be more than 0 and less than a day, got {0:?}")]
    CronDuration(Duration),
    #[error("invalid time of day {0:?}: expected HH:MM or HH:MM:SS")]
    InvalidTime(String),
    #[error("unknown time zone {0:?}: expected an IANA name such as America/Los_Angeles")]
    UnknownTimeZone(String),
    #[error("invalid cron expression {expression:?} (seconds first): {reason}")]
    InvalidCron { expression: String, reason: String },
}

/// Per-partner sync policy, read from configuration `[partners.<name>.sync]`.
///
/// Every field has a default and unknown fields are rejected; a policy read from configuration is
/// validated while it is read.
///
/// ```toml
/// [partners.dexcom.sync]
/// interval_min_secs = 2700      # 45 min
/// interval_max_secs = 4500      # 75 min
/// blackout_spread_secs = 900
/// blackouts = [
///   { daily = { start = "02:45", end = "03:45", time_zone = "America/Los_Angeles" } },
///   { cron = { expression = "0 0 3 * * Sun", duration_secs = 3600, time_zone = "UTC" } },
/// ]
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "SyncPolicyConfig")]
pub struct SyncPolicy {
    /// Shortest gap between two regular syncs of one connection.
    pub interval_min_secs: u64,
    /// Longest gap; the interval is uniform between the two so connections do not align.
    pub interval_max_secs: u64,
    /// Spans during which the partner must not be called (maintenance windows).
    pub blackouts: Vec<Blackout>,
    /// A time that falls in a blackout moves to the window's end plus a uniform random spread in
    /// [0, blackout_spread_secs], so the window's end is not a thundering herd.
    pub blackout_spread_secs: u64,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        Self {
            interval_min_secs: 2_700,
            interval_max_secs: 4_500,
            blackouts: Vec::new(),
            blackout_spread_secs: 900,
        }
    }
}

impl SyncPolicy {
    /// Dexcom's published policy: every 45–75 minutes, never 02:45–03:45 America/Los_Angeles.
    pub fn dexcom() -> Self {
        Self {
            blackouts: vec![Blackout::Daily {
                start: NaiveTime::from_hms_opt(2, 45, 0).expect("valid time"),
                end: NaiveTime::from_hms_opt(3, 45, 0).expect("valid time"),
                time_zone: chrono_tz::America::Los_Angeles,
            }],
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), ScheduleError> {
        let (min, max) = (self.interval_min_secs, self.interval_max_secs);
        if min == 0 {
            return Err(ScheduleError::ZeroInterval);
        }
        if min > max {
            return Err(ScheduleError::IntervalOrder { min, max });
        }
        if max > MAX_INTERVAL_SECS {
            return Err(ScheduleError::IntervalTooLong(max));
        }
        if self.blackout_spread_secs > MAX_SPREAD_SECS {
            return Err(ScheduleError::SpreadTooLong(self.blackout_spread_secs));
        }
        self.blackouts.iter().try_for_each(Blackout::validate)
    }

    /// The blackout window containing `t`, as `[start, end)` in UTC, if any. Where windows
    /// containing `t` overlap, this is their union; a window that merely starts inside it is not
    /// included (see [`Self::push_out_of_blackout`]).
    pub fn blackout_at(&self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.blackouts
            .iter()
            .filter_map(|b| b.window_at(t))
            .fold(None::<Window>, union)
    }

    /// `t` itself if outside every blackout; otherwise the end of the blackout, followed through
    /// any window that contains that end, plus a uniform spread in [0, blackout_spread_secs]. If
    /// the spread lands in another window, that one is left the same way.
    pub fn push_out_of_blackout(&self, t: DateTime<Utc>, rng: &mut impl Rng) -> DateTime<Utc> {
        let mut current = t;
        let mut pushed = false;
        for _ in 0..MAX_PUSHES {
            match self.blackout_at(current) {
                Some((_, end)) => {
                    current = end;
                    pushed = true;
                }
                None if pushed => {
                    current = add(current, self.spread(rng));
                    pushed = false;
                }
                None => return current,
            }
        }
        tracing::warn!(
            %t,
            %current,
            "blackouts chain for more than {MAX_PUSHES} windows; scheduling inside one"
        );
        current
    }

    /// The regular next sync after a completed one at `now`: uniform in
    /// [now + interval_min, now + interval_max] (millisecond steps), then pushed out of blackout.
    pub fn next_sync(&self, now: DateTime<Utc>, rng: &mut impl Rng) -> DateTime<Utc> {
        let a = self.interval_min_secs.saturating_mul(1_000);
        let b = self.interval_max_secs.saturating_mul(1_000);
        let millis = rng.random_range(a.min(b)..=a.max(b));
        let candidate = add(now, millis_delta(millis));
        self.push_out_of_blackout(candidate, rng)
    }

    /// A retry after an error: `now + delay`, pushed out of blackout.
    pub fn after_delay(
        &self,
        now: DateTime<Utc>,
        delay: Duration,
        rng: &mut impl Rng,
    ) -> DateTime<Utc> {
        let delay = TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
        self.push_out_of_blackout(add(now, delay), rng)
    }

    fn spread(&self, rng: &mut impl Rng) -> TimeDelta {
        match self.blackout_spread_secs.saturating_mul(1_000) {
            0 => TimeDelta::zero(),
            max => millis_delta(rng.random_range(0..=max)),
        }
    }
}

/// Exponential backoff with jitter for partner errors (apalis retries immediately, so retries are
/// scheduled here).
///
/// The exponential value is `base × 2^(attempt−1)` capped at `cap` (attempt 0 counts as 1). The
/// delay is uniform in [50%, 100%] of it ("equal jitter"): retries of many connections spread
/// out, yet none comes back sooner than half the intended wait, which full jitter (0–100%) would
/// allow.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, rng: &mut impl Rng) -> Duration {
    let doublings = attempt.saturating_sub(1);
    let exponential = 2u32
        .checked_pow(doublings)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(cap, |d| d.min(cap));
    let nanos = exponential.as_nanos();
    let jittered = rng.random_range(nanos / 2..=nanos);
    Duration::from_nanos(u64::try_from(jittered).unwrap_or(u64::MAX))
}

fn millis_delta(millis: u64) -> TimeDelta {
    i64::try_from(millis)
        .ok()
        .and_then(TimeDelta::try_milliseconds)
        .unwrap_or(TimeDelta::MAX)
}

/// `t + d`, saturating at the last representable instant rather than panicking.
fn add(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The configuration shape: every field defaulted, unknown fields rejected.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SyncPolicyConfig {
    interval_min_secs: u64,
    interval_max_secs: u64,
    blackouts: Vec<Blackout>,
    blackout_spread_secs: u64,
}

impl Default for SyncPolicyConfig {
    fn default() -> Self {
        let SyncPolicy {
            interval_min_secs,
            interval_max_secs,
            blackouts,
            blackout_spread_secs,
        } = SyncPolicy::default();
        Self {
            interval_min_secs,
            interval_max_secs,
            blackouts,
            blackout_spread_secs,
        }
    }
}

impl TryFrom<SyncPolicyConfig> for SyncPolicy {
    type Error = ScheduleError;

    fn try_from(c: SyncPolicyConfig) -> Result<Self, Self::Error> {
        let policy = Self {
            interval_min_secs: c.interval_min_secs,
            interval_max_secs: c.interval_max_secs,
            blackouts: c.blackouts,
            blackout_spread_secs: c.blackout_spread_secs,
        };
        policy.validate()?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    #[test]
    fn backoff_attempt_zero_counts_as_one() {
        let mut rng = StdRng::seed_from_u64(7);
        let base = Duration::from_secs(60);
        for _ in 0..100 {
            let d = backoff(0, base, Duration::from_secs(3600), &mut rng);
            assert!(d >= base / 2 && d <= base, "{d:?}");
        }
    }

    #[test]
    fn backoff_does_not_overflow_on_huge_attempts() {
        let mut rng = StdRng::seed_from_u64(7);
        let cap = Duration::from_secs(16 * 3600);
        let d = backoff(u32::MAX, Duration::from_secs(7200), cap, &mut rng);
        assert!(d >= cap / 2 && d <= cap);
    }

    #[test]
    fn next_sync_tolerates_an_unvalidated_policy() {
        let mut rng = StdRng::seed_from_u64(1);
        let policy = SyncPolicy {
            interval_min_secs: 20,
            interval_max_secs: 10,
            blackouts: Vec::new(),
            blackout_spread_secs: u64::MAX,
        };
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let next = policy.next_sync(now, &mut rng);
        assert!(next >= now + TimeDelta::seconds(10) && next <= now + TimeDelta::seconds(20));
    }

    #[test]
    fn a_blackout_covering_all_time_does_not_hang() {
        let mut rng = StdRng::seed_from_u64(1);
        let policy = SyncPolicy {
            blackouts: vec![
                Blackout::daily("00:00", "12:30", "UTC").unwrap(),
                Blackout::daily("12:00", "00:30", "UTC").unwrap(),
            ],
            ..SyncPolicy::default()
        };
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let _ = policy.next_sync(now, &mut rng);
    }

    #[test]
    fn instants_at_the_ends_of_time_do_not_panic() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut p = SyncPolicy::dexcom();
        p.blackouts.push(
            Blackout::cron(
                "0 0 3 * * *",
                Duration::from_secs(600),
                "Pacific/Kiritimati",
            )
            .unwrap(),
        );
        p.blackouts
            .push(Blackout::daily("23:00", "01:00", "Pacific/Kiritimati").unwrap());
        p.blackouts
            .push(Blackout::daily("23:00", "01:00", "Etc/GMT+12").unwrap());
        for t in [
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC - TimeDelta::hours(13),
            DateTime::<Utc>::MIN_UTC + TimeDelta::hours(11),
            DateTime::<Utc>::MAX_UTC - TimeDelta::days(5),
            DateTime::<Utc>::MIN_UTC + TimeDelta::days(5),
        ] {
            let _ = p.blackout_at(t);
            let _ = p.after_delay(t, Duration::MAX, &mut rng);
            let _ = p.next_sync(t, &mut rng);
        }
    }
}
