//! Dexcom API v3 (docs/dexcom.md#endpoints): `GET <base>/v3/users/self/{egvs,calibrations,events,
//! alerts,devices}?startDate&endDate` with dates like `2022-02-06T09:12:35` (UTC, no zone),
//! and `dataRange?lastSyncTime=<RFC 3339>`.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeDelta, Timelike, Utc};
use engine::secret::SecretString;
use serde_json::Value;

use super::{DataRange, FetchError, Inner, WindowShare};
use crate::records::{RecordKind, RecordSink};

/// The list endpoints fetched for every window. `devices` ignores the window and returns the
/// current device records: once per window is cheap, and mapping deduplicates them.
const LISTS: [(&str, RecordKind); 5] = [
    ("egvs", RecordKind::Egv),
    ("calibrations", RecordKind::Calibration),
    ("events", RecordKind::Event),
    ("alerts", RecordKind::Alert),
    ("devices", RecordKind::Device),
];

/// `lastSyncTime` older than this gave wrong ranges at Tidepool; it is left out instead.
const LAST_SYNC_MAX_AGE: TimeDelta = TimeDelta::days(30);

pub(super) async fn fetch(
    inner: &Inner,
    token: &SecretString,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    kinds: Option<&[RecordKind]>,
    share: &mut WindowShare,
    sink: &mut RecordSink<'_>,
) -> Result<(), FetchError> {
    let Some((start, end)) = whole_seconds(start, end) else {
        return Ok(());
    };
    let (start, end) = (dexcom_time(start), dexcom_time(end));
    for (endpoint, kind) in LISTS {
        if kinds.is_some_and(|k| !k.contains(&kind)) {
            continue;
        }
        let mut url = inner.url(&["v3", "users", "self", endpoint]);
        url.query_pairs_mut()
            .append_pair("startDate", &start)
            .append_pair("endDate", &end);
        inner
            .transport
            .get_records(token, endpoint, url, kind, (&inner.budget, share), sink)
            .await?;
    }
    Ok(())
}

