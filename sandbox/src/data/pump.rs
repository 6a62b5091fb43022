//! The pump cloud's records (our own design, with the fields Tidepool asks pump partners for
//! and the Tidepool basal/bolus model: docs/data-model.md#pump-records): basal segments every
//! 30 minutes and a few boluses a day.
//! Windows are `[start, end)`; records are ordered by (`time`, `id`), the paging order.

use chrono::{DateTime, Duration as TimeDelta, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Serialize};

use super::{
    DataContext, KIND_BASAL, KIND_BOLUS, Profile, aligned, days, mix, profile, round_to, unit,
    uuid_from,
};

/// Seconds between basal segments.
pub const BASAL_INTERVAL_SECS: i64 = 1800;
/// Model name in every pump record.
pub const DEVICE_MODEL: &str = "ACMEPumpModel123";
/// Manufacturer name in every pump record.
pub const DEVICE_MANUFACTURER: &str = "ACME";

/// Fields common to every pump record, describing the device and its clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PumpDevice {
    /// Stable per pump: `ACMEPumpCo-<serial>`.
    pub device_id: String,
    pub serial_number: String,
    pub device_model: String,
    pub device_manufacturer: String,
    pub device_name: String,
    /// IANA zone of the pump's clock.
    pub timezone: String,
    /// Pump clock's offset from UTC at `time`, in minutes.
    pub timezone_offset: i32,
    /// Local wall-clock time of the record, no zone.
    pub device_time: String,
}

/// One basal segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Basal {
    pub id: String,
    /// Always `basal`.
    #[serde(rename = "type")]
    pub record_type: String,
    /// RFC 3339, UTC, seconds precision.
    pub time: String,
    #[serde(flatten)]
    pub device: PumpDevice,
    /// `scheduled`, `temp`, `automated` or `suspend`.
    pub delivery_type: String,
    /// U/h; absent while suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Temp basals: fraction of the scheduled rate (0.5 = 50 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Actual duration, ms.
    pub duration: i64,
    /// Programmed duration, ms (longer than `duration` when a temp basal was cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_duration: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_name: Option<String>,
}

/// One bolus: `normal`, `square` (extended over `duration`) or `dual/square` (both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bolus {
    pub id: String,
    /// Always `bolus`.
    #[serde(rename = "type")]
    pub record_type: String,
    pub time: String,
    #[serde(flatten)]
    pub device: PumpDevice,
    pub sub_type: String,
    /// `device` or `remote` (given from the phone app).
    pub delivery_context: String,
    /// Units delivered immediately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal: Option<f64>,
    /// Units programmed immediately; more than `normal` when interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_normal: Option<f64>,
    /// Units delivered over `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_extended: Option<f64>,
    /// Extended part's duration, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_duration: Option<i64>,
}

/// Records that page by (`time`, `id`). Times share one format, so string order is time order.
pub trait PumpRecord: Clone {
    /// The paging key.
    fn key(&self) -> (&str, &str);
}

impl PumpRecord for Basal {
    fn key(&self) -> (&str, &str) {
        (&self.time, &self.id)
    }
}

impl PumpRecord for Bolus {
    fn key(&self) -> (&str, &str) {
        (&self.time, &self.id)
    }
}

/// One page of `records` (sorted by key): up to `limit` records after `after`, and the key to
/// continue from when more remain.
pub fn page<T: PumpRecord>(
    records: &[T],
    after: Option<(&str, &str)>,
    limit: usize,
) -> (Vec<T>, Option<(String, String)>) {
    let rest: Vec<&T> = records
        .iter()
        .filter(|r| after.is_none_or(|a| r.key() > a))
        .collect();
    let taken: Vec<T> = rest.iter().take(limit).map(|r| (*r).clone()).collect();
    let next = (rest.len() > limit)
        .then(|| {
            taken
                .last()
                .map(|r| (r.key().0.to_owned(), r.key().1.to_owned()))
        })
        .flatten();
    (taken, next)
}

