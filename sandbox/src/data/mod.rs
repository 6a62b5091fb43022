//! Deterministic partner data: every record is a pure function of (partner user name, time),
//! so a test can compute exactly what a complete transfer must contain.
//!
//! Two families of functions per record kind:
//! - `egvs(ctx, user, start, end, now)` and friends: what the partner serves at `now`
//!   (publication delay and withheld gaps applied, latest version of updated events);
//! - `expected_egvs(ctx, user, start, end)`: everything eventually published in the window, in
//!   its final version; what a client holds after it has caught up.
//!
//! Windows: CGM functions take `[start, end]` inclusive (like Dexcom, so adjacent windows share
//! one instant); pump functions take `[start, end)`. Nothing exists before `history_start`.

pub mod cgm;
mod cgm_events;
mod cgm_meta;
pub mod pump;
mod time;

use chrono::{DateTime, Duration as TimeDelta, NaiveDate, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use self::{
    cgm::{
        Alert, Calibration, CgmRange, DataRange, Device, Egv, Event, RangeEnd, alerts,
        calibrations, data_range, devices, egvs, events, expected_alerts, expected_calibrations,
        expected_egvs, expected_events,
    },
    pump::{
        Basal, Bolus, PumpDevice, PumpRecord, basal, bolus, expected_basal, expected_bolus, page,
    },
    time::{Display, Profile, profile},
};
use crate::faults::Faults;

/// Length of each day's withheld gap when the `backfill` fault is on.
pub const GAP_LENGTH: TimeDelta = TimeDelta::hours(2);

/// The inputs besides (user, time) that decide what is served: when history starts and the
/// publication faults. Build it with [`DataContext::new`] or `Sandbox::data_context()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataContext {
    /// Records exist from here on.
    pub history_start: DateTime<Utc>,
    /// A record is served once `now >= time + publication_delay`.
    pub publication_delay: TimeDelta,
    /// `Some(d)`: each day's gap is withheld until `gap end + d` (the `backfill` fault).
    pub backfill_delay: Option<TimeDelta>,
}

impl DataContext {
    /// The context the sandbox uses under these fault settings.
    pub fn new(history_start: DateTime<Utc>, faults: &Faults) -> Self {
        DataContext {
            history_start,
            publication_delay: secs(faults.publication_delay_secs),
            backfill_delay: faults.backfill.then(|| secs(faults.backfill_delay_secs)),
        }
    }

    /// A context with no delay and no backfill: everything is served as soon as it happens.
    pub fn immediate(history_start: DateTime<Utc>) -> Self {
        DataContext {
            history_start,
            publication_delay: TimeDelta::zero(),
            backfill_delay: None,
        }
    }

    /// True when `t` falls in a gap that is being withheld (only with the backfill fault on).
    pub fn withheld(&self, user: &str, t: DateTime<Utc>) -> bool {
        self.backfill_delay.is_some() && in_gap(user, t)
    }

    /// When a record stamped `t` becomes visible.
    pub fn published_at(&self, user: &str, t: DateTime<Utc>) -> DateTime<Utc> {
        let normal = t + self.publication_delay;
        match self.backfill_delay {
            Some(delay) if in_gap(user, t) => {
                let (_, gap_end) = gap_on(user, t.date_naive());
                normal.max(gap_end + delay)
            }
            _ => normal,
        }
    }

    /// True when a record stamped `t` exists and is served at `now`.
    pub fn is_published(&self, user: &str, t: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        t >= self.history_start && self.published_at(user, t) <= now
    }

    /// The largest lag between a record's time and its publication under this context; used
    /// to bound searches for records published after some instant.
    pub(crate) fn max_lag(&self) -> TimeDelta {
        let backfill = self
            .backfill_delay
            .map_or(TimeDelta::zero(), |d| GAP_LENGTH + d);
        self.publication_delay.max(backfill)
    }
}

/// The gap withheld on UTC day `day` for `user` when backfill is on: `[start, start + 2 h)`,
/// starting on a 5-minute boundary between 00:00 and 22:00.
pub fn gap_on(user: &str, day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let slot = mix(seed(user), KIND_GAP, midnight.timestamp()) % (22 * 12);
    let start = midnight + TimeDelta::minutes(5 * slot as i64);
    (start, start + GAP_LENGTH)
}

fn in_gap(user: &str, t: DateTime<Utc>) -> bool {
    let (start, end) = gap_on(user, t.date_naive());
    start <= t && t < end
}

