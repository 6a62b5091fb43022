//! Which record times are plausible (docs/transfers.md#plausible-times). A partner answers a
//! window `[start, end]`; a record dated far outside it, or in the future, is not data the
//! partner meant to send for that window (a year-9999 placeholder, an epoch default, a clock
//! gone wrong), and storing it would pin the connection's data-time bounds for ever. Such a
//! record is skipped and counted like any other unreadable one.

use chrono::{DateTime, TimeDelta, Utc};

use super::TransferConfig;
use crate::records::MappedRecord;

/// The bounds a record's time must fall in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plausible {
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
    /// Records that do not follow the window (the current device settings) may be dated as
    /// far back as this.
    device_earliest: DateTime<Utc>,
    future: DateTime<Utc>,
}

/// How far before the window a device settings record may be dated (its last upload).
const DEVICE_AGE: TimeDelta = TimeDelta::days(365);

fn secs(s: u64) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 2_000)).min(TimeDelta::days(3650))
}

impl Plausible {
    pub(super) fn new(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
        config: &TransferConfig,
    ) -> Self {
        let slack = secs(config.window_slack_secs);
        let future = now + secs(config.max_future_secs);
        Self {
            earliest: start - slack,
            latest: (end + slack).min(future),
            device_earliest: start - slack - DEVICE_AGE,
            future,
        }
    }

    /// Why `record`'s time is implausible, or `None`. Device settings (`cgmSettings`) are the
    /// partner's current records whatever the window (Dexcom's `/devices`), dated by their
    /// last upload: they may be up to a year older than the window, never in the future.
    pub(super) fn check(&self, record: &MappedRecord) -> Option<&'static str> {
        let earliest = if record.datum_type == "cgmSettings" {
            self.device_earliest
        } else {
            self.earliest
        };
        if record.time > self.future {
            Some("time is in the future")
        } else if record.time < earliest {
            Some("time is long before the window asked for")
        } else if record.time > self.latest {
            Some("time is long after the window asked for")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn record(datum_type: &str, time: DateTime<Utc>) -> MappedRecord {
        MappedRecord {
            partner_record_id: "r".to_owned(),
            datum_type: datum_type.to_owned(),
            time,
            retired: false,
            datum: MappedRecord::datum_of(&serde_json::json!({})),
        }
    }

    #[test]
    fn bounds_follow_the_window_and_the_clock() {
        let now = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
        let start = now - TimeDelta::days(2);
        let p = Plausible::new(start, now, now, &TransferConfig::default());
        let far_future = Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0).unwrap();
        let epoch = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(p.check(&record("cbg", now)), None);
        assert_eq!(p.check(&record("cbg", start)), None);
        assert_eq!(p.check(&record("cbg", start - TimeDelta::hours(23))), None);
        assert!(p.check(&record("cbg", far_future)).is_some());
        assert!(p.check(&record("cbg", epoch)).is_some());
        assert!(p.check(&record("cbg", now + TimeDelta::hours(2))).is_some());
        assert!(
            p.check(&record("cbg", start - TimeDelta::days(3)))
                .is_some()
        );
        // Device settings: an upload up to a year before the window, never the future.
        assert_eq!(
            p.check(&record("cgmSettings", start - TimeDelta::days(200))),
            None
        );
        assert!(p.check(&record("cgmSettings", epoch)).is_some());
        assert!(p.check(&record("cgmSettings", far_future)).is_some());
    }
}