/// Basal segments served at `now` whose `time` is in `[start, end)`, in paging order.
pub fn basal(
    ctx: &DataContext,
    user: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Basal> {
    let p = profile(user);
    let last = end - TimeDelta::nanoseconds(1);
    let mut out: Vec<Basal> = aligned(start.max(ctx.history_start), last, BASAL_INTERVAL_SECS, 0)
        .filter(|t| ctx.is_published(user, *t, now))
        .map(|t| basal_at(&p, t))
        .collect();
    out.sort_by(|a, b| a.key().cmp(&b.key()));
    out
}

/// Every basal segment in `[start, end)`.
pub fn expected_basal(
    ctx: &DataContext,
    user: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<Basal> {
    basal(ctx, user, start, end, DateTime::<Utc>::MAX_UTC)
}

/// Boluses served at `now` whose `time` is in `[start, end)`, in paging order.
pub fn bolus(
    ctx: &DataContext,
    user: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Bolus> {
    let p = profile(user);
    let lo = start.max(ctx.history_start);
    if lo >= end {
        return Vec::new();
    }
    let mut out = Vec::new();
    for day in days(lo, end) {
        let midnight = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        let day_ts = midnight.timestamp();
        let n = 3 + mix(p.seed, KIND_BOLUS, day_ts) % 4;
        let width = 1440 / n;
        for i in 0..n {
            // One bolus per slice of the day, at minute resolution: times never collide.
            let minute =
                (i * width + mix(p.seed, KIND_BOLUS, day_ts + i as i64 + 1) % width) as i64;
            let t = midnight + TimeDelta::minutes(minute);
            if lo <= t && t < end && ctx.is_published(user, t, now) {
                out.push(bolus_at(&p, t));
            }
        }
    }
    out.sort_by(|a, b| a.key().cmp(&b.key()));
    out
}

/// Every bolus in `[start, end)`.
pub fn expected_bolus(
    ctx: &DataContext,
    user: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<Bolus> {
    bolus(ctx, user, start, end, DateTime::<Utc>::MAX_UTC)
}

fn device(p: &Profile, t: DateTime<Utc>) -> PumpDevice {
    PumpDevice {
        device_id: format!("ACMEPumpCo-{}", p.serial_number),
        serial_number: p.serial_number.clone(),
        device_model: DEVICE_MODEL.into(),
        device_manufacturer: DEVICE_MANUFACTURER.into(),
        device_name: format!("{DEVICE_MANUFACTURER} {DEVICE_MODEL}"),
        timezone: p.timezone.into(),
        timezone_offset: p.utc_offset_minutes(t),
        device_time: p.device_time(t),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The user's programmed basal rate at `t`, by local hour (dawn phenomenon included).
fn scheduled_rate(p: &Profile, t: DateTime<Utc>) -> f64 {
    let local_hour = (t + TimeDelta::minutes(p.utc_offset_minutes(t).into())).hour();
    let base = match local_hour {
        0..=3 => 0.8,
        4..=7 => 1.1,
        8..=19 => 0.95,
        _ => 0.85,
    };
    round_to(base * (0.7 + unit(p.seed) * 0.6), 0.05)
}

fn basal_at(p: &Profile, t: DateTime<Utc>) -> Basal {
    let ts = t.timestamp();
    let h = mix(p.seed, KIND_BASAL, ts);
    let slot_ms = BASAL_INTERVAL_SECS * 1000;
    let scheduled = scheduled_rate(p, t);
    let (delivery, rate, percent, expected, schedule) = match h % 100 {
        0..=54 => (
            "automated",
            Some(round_to(unit(h >> 8) * 3.0, 0.05)),
            None,
            Some(slot_ms),
            None,
        ),
        55..=84 => (
            "scheduled",
            Some(scheduled),
            None,
            Some(slot_ms),
            Some("Standard"),
        ),
        85..=94 => {
            let pct = [0.0, 0.5, 0.7, 1.2, 1.5][((h >> 8) % 5) as usize];
            // Every other temp basal was programmed for an hour and cancelled after 30 min.
            let expected = if (h >> 16).is_multiple_of(2) {
                slot_ms
            } else {
                2 * slot_ms
            };
            (
                "temp",
                Some(round_to(scheduled * pct, 0.05)),
                Some(pct),
                Some(expected),
                Some("Standard"),
            )
        }
        _ => ("suspend", None, None, None, None),
    };
    Basal {
        id: uuid_from(p.seed, KIND_BASAL, ts).to_string(),
        record_type: "basal".into(),
        time: rfc3339(t),
        device: device(p, t),
        delivery_type: delivery.into(),
        rate,
        percent,
        duration: slot_ms,
        expected_duration: expected,
        schedule_name: schedule.map(str::to_owned),
    }
}

fn bolus_at(p: &Profile, t: DateTime<Utc>) -> Bolus {
    let ts = t.timestamp();
    let h = mix(p.seed, KIND_BOLUS, ts);
    let amount = |shift: u32| round_to(0.5 + unit(h >> shift) * 9.5, 0.05);
    let interrupted = (h >> 40).is_multiple_of(20);
    let normal_parts = |n: f64| {
        if interrupted {
            (Some(round_to(n / 2.0, 0.05)), Some(n))
        } else {
            (Some(n), None)
        }
    };
    let duration_ms = (30 + ((h >> 24) % 8) as i64 * 30) * 60_000;
    let (sub_type, (normal, expected_normal), extended, duration) = match (h >> 8) % 100 {
        0..=69 => ("normal", normal_parts(amount(12)), None, None),
        70..=84 => ("square", (None, None), Some(amount(16)), Some(duration_ms)),
        _ => (
            "dual/square",
            normal_parts(amount(12)),
            Some(amount(16)),
            Some(duration_ms),
        ),
    };
    Bolus {
        id: uuid_from(p.seed, KIND_BOLUS, ts).to_string(),
        record_type: "bolus".into(),
        time: rfc3339(t),
        device: device(p, t),
        sub_type: sub_type.into(),
        delivery_context: if (h >> 48).is_multiple_of(5) {
            "remote"
        } else {
            "device"
        }
        .into(),
        normal,
        expected_normal,
        extended,
        expected_extended: extended,
        duration,
        expected_duration: duration,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn paging_visits_every_record_once() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let ctx = DataContext::immediate(start);
        let all = expected_basal(&ctx, "carol", start, start + TimeDelta::days(2));
        assert_eq!(all.len(), 96);
        let mut seen = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let (page, next) = page(
                &all,
                after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                7,
            );
            seen.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn boluses_have_the_fields_of_their_subtype() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let ctx = DataContext::immediate(start);
        let all = expected_bolus(&ctx, "dave", start, start + TimeDelta::days(30));
        assert!(all.len() >= 90);
        for b in &all {
            match b.sub_type.as_str() {
                "normal" => assert!(b.normal.is_some() && b.extended.is_none()),
                "square" => {
                    assert!(b.normal.is_none() && b.extended.is_some() && b.duration.is_some())
                }
                "dual/square" => assert!(b.normal.is_some() && b.extended.is_some()),
                other => panic!("unexpected subtype {other}"),
            }
        }
        let kinds: std::collections::HashSet<_> = all.iter().map(|b| b.sub_type.as_str()).collect();
        assert_eq!(kinds.len(), 3);
    }
}