/// The partner's user id for a partner user name (Dexcom's `userId`), a stable UUID.
pub fn user_id(user: &str) -> String {
    uuid_from(seed(user), KIND_USER, 0).to_string()
}

fn secs(s: u64) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}

// Salts so different record kinds drawn at the same instant are independent.
pub(crate) const KIND_USER: u64 = 1;
pub(crate) const KIND_GAP: u64 = 2;
pub(crate) const KIND_EGV: u64 = 3;
pub(crate) const KIND_CALIBRATION: u64 = 4;
pub(crate) const KIND_EVENT: u64 = 5;
pub(crate) const KIND_ALERT: u64 = 6;
pub(crate) const KIND_BASAL: u64 = 7;
pub(crate) const KIND_BOLUS: u64 = 8;
pub(crate) const KIND_PROFILE: u64 = 9;

/// 64 bits derived from the user name; SHA-256 once per request, then cheap mixing per record.
pub(crate) fn seed(user: &str) -> u64 {
    let digest = Sha256::digest(user.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// splitmix64 finalizer over (seed, kind, t): fast, well distributed, and stable forever
/// (the data must never change between versions, or stored expectations break).
pub(crate) fn mix(seed: u64, kind: u64, t: i64) -> u64 {
    let mut z = seed
        ^ kind.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (t as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform sample in [0, 1) from a hash.
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A version-4-shaped UUID drawn from the hash of (seed, kind, t).
pub(crate) fn uuid_from(seed: u64, kind: u64, t: i64) -> Uuid {
    let a = mix(seed, kind, t);
    let b = mix(a, kind ^ 0xFF, t);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_le_bytes());
    bytes[8..].copy_from_slice(&b.to_le_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Rounds to a multiple of `step` (0.05 U/h for rates, 0.1 for trend rates).
pub(crate) fn round_to(x: f64, step: f64) -> f64 {
    let r = (x / step).round() * step;
    // Strip binary noise (0.30000000000000004) so JSON shows what a partner would send.
    (r * 1000.0).round() / 1000.0
}

/// Days (UTC) overlapping `[start, end]`.
pub(crate) fn days(start: DateTime<Utc>, end: DateTime<Utc>) -> impl Iterator<Item = NaiveDate> {
    let first = start.date_naive();
    let last = end.date_naive();
    first.iter_days().take_while(move |d| *d <= last)
}

/// Times `origin + k * step` within `[start, end]` (inclusive), for a step in seconds.
pub(crate) fn aligned(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    step: i64,
    origin: i64,
) -> impl Iterator<Item = DateTime<Utc>> {
    let floor = origin + (start.timestamp() - origin).div_euclid(step) * step;
    // `timestamp()` floors, so a start with a fractional second lies after `floor`.
    let first = if floor == start.timestamp() && start.timestamp_subsec_nanos() == 0 {
        floor
    } else {
        floor + step
    };
    let last = end.timestamp();
    (0..)
        .map(move |k| first + k * step)
        .take_while(move |t| *t <= last)
        .filter_map(|t| DateTime::from_timestamp(t, 0))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn aligned_includes_both_bounds_and_skips_fractions() {
        let s = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let e = Utc.with_ymd_and_hms(2026, 1, 1, 0, 10, 0).unwrap();
        assert_eq!(aligned(s, e, 300, 0).count(), 3);
        let s2 = s + TimeDelta::milliseconds(1);
        assert_eq!(aligned(s2, e, 300, 0).count(), 2);
    }

    #[test]
    fn gaps_are_stable_and_inside_the_day() {
        let day = NaiveDate::from_ymd_opt(2026, 2, 3).unwrap();
        let (s, e) = gap_on("alice", day);
        assert_eq!(gap_on("alice", day), (s, e));
        assert_eq!(s.date_naive(), day);
        assert_eq!(e - s, GAP_LENGTH);
        assert_eq!(s.timestamp() % 300, 0);
    }

    #[test]
    fn publication_respects_delay_and_backfill() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let faults = Faults {
            publication_delay_secs: 600,
            backfill: true,
            ..Faults::default()
        };
        let ctx = DataContext::new(start, &faults);
        let (gs, ge) = gap_on("bob", NaiveDate::from_ymd_opt(2026, 1, 5).unwrap());
        assert_eq!(ctx.published_at("bob", gs), ge + TimeDelta::hours(1));
        let outside = ge + TimeDelta::minutes(5);
        assert_eq!(
            ctx.published_at("bob", outside),
            outside + TimeDelta::minutes(10)
        );
        assert!(!ctx.is_published("bob", start - TimeDelta::minutes(5), outside));
    }
}
