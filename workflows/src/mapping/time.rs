//! Time rules of the Tidepool data model (docs/data-model.md#time-fields):
//! `time` is UTC; `deviceTime` is the device's wall clock without zone; `timezoneOffset`
//! (minutes), `clockDriftOffset` and `conversionOffset` (ms) explain the difference.
//!
//! Invariant of every [`LocalTime`] built here, to the millisecond:
//! `deviceTime = time + timezoneOffset·60 000 + clockDriftOffset + conversionOffset`.
//!
//! Accepted timestamp shapes (partners are sloppy): `YYYY-MM-DDThh:mm[:ss[.fff]]` (a space
//! instead of `T` too), optionally followed by `Z`, `±hh`, `±hhmm`, `±hh:mm` or `±hh:mm:ss`.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeDelta, Utc};

/// Tidepool's `deviceTime` format.
pub const DEVICE_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

const MINUTE_MS: i64 = 60_000;
/// Time-zone offsets are searched in 30-minute steps (Tidepool's Dexcom translation).
const STEP_MS: i64 = 30 * MINUTE_MS;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;
/// Offsets outside [-12 h, +14 h] become whole days of `conversionOffset`.
const MAX_STEPS: i64 = 14 * 2;
const MIN_STEPS: i64 = -12 * 2;
const DAY_STEPS: i64 = 48;
/// Tidepool rejects `timezoneOffset` beyond a week either way.
const MAX_TIMEZONE_OFFSET_MIN: i64 = 7 * 24 * 60;

/// A parsed timestamp: the wall-clock part and, when the string had one, its UTC offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub local: NaiveDateTime,
    pub offset_secs: Option<i32>,
}

impl Timestamp {
    /// The instant: the offset applied, or the wall clock read as UTC when there is none
    /// (Dexcom's `systemTime` and query formats carry no zone and are UTC).
    pub fn to_utc(&self) -> Option<DateTime<Utc>> {
        let offset = TimeDelta::try_seconds(self.offset_secs.unwrap_or(0).into())?;
        Some(self.local.checked_sub_signed(offset)?.and_utc())
    }
}

/// Parses one of the accepted shapes; `None` for anything else.
pub fn parse(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    // Date part is exactly `YYYY-MM-DD`; the separator is `T`, `t` or a space.
    let (date, rest) = (s.get(..10)?, s.get(10..)?);
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let zone_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(zone_at);
    let text = format!("{date}T{clock}");
    let local = NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M"))
        .ok()?;
    let offset_secs = match zone {
        "" => None,
        "Z" | "z" => Some(0),
        _ => Some(parse_offset(zone)?),
    };
    Some(Timestamp { local, offset_secs })
}

/// `±hh`, `±hhmm`, `±hh:mm`, `±hh:mm:ss` → seconds east of UTC.
fn parse_offset(zone: &str) -> Option<i32> {
    let (sign, digits) = match zone.split_at_checked(1)? {
        ("+", d) => (1, d),
        ("-", d) => (-1, d),
        _ => return None,
    };
    let parts: Vec<&str> = if digits.contains(':') {
        digits.split(':').collect()
    } else if digits.len() == 4 {
        vec![digits.get(..2)?, digits.get(2..)?]
    } else {
        vec![digits]
    };
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let field = |i: usize| parts.get(i).map_or(Some(0), |p| p.parse::<i32>().ok());
    let (h, m, sec) = (field(0)?, field(1)?, field(2)?);
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60 + sec))
}

/// An instant: any accepted shape, a zone-less one read as UTC.
pub fn parse_utc(s: &str) -> Option<DateTime<Utc>> {
    parse(s)?.to_utc()
}

/// Tidepool's `time` format: RFC 3339 UTC, seconds unless the instant has a fraction.
pub fn format_utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The local-time fields of a datum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTime {
    /// `YYYY-MM-DDThh:mm:ss`.
    pub device_time: String,
    /// Minutes east of UTC.
    pub timezone_offset: i64,
    /// Milliseconds; 0 is omitted from the datum.
    pub clock_drift_offset: i64,
    /// Milliseconds; 0 is omitted from the datum.
    pub conversion_offset: i64,
}

/// Dexcom: `deviceTime` from `displayTime`; `timezoneOffset` is `displayTime`'s own offset
/// when it has one (rounded to whole minutes, the seconds going to `clockDriftOffset`, so
/// `-06:59:58` gives -420 and +2000 ms); otherwise the gap `displayTime − systemTime` rounded
/// to 30 minutes, the remainder in `clockDriftOffset`, whole days in `conversionOffset`. With
/// an offset, a gap between the two instants goes to drift and conversion the same way.
pub fn from_display(time: DateTime<Utc>, display: &Timestamp) -> Option<LocalTime> {
    let local_ms = local_minus_utc_ms(display.local, time)?;
    let zone_ms = display.offset_secs.map(|s| i64::from(s) * 1000);
    decompose(display.local, local_ms - zone_ms.unwrap_or(0), zone_ms)
}

/// Pump-style records that state their own `deviceTime` and/or `timezoneOffset` (minutes).
/// Both: kept, any disagreement with `time` goes to drift/conversion. Only the offset:
/// `deviceTime = time + offset`. Only `deviceTime`: treated like a zone-less `displayTime`.
pub fn from_device(
    time: DateTime<Utc>,
    device_time: Option<NaiveDateTime>,
    offset_min: Option<i64>,
) -> Option<LocalTime> {
    let offset_min =
        offset_min.filter(|m| (-MAX_TIMEZONE_OFFSET_MIN..=MAX_TIMEZONE_OFFSET_MIN).contains(m));
    let zone_ms = offset_min.map(|m| m * MINUTE_MS);
    let local = match (device_time, zone_ms) {
        (Some(local), _) => local,
        (None, Some(ms)) => time
            .naive_utc()
            .checked_add_signed(TimeDelta::try_milliseconds(ms)?)?,
        (None, None) => return None,
    };
    let local_ms = local_minus_utc_ms(local, time)?;
    decompose(local, local_ms - zone_ms.unwrap_or(0), zone_ms)
}

