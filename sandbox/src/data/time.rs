//! Per-user device profile: time zone (with real DST rules for the US and EU zones, so clients'
//! offset handling is exercised), how display times look (app vs receiver), device ids.

use chrono::{DateTime, Datelike, Duration as TimeDelta, NaiveDate, Utc, Weekday};
use sha2::{Digest, Sha256};

use super::{KIND_PROFILE, mix, seed};

/// Daylight-saving rule of a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dst {
    None,
    /// Second Sunday of March 02:00 local to first Sunday of November 02:00 local.
    Us,
    /// Last Sunday of March to last Sunday of October, 01:00 UTC.
    Eu,
}

/// IANA name, standard offset in minutes, DST rule.
const ZONES: [(&str, i32, Dst); 5] = [
    ("America/Los_Angeles", -480, Dst::Us),
    ("America/New_York", -300, Dst::Us),
    ("America/Phoenix", -420, Dst::None),
    ("Europe/Berlin", 60, Dst::Eu),
    ("Asia/Kolkata", 330, Dst::None),
];

/// How a user's display times look, which is how Dexcom distinguishes uploads from phone
/// apps (local time with offset) from receivers (local time, no zone, a drifting clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Phone app: `displayTime` carries the UTC offset.
    App {
        /// `iOS` or `android`.
        device: &'static str,
    },
    /// Receiver: `displayTime` has no zone and the receiver clock is off by `drift_secs`.
    Receiver {
        /// Receiver clock minus true local time, in seconds.
        drift_secs: i64,
    },
}

/// Everything about a user's devices that does not change over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The user's hash seed.
    pub seed: u64,
    /// IANA time zone of the user's devices.
    pub timezone: &'static str,
    std_offset_min: i32,
    dst: Dst,
    /// App or receiver.
    pub display: Display,
    /// Dexcom-style transmitter id: 64 hex characters.
    pub transmitter_id: String,
    /// Pump serial number (8 digits).
    pub serial_number: String,
}

/// The profile of a partner user name.
pub fn profile(user: &str) -> Profile {
    let seed = seed(user);
    let h = mix(seed, KIND_PROFILE, 0);
    let (timezone, std_offset_min, dst) = ZONES[(h % ZONES.len() as u64) as usize];
    let display = match (h >> 8) % 3 {
        0 => Display::App { device: "iOS" },
        1 => Display::App { device: "android" },
        _ => Display::Receiver {
            drift_secs: ((h >> 16) % 241) as i64 - 120,
        },
    };
    let transmitter_id = hex::encode(Sha256::digest(format!("{user}\0transmitter").as_bytes()));
    Profile {
        seed,
        timezone,
        std_offset_min,
        dst,
        display,
        transmitter_id,
        serial_number: format!("{:08}", (h >> 24) % 100_000_000),
    }
}

impl Profile {
    /// The zone's UTC offset at `t`, in minutes.
    pub fn utc_offset_minutes(&self, t: DateTime<Utc>) -> i32 {
        let year = t.year();
        let in_dst = match self.dst {
            Dst::None => false,
            Dst::Us => {
                // Transitions at 02:00 local: standard time before the spring one, daylight
                // time before the autumn one.
                let start = at_utc(nth_sunday(year, 3, 2), 2, self.std_offset_min);
                let end = at_utc(nth_sunday(year, 11, 1), 2, self.std_offset_min + 60);
                start <= t && t < end
            }
            Dst::Eu => {
                let start = at_utc(last_sunday(year, 3), 1, 0);
                let end = at_utc(last_sunday(year, 10), 1, 0);
                start <= t && t < end
            }
        };
        self.std_offset_min + if in_dst { 60 } else { 0 }
    }

    /// Local wall-clock time at `t`, no zone (`deviceTime`).
    pub fn device_time(&self, t: DateTime<Utc>) -> String {
        let local = t + TimeDelta::minutes(self.utc_offset_minutes(t).into());
        local.format("%Y-%m-%dT%H:%M:%S").to_string()
    }

    /// Dexcom's `displayTime`: with offset from apps, without (and drifting) from receivers.
    pub fn display_time(&self, t: DateTime<Utc>) -> String {
        let offset = self.utc_offset_minutes(t);
        let local = t + TimeDelta::minutes(offset.into());
        match self.display {
            Display::App { .. } => {
                let sign = if offset < 0 { '-' } else { '+' };
                let abs = offset.abs();
                format!(
                    "{}{sign}{:02}:{:02}",
                    local.format("%Y-%m-%dT%H:%M:%S"),
                    abs / 60,
                    abs % 60
                )
            }
            Display::Receiver { drift_secs } => (local + TimeDelta::seconds(drift_secs))
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string(),
        }
    }

    /// Dexcom's `displayDevice`.
    pub fn display_device(&self) -> &'static str {
        match self.display {
            Display::App { device } => device,
            Display::Receiver { .. } => "receiver",
        }
    }
}

/// `hour:00` local on `day`, in UTC, for a local offset in minutes.
fn at_utc(day: NaiveDate, hour: u32, offset_min: i32) -> DateTime<Utc> {
    let local = day.and_hms_opt(hour, 0, 0).expect("valid hour").and_utc();
    local - TimeDelta::minutes(offset_min.into())
}

fn nth_sunday(year: i32, month: u32, n: u8) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(year, month, Weekday::Sun, n).expect("month has Sundays")
}

fn last_sunday(year: i32, month: u32) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(year, month, Weekday::Sun, 5)
        .unwrap_or_else(|| nth_sunday(year, month, 4))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn with_zone(tz: &str) -> Profile {
        let (timezone, std_offset_min, dst) = *ZONES.iter().find(|z| z.0 == tz).unwrap();
        Profile {
            timezone,
            std_offset_min,
            dst,
            display: Display::App { device: "iOS" },
            ..profile("x")
        }
    }

    #[test]
    fn us_dst_switches_at_two_local() {
        let la = with_zone("America/Los_Angeles");
        // 2026-03-08 is the second Sunday of March; 02:00 PST = 10:00 UTC.
        let before = Utc.with_ymd_and_hms(2026, 3, 8, 9, 59, 0).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 3, 8, 10, 0, 0).unwrap();
        assert_eq!(la.utc_offset_minutes(before), -480);
        assert_eq!(la.utc_offset_minutes(after), -420);
        assert_eq!(la.display_time(after), "2026-03-08T03:00:00-07:00");
        // 2026-11-01 02:00 PDT = 09:00 UTC.
        let end = Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap();
        assert_eq!(la.utc_offset_minutes(end - TimeDelta::seconds(1)), -420);
        assert_eq!(la.utc_offset_minutes(end), -480);
    }

    #[test]
    fn eu_dst_and_half_hour_zones() {
        let berlin = with_zone("Europe/Berlin");
        let summer = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap();
        assert_eq!(berlin.utc_offset_minutes(summer), 120);
        assert_eq!(
            berlin.utc_offset_minutes(summer - TimeDelta::seconds(1)),
            60
        );
        let kolkata = with_zone("Asia/Kolkata");
        assert_eq!(kolkata.display_time(summer), "2026-03-29T06:30:00+05:30");
    }
}
