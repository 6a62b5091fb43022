//! Dexcom-v3-shaped CGM records: EGVs, calibrations, events, alerts (event and alert builders
//! live in `cgm_events.rs`, devices and `dataRange` in `cgm_meta.rs`). Field names follow
//! Dexcom's v3 API exactly (docs/dexcom.md#records); enum-like fields are strings so the
//! sandbox can serve values outside the documented enums, as Dexcom does
//! (docs/dexcom.md#unknown-values).

use std::f64::consts::TAU;

use chrono::{DateTime, Duration as TimeDelta, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cgm_events::{alert_at, event_at};
pub use super::cgm_meta::{CgmRange, DataRange, Device, RangeEnd, data_range, devices};
use super::{
    DataContext, KIND_ALERT, KIND_CALIBRATION, KIND_EGV, KIND_EVENT, Profile, aligned, days, mix,
    profile, round_to, unit, uuid_from,
};

/// Seconds between EGVs.
pub const EGV_INTERVAL_SECS: i64 = 300;
/// Seconds between calibrations.
pub const CALIBRATION_INTERVAL_SECS: i64 = 12 * 3600;
/// After this long, an event that will be corrected is republished with `eventStatus: updated`.
pub const EVENT_UPDATE_LAG: TimeDelta = TimeDelta::hours(3);
/// After this long, an event that will be removed is republished with `eventStatus: deleted`.
pub const EVENT_DELETE_LAG: TimeDelta = TimeDelta::hours(6);

/// One estimated glucose value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Egv {
    pub record_id: String,
    pub system_time: String,
    pub display_time: String,
    pub transmitter_id: Option<String>,
    pub transmitter_ticks: i64,
    pub value: i64,
    pub status: Option<String>,
    pub trend: Option<String>,
    pub trend_rate: Option<f64>,
    pub unit: String,
    pub rate_unit: String,
    pub display_device: String,
    pub transmitter_generation: String,
    /// Only present (true) on readings served late from a withheld gap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfilled: bool,
}

/// One fingerstick calibration entered on the CGM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Calibration {
    pub record_id: String,
    pub system_time: String,
    pub display_time: String,
    pub unit: String,
    pub value: i64,
    pub transmitter_id: Option<String>,
    pub transmitter_ticks: i64,
    pub transmitter_generation: String,
    pub display_device: String,
}

/// One user-entered event. `value` is usually a string (the schema) and sometimes a number
/// (one documented example), so clients must accept both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub record_id: String,
    pub system_time: String,
    pub display_time: String,
    pub event_status: String,
    pub event_type: String,
    pub event_sub_type: Option<String>,
    pub value: Value,
    pub unit: String,
    pub transmitter_id: Option<String>,
    pub transmitter_generation: String,
    pub display_device: String,
}

/// One alert raised by the CGM app or receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub record_id: String,
    pub system_time: String,
    pub display_time: String,
    pub alert_name: String,
    pub alert_state: String,
    pub transmitter_id: Option<String>,
    pub transmitter_generation: String,
    pub display_device: String,
    pub display_app: String,
}

