//! CGM records about the data rather than readings: the device record and `dataRange`.

use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    DataContext, Profile,
    cgm::{calibration_times, egv_times, event_times, system_time},
    cgm_events::display_app,
    profile, user_id,
};

/// The device record of `/devices`. Alert schedules are kept as JSON: clients map only a few
/// of their many fields, and some users' schedules carry duplicate alert settings (a quirk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub last_upload_date: String,
    pub transmitter_id: Option<String>,
    pub transmitter_generation: String,
    pub display_device: String,
    pub display_app: String,
    pub alert_schedules: Vec<Value>,
}

/// The `dataRange` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataRange {
    pub record_type: String,
    pub record_version: String,
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibrations: Option<CgmRange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egvs: Option<CgmRange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<CgmRange>,
}

/// First and last record of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgmRange {
    pub start: RangeEnd,
    pub end: RangeEnd,
}

/// The times of a range's first or last record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeEnd {
    pub system_time: String,
    pub display_time: String,
}

/// Devices served at `now`: one record whose `lastUploadDate` is the newest published EGV, or
/// none before any EGV is published. One user in ten has no device record at all, a quirk
/// Dexcom shows too.
pub fn devices(ctx: &DataContext, user: &str, now: DateTime<Utc>) -> Vec<Device> {
    let p = profile(user);
    if p.seed.is_multiple_of(10) {
        return Vec::new();
    }
    let Some(last) = last_published(ctx, user, now, &|s, e| egv_times(ctx, s, e).collect()) else {
        return Vec::new();
    };
    vec![Device {
        last_upload_date: system_time(last),
        transmitter_id: Some(p.transmitter_id.clone()),
        transmitter_generation: "g7".into(),
        display_device: p.display_device().into(),
        display_app: display_app(&p).into(),
        alert_schedules: vec![alert_schedule(&p, last)],
    }]
}

fn alert_schedule(p: &Profile, last: DateTime<Utc>) -> Value {
    let setting = |name: &str, value: Option<i64>, snooze: i64| {
        json!({
            "alertName": name, "value": value, "unit": "mg/dL", "snooze": snooze,
            "enabled": true, "systemTime": system_time(last), "displayTime": p.display_time(last),
            "delay": 0, "secondaryTriggerCondition": 0, "soundTheme": "modern",
            "soundOutputMode": "sound",
        })
    };
    let mut settings = vec![
        setting("high", Some(250), 120),
        setting("low", Some(70), 30),
        setting("urgentLow", Some(55), 30),
        setting("rise", Some(3), 0),
        setting("noReadings", None, 20),
    ];
    if p.seed.is_multiple_of(3) {
        settings.push(setting("high", Some(250), 120));
    }
    json!({
        "alertScheduleSettings": {
            "alertScheduleName": "Default", "isEnabled": true, "isDefaultSchedule": true,
            "startTime": "00:00", "endTime": "00:00", "isActive": true,
            "daysOfWeek": ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"],
        },
        "alertSettings": settings,
    })
}

/// `dataRange` at `now`. Without `last_sync`, each kind spans its first to its last published
/// record. With `last_sync`, `start` is the earliest record *published after* `last_sync`
/// (a backfilled gap pulls it back in time), so a client knows where new data landed; a kind
/// with nothing new is omitted.
pub fn data_range(
    ctx: &DataContext,
    user: &str,
    now: DateTime<Utc>,
    last_sync: Option<DateTime<Utc>>,
) -> DataRange {
    let p = profile(user);
    let egvs = |s, e| egv_times(ctx, s, e).collect::<Vec<_>>();
    let calibrations = |s, e| calibration_times(ctx, &p, s, e).collect::<Vec<_>>();
    let events = |s, e| event_times(ctx, &p, s, e);
    DataRange {
        record_type: "dataRange".into(),
        record_version: "3.0".into(),
        user_id: user_id(user),
        calibrations: range(ctx, user, &p, now, last_sync, calibrations),
        egvs: range(ctx, user, &p, now, last_sync, egvs),
        events: range(ctx, user, &p, now, last_sync, events),
    }
}

type Times<'a> = dyn Fn(DateTime<Utc>, DateTime<Utc>) -> Vec<DateTime<Utc>> + 'a;

fn range(
    ctx: &DataContext,
    user: &str,
    p: &Profile,
    now: DateTime<Utc>,
    last_sync: Option<DateTime<Utc>>,
    times: impl Fn(DateTime<Utc>, DateTime<Utc>) -> Vec<DateTime<Utc>>,
) -> Option<CgmRange> {
    let end = last_published(ctx, user, now, &times)?;
    let new_since = |t: &DateTime<Utc>| {
        ctx.is_published(user, *t, now) && last_sync.is_none_or(|l| ctx.published_at(user, *t) > l)
    };
    // Records published after `last_sync` are at most `max_lag` older than it.
    let mut lo = match last_sync {
        None => ctx.history_start,
        Some(l) => (l - ctx.max_lag() - TimeDelta::minutes(5)).max(ctx.history_start),
    };
    let start = loop {
        if lo > now {
            break None;
        }
        let hi = lo + TimeDelta::days(1) - TimeDelta::seconds(1);
        if let Some(t) = times(lo, hi).into_iter().find(new_since) {
            break Some(t);
        }
        lo = hi + TimeDelta::seconds(1);
    }?;
    let at = |t: DateTime<Utc>| RangeEnd {
        system_time: system_time(t),
        display_time: p.display_time(t),
    };
    Some(CgmRange {
        start: at(start),
        end: at(end),
    })
}

/// The newest record published at `now`, scanning back a day at a time.
fn last_published(
    ctx: &DataContext,
    user: &str,
    now: DateTime<Utc>,
    times: &Times<'_>,
) -> Option<DateTime<Utc>> {
    let mut hi = now;
    while hi >= ctx.history_start {
        let lo = hi - TimeDelta::days(1) + TimeDelta::seconds(1);
        let found = times(lo, hi)
            .into_iter()
            .filter(|t| ctx.is_published(user, *t, now))
            .max();
        if found.is_some() {
            return found;
        }
        hi = lo - TimeDelta::seconds(1);
    }
    None
}