fn local_minus_utc_ms(local: NaiveDateTime, time: DateTime<Utc>) -> Option<i64> {
    Some(
        local
            .signed_duration_since(time.naive_utc())
            .num_milliseconds(),
    )
}

/// Splits `residual_ms` (local − UTC − known zone) into 30-minute steps and drift; the steps
/// become the offset when no zone is known, else conversion.
fn decompose(local: NaiveDateTime, residual_ms: i64, zone_ms: Option<i64>) -> Option<LocalTime> {
    // Round half away from zero, like Tidepool.
    let half = STEP_MS / 2;
    let mut steps = if residual_ms >= 0 {
        residual_ms.checked_add(half)? / STEP_MS
    } else {
        residual_ms.checked_sub(half)? / STEP_MS
    };
    let mut drift = residual_ms - steps * STEP_MS;
    let mut conversion: i64 = 0;
    if steps > MAX_STEPS {
        let days = (steps - MAX_STEPS + DAY_STEPS - 1) / DAY_STEPS;
        conversion = conversion.checked_add(days.checked_mul(DAY_MS)?)?;
        steps -= days * DAY_STEPS;
    } else if steps < MIN_STEPS {
        let days = (MIN_STEPS - steps + DAY_STEPS - 1) / DAY_STEPS;
        conversion = conversion.checked_sub(days.checked_mul(DAY_MS)?)?;
        steps += days * DAY_STEPS;
    }
    let timezone_offset = match zone_ms {
        None => steps * 30,
        Some(zone) => {
            conversion = conversion.checked_add(steps * STEP_MS)?;
            let minutes = if zone >= 0 {
                (zone + MINUTE_MS / 2) / MINUTE_MS
            } else {
                (zone - MINUTE_MS / 2) / MINUTE_MS
            };
            drift += zone - minutes * MINUTE_MS;
            minutes
        }
    };
    Some(LocalTime {
        device_time: local.format(DEVICE_TIME_FORMAT).to_string(),
        timezone_offset,
        clock_drift_offset: drift,
        conversion_offset: conversion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        parse_utc(s).unwrap()
    }

    #[test]
    fn parses_the_accepted_shapes() {
        assert_eq!(utc("2021-02-03T14:15Z"), utc("2021-02-03T14:15:00Z"));
        assert_eq!(utc("2021-02-03T14:15:00"), utc("2021-02-03T14:15:00+00:00"));
        assert_eq!(utc("2021-02-03 08:15:00-0600"), utc("2021-02-03T14:15:00Z"));
        assert_eq!(utc("2021-02-03T08:15-06"), utc("2021-02-03T14:15:00Z"));
        let p = parse("2021-02-03T07:15:02-06:59:58").unwrap();
        assert_eq!(p.offset_secs, Some(-25_198));
        assert_eq!(p.to_utc().unwrap(), utc("2021-02-03T14:15:00Z"));
        assert_eq!(
            format_utc(utc("2021-02-03T14:15:00.250Z")),
            "2021-02-03T14:15:00.250Z"
        );
        for bad in [
            "",
            "2021-02-03",
            "2021-02-03T",
            "2021-02-30T00:00:00",
            "2021-02-03T25:00:00",
            "2021-02-03T10:00:00+5",
            "2021-02-03T10:00:00+24:00",
            "yesterday",
            "2021-02-03T10:00:00Q",
            "2021-02-03T10:00:00+05:00:00:00",
            "é021-02-03T10:00:00",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn invariant_holds() {
        let cases = [
            (
                "2026-01-01T12:00:00",
                "2026-01-01T07:01:30",
                -300,
                90_000,
                0,
            ),
            (
                "2026-01-01T12:00:00",
                "2026-01-02T07:00:00",
                -300,
                0,
                DAY_MS,
            ),
            (
                "2026-01-01T12:00:00",
                "2025-12-31T02:00:00",
                -600,
                0,
                -DAY_MS,
            ),
            (
                "2026-01-01T12:00:00",
                "2025-12-30T22:00:00",
                600,
                0,
                -2 * DAY_MS,
            ),
            (
                "2026-01-01T12:00:00",
                "2026-01-01T17:30:00+05:30",
                330,
                0,
                0,
            ),
            (
                "2026-01-01T12:00:00",
                "2026-01-01T18:30:05+05:30",
                330,
                5_000,
                3_600_000,
            ),
        ];
        for (system, display, tz, drift, conversion) in cases {
            let time = utc(system);
            let d = parse(display).unwrap();
            let l = from_display(time, &d).unwrap();
            assert_eq!(
                (l.timezone_offset, l.clock_drift_offset, l.conversion_offset),
                (tz, drift, conversion),
                "{display}"
            );
            let total = tz * MINUTE_MS + drift + conversion;
            assert_eq!(local_minus_utc_ms(d.local, time), Some(total));
        }
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let time = utc("2026-01-01T00:00:00Z");
        for display in ["+262000-01-01T00:00:00", "-262000-01-01T00:00:00"] {
            if let Some(d) = parse(display) {
                let _ = from_display(time, &d);
            }
        }
        let far = NaiveDateTime::MAX;
        let _ = from_device(time, Some(far), Some(600));
        let _ = from_device(DateTime::<Utc>::MAX_UTC, None, Some(600));
    }
}
