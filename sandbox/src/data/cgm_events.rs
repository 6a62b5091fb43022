//! CGM records entered by the user or raised by the app: events (with their later
//! corrections) and alerts.

use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde_json::Value;

use super::{
    DataContext, KIND_ALERT, KIND_EVENT, Profile,
    cgm::{Alert, EVENT_DELETE_LAG, EVENT_UPDATE_LAG, Event, generation, system_time},
    mix, round_to, uuid_from,
};

/// The version of the event at `t` served at `now`, if any version is published yet.
pub(crate) fn event_at(
    ctx: &DataContext,
    user: &str,
    p: &Profile,
    t: DateTime<Utc>,
    key: i64,
    now: DateTime<Utc>,
) -> Option<Event> {
    let created = ctx.published_at(user, t);
    if t < ctx.history_start || created > now {
        return None;
    }
    let h = mix(p.seed, KIND_EVENT, key);
    let fate = (h >> 48) % 100;
    let later = |lag: TimeDelta| created.max(t + lag + ctx.publication_delay);
    let status = match fate {
        0..=9 if later(EVENT_UPDATE_LAG) <= now => "updated",
        10..=15 if later(EVENT_DELETE_LAG) <= now => "deleted",
        _ => "created",
    };
    let (event_type, sub_type, unit_name, value) = event_content(h, status == "updated");
    Some(Event {
        record_id: uuid_from(p.seed, KIND_EVENT, key).to_string(),
        system_time: system_time(t),
        display_time: p.display_time(t),
        event_status: status.into(),
        event_type: event_type.into(),
        event_sub_type: sub_type.map(str::to_owned),
        value,
        unit: unit_name.into(),
        transmitter_id: Some(p.transmitter_id.clone()),
        transmitter_generation: generation(p.seed, KIND_EVENT, key).into(),
        display_device: p.display_device().into(),
    })
}

/// Type, subtype, unit and value of an event; a corrected event keeps its type but its value
/// changes, which is what a client must notice.
fn event_content(
    h: u64,
    corrected: bool,
) -> (&'static str, Option<&'static str>, &'static str, Value) {
    let pick = (h >> 8) % 100;
    let amount = (h >> 16) % 1000 + if corrected { 7 } else { 0 };
    // About one numeric value in ten: the documented example sends a number.
    let as_number = (h >> 32).is_multiple_of(10);
    let num = |x: f64| {
        if as_number {
            serde_json::json!(x)
        } else {
            Value::String(format!("{x}"))
        }
    };
    match pick {
        0..=29 => ("carbs", None, "grams", num((10 + amount % 80) as f64)),
        30..=54 => {
            let sub = if amount.is_multiple_of(4) {
                "longActing"
            } else {
                "fastActing"
            };
            (
                "insulin",
                Some(sub),
                "units",
                num(round_to(0.5 + (amount % 115) as f64 / 10.0, 0.5)),
            )
        }
        55..=64 => {
            let sub = ["light", "medium", "heavy"][(amount % 3) as usize];
            (
                "exercise",
                Some(sub),
                "minutes",
                num((10 + amount % 80) as f64),
            )
        }
        65..=74 => {
            let subs = [
                "illness",
                "stress",
                "highSymptoms",
                "lowSymptoms",
                "cycle",
                "alcohol",
            ];
            (
                "health",
                Some(subs[(amount % 6) as usize]),
                "unknown",
                Value::String(String::new()),
            )
        }
        75..=84 => {
            let notes = [
                "pizza night",
                "sensor felt loose",
                "long walk",
                "pump site change",
            ];
            (
                "notes",
                None,
                "unknown",
                Value::String(notes[(amount % 4) as usize].to_owned()),
            )
        }
        _ => (
            "bloodGlucose",
            None,
            "mg/dL",
            num((60 + amount % 240) as f64),
        ),
    }
}

pub(crate) fn alert_at(p: &Profile, t: DateTime<Utc>, key: i64) -> Alert {
    let h = mix(p.seed, KIND_ALERT, key);
    const NAMES: [(&str, u64); 10] = [
        ("high", 25),
        ("low", 20),
        ("rise", 10),
        ("fall", 10),
        ("urgentLow", 5),
        ("urgentLowSoon", 10),
        ("outOfRange", 5),
        ("noReadings", 10),
        ("fixedLow", 3),
        ("unknown", 2),
    ];
    let mut roll = (h >> 8) % 100;
    let name = NAMES
        .iter()
        .find(|(_, w)| {
            let hit = roll < *w;
            roll = roll.saturating_sub(*w);
            hit
        })
        .map_or("unknown", |(n, _)| n);
    let state = match (h >> 24) % 100 {
        0..=59 => "activeAlarming",
        60..=84 => "activeSnoozed",
        _ => "inactive",
    };
    Alert {
        record_id: uuid_from(p.seed, KIND_ALERT, key).to_string(),
        system_time: system_time(t),
        display_time: p.display_time(t),
        alert_name: name.into(),
        alert_state: state.into(),
        transmitter_id: Some(p.transmitter_id.clone()),
        transmitter_generation: generation(p.seed, KIND_ALERT, key).into(),
        display_device: p.display_device().into(),
        display_app: display_app(p).into(),
    }
}

pub(crate) fn display_app(p: &Profile) -> &'static str {
    match p.display {
        super::time::Display::App { .. } => "G7",
        super::time::Display::Receiver { .. } => "receiver",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::default_history_start,
        data::{events, expected_events},
    };

    /// Finds a final-version event with `status` and returns the versions served at `t + lag - 1s`
    /// and at `t + lag`.
    fn versions(status: &str, lag: TimeDelta) -> (Event, Event, Event) {
        let hs = default_history_start();
        let ctx = DataContext::immediate(hs);
        let all = expected_events(&ctx, "alice", hs, hs + TimeDelta::days(20));
        let last = all.into_iter().find(|e| e.event_status == status).unwrap();
        let t = chrono::NaiveDateTime::parse_from_str(&last.system_time, "%Y-%m-%dT%H:%M:%S")
            .unwrap()
            .and_utc();
        let at = |now| {
            events(&ctx, "alice", t, t, now)
                .into_iter()
                .find(|e| e.record_id == last.record_id)
                .unwrap()
        };
        (at(t + lag - TimeDelta::seconds(1)), at(t + lag), last)
    }

    #[test]
    fn corrections_keep_the_record_id_and_change_the_content() {
        let (before, after, last) = versions("updated", EVENT_UPDATE_LAG);
        assert_eq!(before.event_status, "created");
        assert_eq!(after, last);
        assert!(before.value != after.value || before.event_sub_type != after.event_sub_type);
        let (before, after, _) = versions("deleted", EVENT_DELETE_LAG);
        assert_eq!(before.event_status, "created");
        assert_eq!(after.event_status, "deleted");
    }
}