/// Dexcom's `systemTime` format: UTC, no zone designator.
pub fn system_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// EGVs served at `now` in `[start, end]`, newest first (the order of the HTTP response).
pub fn egvs(
    ctx: &DataContext,
    user: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Egv> {
    let p = profile(user);
    let mut out: Vec<Egv> = egv_times(ctx, start, end)
        .filter(|t| ctx.is_published(user, *t, now))
        .map(|t| egv_at(&p, t, ctx.withheld(user, t)))
        .collect();
    out.reverse();
    out
}

/// Every EGV in `[start, end]` as it is once published, newest first.
pub fn expected_egvs(
    ctx: &DataContext,
    user: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<Egv> {
    egvs(ctx, user, start, end, DateTime::<Utc>::MAX_UTC)
}

/// Calibrations served at `now` in `[start, end]`, newest first.
pub fn calibrations(
    ctx: &DataContext,
    user: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Calibration> {
    let p = profile(user);
    let mut out: Vec<Calibration> = calibration_times(ctx, &p, start, end)
        .filter(|t| ctx.is_published(user, *t, now))
        .map(|t| calibration_at(&p, t))
        .collect();
    out.reverse();
    out
}

/// Every calibration in `[start, end]`, newest first.
pub fn expected_calibrations(
    ctx: &DataContext,
    user: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<Calibration> {
    calibrations(ctx, user, start, end, DateTime::<Utc>::MAX_UTC)
}

/// Events served at `now` in `[start, end]` (by `systemTime`), newest first, each in the latest
/// version published by `now`: `created`, later possibly `updated` (same `recordId`, another
/// value) or `deleted`.
pub fn events(
    ctx: &DataContext,
    user: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Event> {
    let p = profile(user);
    let mut out: Vec<Event> = daily_times(ctx, &p, KIND_EVENT, start, end, |h| 3 + h % 5)
        .into_iter()
        .filter_map(|(t, key)| event_at(ctx, user, &p, t, key, now))
        .collect();
    out.reverse();
    out
}

/// Every event in `[start, end]` in its final version, newest first.
pub fn expected_events(
    ctx: &DataContext,
    user: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<Event> {
    events(ctx, user, start, end, DateTime::<Utc>::MAX_UTC)
}

/// Alerts served at `now` in `[start, end]`, newest first.
pub fn alerts(
    ctx: &DataContext,
    user: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Alert> {
    let p = profile(user);
    let mut out: Vec<Alert> = daily_times(ctx, &p, KIND_ALERT, start, end, |h| 1 + h % 4)
        .into_iter()
        .filter(|(t, _)| ctx.is_published(user, *t, now))
        .map(|(t, key)| alert_at(&p, t, key))
        .collect();
    out.reverse();
    out
}

/// Every alert in `[start, end]`, newest first.
pub fn expected_alerts(
    ctx: &DataContext,
    user: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<Alert> {
    alerts(ctx, user, start, end, DateTime::<Utc>::MAX_UTC)
}

pub(crate) fn egv_times(
    ctx: &DataContext,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> impl Iterator<Item = DateTime<Utc>> {
    aligned(start.max(ctx.history_start), end, EGV_INTERVAL_SECS, 0)
}

pub(crate) fn calibration_times(
    ctx: &DataContext,
    p: &Profile,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> impl Iterator<Item = DateTime<Utc>> {
    let origin = (p.seed % 144) as i64 * EGV_INTERVAL_SECS;
    aligned(
        start.max(ctx.history_start),
        end,
        CALIBRATION_INTERVAL_SECS,
        origin,
    )
}

pub(crate) fn event_times(
    ctx: &DataContext,
    p: &Profile,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    daily_times(ctx, p, KIND_EVENT, start, end, |h| 3 + h % 5)
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

/// A few records per UTC day at hashed seconds, ascending, with a key unique per record.
/// `count` maps the day's hash to how many.
fn daily_times(
    ctx: &DataContext,
    p: &Profile,
    kind: u64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    count: impl Fn(u64) -> u64,
) -> Vec<(DateTime<Utc>, i64)> {
    let lo = start.max(ctx.history_start);
    if lo > end {
        return Vec::new();
    }
    let mut out = Vec::new();
    for day in days(lo, end) {
        out.extend(
            records_on(p, kind, day, &count)
                .into_iter()
                .filter(|(t, _)| lo <= *t && *t <= end),
        );
    }
    out.sort();
    out
}

fn records_on(
    p: &Profile,
    kind: u64,
    day: NaiveDate,
    count: &impl Fn(u64) -> u64,
) -> Vec<(DateTime<Utc>, i64)> {
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let day_ts = midnight.timestamp();
    (0..count(mix(p.seed, kind, day_ts)) as i64)
        .map(|i| {
            let offset = mix(p.seed, kind, day_ts + i + 1) % 86_400;
            let key = day_ts * 16 + i;
            (midnight + TimeDelta::seconds(offset as i64), key)
        })
        .collect()
}

/// The smooth part of the glucose curve (mg/dL): slow daily, 5-hour and meal-scale waves with
/// user-specific phases. Its slope decides `trend` and `trendRate`.
fn curve(seed: u64, t: DateTime<Utc>) -> f64 {
    let s = t.timestamp() as f64;
    let phase = |k: u64| unit(mix(seed, KIND_EGV, -(k as i64))) * TAU;
    150.0
        + 45.0 * (TAU * s / 86_400.0 + phase(1)).sin()
        + 30.0 * (TAU * s / 18_000.0 + phase(2)).sin()
        + 18.0 * (TAU * s / 5_820.0 + phase(3)).sin()
        + 12.0 * (TAU * s / 2_220.0 + phase(4)).sin()
}

/// Mostly `g7`; about 3% `g6 pro` and 1% `g715day`, values outside the documented enum that
/// once broke whole fetches at Tidepool.
pub(crate) fn generation(seed: u64, kind: u64, t: i64) -> &'static str {
    match mix(seed, kind ^ 0x5A5A, t) % 100 {
        0..=2 => "g6 pro",
        3 => "g715day",
        _ => "g7",
    }
}

/// Seconds since the start of the 10-day sensor session containing `t`.
fn ticks(p: &Profile, t: DateTime<Utc>) -> i64 {
    let session = 10 * 86_400;
    (t.timestamp() - (p.seed % 86_400) as i64).rem_euclid(session)
}

fn trend_for(rate: f64) -> &'static str {
    match rate {
        r if r > 3.0 => "doubleUp",
        r if r > 2.0 => "singleUp",
        r if r > 1.0 => "fortyFiveUp",
        r if r >= -1.0 => "flat",
        r if r >= -2.0 => "fortyFiveDown",
        r if r >= -3.0 => "singleDown",
        _ => "doubleDown",
    }
}

/// The EGV at `t` (a 5-minute boundary).
pub(crate) fn egv_at(p: &Profile, t: DateTime<Utc>, backfilled: bool) -> Egv {
    let ts = t.timestamp();
    let h = mix(p.seed, KIND_EGV, ts);
    let smooth = curve(p.seed, t);
    let noise = (unit(h >> 3) * 9.0).floor() - 4.0;
    // Rare sensor extremes so clients exercise the out-of-range annotations (< 40, > 400).
    let (value, status) = match h % 1000 {
        0..=2 => (30 + (h >> 20) as i64 % 10, Some("low")),
        3..=5 => (401 + (h >> 20) as i64 % 50, Some("high")),
        _ => (((smooth + noise).round() as i64).clamp(40, 400), None),
    };
    let (trend, trend_rate) = if (h >> 40).is_multiple_of(100) {
        (Some("notComputable"), None)
    } else {
        let rate = (smooth - curve(p.seed, t - TimeDelta::seconds(EGV_INTERVAL_SECS))) / 5.0;
        let rate = round_to(rate, 0.1);
        (Some(trend_for(rate)), Some(rate))
    };
    Egv {
        record_id: uuid_from(p.seed, KIND_EGV, ts).to_string(),
        system_time: system_time(t),
        display_time: p.display_time(t),
        transmitter_id: Some(p.transmitter_id.clone()),
        transmitter_ticks: ticks(p, t),
        value,
        status: status.map(str::to_owned),
        trend: trend.map(str::to_owned),
        trend_rate,
        unit: "mg/dL".into(),
        rate_unit: "mg/dL/min".into(),
        display_device: p.display_device().into(),
        transmitter_generation: generation(p.seed, KIND_EGV, ts).into(),
        backfilled,
    }
}

fn calibration_at(p: &Profile, t: DateTime<Utc>) -> Calibration {
    let ts = t.timestamp();
    let h = mix(p.seed, KIND_CALIBRATION, ts);
    Calibration {
        record_id: uuid_from(p.seed, KIND_CALIBRATION, ts).to_string(),
        system_time: system_time(t),
        display_time: p.display_time(t),
        unit: "mg/dL".into(),
        value: (curve(p.seed, t) + (h % 21) as f64 - 10.0).round() as i64,
        transmitter_id: Some(p.transmitter_id.clone()),
        transmitter_ticks: ticks(p, t),
        transmitter_generation: generation(p.seed, KIND_CALIBRATION, ts).into(),
        display_device: p.display_device().into(),
    }
}