pub(super) async fn data_range(
    inner: &Inner,
    token: &SecretString,
    last_sync: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<DataRange, FetchError> {
    let mut url = inner.url(&["v3", "users", "self", "dataRange"]);
    if let Some(t) = last_sync.filter(|t| *t <= now && now - *t < LAST_SYNC_MAX_AGE) {
        url.query_pairs_mut().append_pair(
            "lastSyncTime",
            &t.to_rfc3339_opts(SecondsFormat::Secs, true),
        );
    }
    let body = inner.transport.get_json(token, "dataRange", url).await?;
    parse_data_range(&body)
}

/// `{egvs|calibrations|events: {start: {systemTime}, end: {systemTime}}}`, each optional.
fn parse_data_range(body: &Value) -> Result<DataRange, FetchError> {
    let malformed =
        |what: &str| FetchError::transient(format!("dataRange: malformed body: {what}"), Some(200));
    let object = body
        .as_object()
        .ok_or_else(|| malformed("not a JSON object"))?;
    let mut range = DataRange {
        start: None,
        end: None,
    };
    for kind in ["egvs", "calibrations", "events"] {
        let Some(span) = object.get(kind).filter(|v| !v.is_null()) else {
            continue;
        };
        let time = |which: &str| {
            span.get(which)
                .and_then(|end| end.get("systemTime"))
                .and_then(Value::as_str)
                .and_then(parse_system_time)
                .ok_or_else(|| malformed(&format!("{kind}.{which}.systemTime")))
        };
        let (start, end) = (time("start")?, time("end")?);
        range.start = Some(range.start.map_or(start, |s| s.min(start)));
        range.end = Some(range.end.map_or(end, |e| e.max(end)));
    }
    Ok(range)
}

/// Dexcom's request format: UTC, no zone, no fraction.
fn dexcom_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// The window in whole seconds: `[ceil(start), floor(end)]` holds exactly the whole-second
/// times of `[start, end]` (records carry whole-second times) and is never longer. `None` when
/// no whole second lies inside. A window of a single second gains the next one (Dexcom
/// refuses `endDate == startDate`): a harmless overlap.
fn whole_seconds(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let floor = |t: DateTime<Utc>| t.with_nanosecond(0).unwrap_or(t);
    let ceil = |t: DateTime<Utc>| {
        let f = floor(t);
        if f == t { f } else { f + TimeDelta::seconds(1) }
    };
    let (start, end) = (ceil(start), floor(end));
    match end.cmp(&start) {
        std::cmp::Ordering::Less => None,
        std::cmp::Ordering::Equal => Some((start, start + TimeDelta::seconds(1))),
        std::cmp::Ordering::Greater => Some((start, end)),
    }
}

/// A `systemTime`: `2022-02-06T09:12:35` (UTC, no zone), tolerating the quirks seen in the
/// wild: a fraction, missing seconds, a `Z` or an offset.
fn parse_system_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Some(t) = ["%Y-%m-%dT%H:%M%#z", "%Y-%m-%dT%H:%M%:z"]
        .iter()
        .find_map(|f| DateTime::parse_from_str(s, f).ok())
    {
        return Some(t.with_timezone(&Utc));
    }
    let naive = s.strip_suffix('Z').unwrap_or(s);
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(naive, f).ok())
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2022, 2, 6, h, m, s).unwrap()
    }

    #[test]
    fn system_times() {
        for (text, want) in [
            ("2022-02-06T09:12:35", at(9, 12, 35)),
            (
                "2022-02-06T09:12:35.250",
                at(9, 12, 35) + TimeDelta::milliseconds(250),
            ),
            ("2022-02-06T09:12:35Z", at(9, 12, 35)),
            ("2022-02-06T09:12", at(9, 12, 0)),
            ("2022-02-06T09:12Z", at(9, 12, 0)),
            ("2022-02-06T03:12:35-06:00", at(9, 12, 35)),
        ] {
            assert_eq!(parse_system_time(text), Some(want), "{text}");
        }
        assert_eq!(parse_system_time("yesterday"), None);
    }

    #[test]
    fn windows_in_whole_seconds() {
        let ms = TimeDelta::milliseconds;
        assert_eq!(
            whole_seconds(at(9, 0, 0) + ms(100), at(9, 0, 5) + ms(900)),
            Some((at(9, 0, 1), at(9, 0, 5)))
        );
        assert_eq!(
            whole_seconds(at(9, 0, 0), at(9, 0, 5)),
            Some((at(9, 0, 0), at(9, 0, 5)))
        );
        assert_eq!(
            whole_seconds(at(9, 0, 0), at(9, 0, 0) + ms(500)),
            Some((at(9, 0, 0), at(9, 0, 1)))
        );
        assert_eq!(
            whole_seconds(at(9, 0, 0) + ms(1), at(9, 0, 0) + ms(999)),
            None
        );
        assert_eq!(dexcom_time(at(9, 12, 35) + ms(7)), "2022-02-06T09:12:35");
    }

    #[test]
    fn data_ranges() {
        let span = |s: &str, e: &str| {
            json!({"start": {"systemTime": s, "displayTime": s},
                   "end": {"systemTime": e, "displayTime": e}})
        };
        let body = json!({
            "recordType": "dataRange", "recordVersion": "3.0", "userId": "u",
            "egvs": span("2022-02-06T01:00:00", "2022-02-06T09:00:00"),
            "events": span("2022-02-06T00:30:00", "2022-02-06T08:00:00"),
        });
        assert_eq!(
            parse_data_range(&body).unwrap(),
            DataRange {
                start: Some(at(0, 30, 0)),
                end: Some(at(9, 0, 0))
            }
        );
        let empty = json!({"recordType": "dataRange", "userId": "u"});
        assert_eq!(
            parse_data_range(&empty).unwrap(),
            DataRange {
                start: None,
                end: None
            }
        );
        for bad in [
            json!([]),
            json!({"egvs": {"start": {"systemTime": "x"}, "end": {"systemTime": "x"}}}),
            json!({"egvs": {"start": {"systemTime": "2022-02-06T01:00:00"}}}),
        ] {
            assert_eq!(parse_data_range(&bad).unwrap_err().code(), "data_transient");
        }
    }
}
