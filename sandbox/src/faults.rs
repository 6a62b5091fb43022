//! Faults on demand: what the partner does wrong, set through `/admin/faults` or
//! [`FaultsHandle`]. Counters (`fail_next`, …) are preferred over probabilities so tests repeat
//! exactly; each request of a class consumes one unit.
//!
//! The pure part lives here ([`Faults::decide`]); `http::guard` turns a decision into a response.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

/// Endpoint classes a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointClass {
    /// Authorization page/redirect and the consent form.
    Authorize,
    /// Token endpoint (code exchange and refresh).
    Token,
    /// RFC 7009 revocation endpoint.
    Revoke,
    /// Data API (CGM records, pump records).
    Data,
}

/// A count per endpoint class; JSON `{"authorize":0,"token":2,"revoke":0,"data":1}`, any field
/// may be omitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassCounts {
    pub authorize: u32,
    pub token: u32,
    pub revoke: u32,
    pub data: u32,
}

impl ClassCounts {
    fn slot(&mut self, class: EndpointClass) -> &mut u32 {
        match class {
            EndpointClass::Authorize => &mut self.authorize,
            EndpointClass::Token => &mut self.token,
            EndpointClass::Revoke => &mut self.revoke,
            EndpointClass::Data => &mut self.data,
        }
    }

    /// Consumes one unit for `class`; true when one was left. Returns the count before.
    fn take(&mut self, class: EndpointClass) -> Option<u32> {
        let slot = self.slot(class);
        if *slot == 0 {
            return None;
        }
        let before = *slot;
        *slot -= 1;
        Some(before)
    }
}

/// An absolute maintenance window on the sandbox clock, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A window repeating every day, in UTC (`"10:45:00"`); `start > end` wraps past midnight.
/// Dexcom's nightly 02:45–03:45 Pacific backup is `10:45:00`–`11:45:00` in winter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyWindow {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl DailyWindow {
    fn contains(&self, now: DateTime<Utc>) -> bool {
        let t = now.time();
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

/// The whole fault configuration. `Default` is a healthy partner. JSON uses these field names;
/// omitted fields take their defaults, unknown fields are rejected (a typo must not silently
/// test nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// The next n requests of each class answer `fail_status` (an HTML body, not JSON).
    pub fail_next: ClassCounts,
    /// Status used by `fail_next` and `error_rate` (default 500).
    pub fail_status: u16,
    /// Probability (0..1) that any request of any class answers `fail_status`. Random: for
    /// demos and benchmarks; tests should prefer `fail_next`.
    pub error_rate: f64,
    /// The next n requests of each class answer 429 with `Retry-After: retry_after_secs`.
    pub rate_limit_next: ClassCounts,
    /// Seconds in the `Retry-After` header of 429 and 503 answers (default 60).
    pub retry_after_secs: u64,
    /// The next n responses of each class carry a malformed body with status 200 and a JSON
    /// content type: odd counts truncated JSON, even counts an HTML page.
    pub malformed_next: ClassCounts,
    /// Added latency before every non-admin answer, in milliseconds.
    pub latency_ms: u64,
    /// Overrides the configured access-token lifetime for tokens issued from now on.
    pub access_token_ttl_secs: Option<u64>,
    /// The token endpoint answers 503.
    pub token_down: bool,
    /// The revocation endpoint answers 503.
    pub revoke_down: bool,
    /// Everything but `/admin` answers 503 right now.
    pub maintenance_now: bool,
    /// Everything but `/admin` answers 503 while the sandbox clock is inside this window.
    pub maintenance: Option<Window>,
    /// Everything but `/admin` answers 503 inside this daily UTC window.
    pub daily_maintenance_utc: Option<DailyWindow>,
    /// A record is served only once `now >= record time + publication_delay_secs`.
    pub publication_delay_secs: u64,
    /// Withhold one deterministic 2-hour gap per user and UTC day (see `data::gap_on`) until
    /// `gap end + backfill_delay_secs`, then serve it (EGVs flagged `backfilled: true`).
    pub backfill: bool,
    /// How long after a gap ends its records appear (default 3600 s).
    pub backfill_delay_secs: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_next: ClassCounts::default(),
            fail_status: 500,
            error_rate: 0.0,
            rate_limit_next: ClassCounts::default(),
            retry_after_secs: 60,
            malformed_next: ClassCounts::default(),
            latency_ms: 0,
            access_token_ttl_secs: None,
            token_down: false,
            revoke_down: false,
            maintenance_now: false,
            maintenance: None,
            daily_maintenance_utc: None,
            publication_delay_secs: 0,
            backfill: false,
            backfill_delay_secs: 3600,
        }
    }
}

/// How malformed a body should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    Truncated,
    Html,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Serve normally, possibly corrupting the body afterwards.
    Pass(Option<Malformed>),
    /// 503 with `Retry-After` (maintenance or endpoint down).
    Unavailable,
    /// `fail_status` with an HTML body.
    Fail(u16),
    /// 429 with `Retry-After`.
    RateLimited,
}

impl Faults {
    /// Values the type allows but a partner cannot have.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err("error_rate must be in [0, 1].".to_owned());
        }
        Ok(())
    }

    /// These settings with `patch` applied as a JSON merge patch (RFC 7396): the fields it
    /// names change, nested objects merge, `null` returns a field to its default, everything
    /// else stays. Unknown fields are rejected, as for a whole configuration.
    pub fn merged(&self, patch: &serde_json::Value) -> Result<Faults, String> {
        let mut value = serde_json::to_value(self).map_err(|e| e.to_string())?;
        merge_patch(&mut value, patch);
        let merged: Faults = serde_json::from_value(value).map_err(|e| e.to_string())?;
        merged.check()?;
        Ok(merged)
    }

    /// True when the sandbox clock is inside any maintenance window.
    pub fn in_maintenance(&self, now: DateTime<Utc>) -> bool {
        self.maintenance_now
            || self
                .maintenance
                .is_some_and(|w| w.start <= now && now < w.end)
            || self.daily_maintenance_utc.is_some_and(|w| w.contains(now))
    }

    /// Decides the fate of one request of `class` and consumes counters. `roll` is a uniform
    /// sample in [0, 1) for `error_rate`, passed in so this stays pure.
    pub(crate) fn decide(
        &mut self,
        class: EndpointClass,
        now: DateTime<Utc>,
        roll: f64,
    ) -> Decision {
        if self.in_maintenance(now) {
            return Decision::Unavailable;
        }
        let down = match class {
            EndpointClass::Token => self.token_down,
            EndpointClass::Revoke => self.revoke_down,
            _ => false,
        };
        if down {
            return Decision::Unavailable;
        }
        if self.fail_next.take(class).is_some() {
            return Decision::Fail(self.fail_status);
        }
        if self.rate_limit_next.take(class).is_some() {
            return Decision::RateLimited;
        }
        if roll < self.error_rate {
            return Decision::Fail(self.fail_status);
        }
        let malformed = self.malformed_next.take(class).map(|before| {
            if before % 2 == 1 {
                Malformed::Truncated
            } else {
                Malformed::Html
            }
        });
        Decision::Pass(malformed)
    }
}

/// RFC 7396 §2: an object patch merges member by member, `null` removes a member (here: back
/// to its default), anything else replaces the target.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(target) = target else {
        unreachable!("made an object above");
    };
    for (name, value) in members {
        if value.is_null() {
            target.remove(name);
        } else {
            merge_patch(target.entry(name.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Shared, mutable fault settings: what `Sandbox::faults()` returns. Cloning shares the state.
#[derive(Debug, Clone, Default)]
pub struct FaultsHandle {
    inner: Arc<Mutex<Faults>>,
}

impl FaultsHandle {
    /// A snapshot of the current settings.
    pub fn get(&self) -> Faults {
        self.lock().clone()
    }

    /// Replaces all settings (what `PUT /admin/faults` does).
    pub fn set(&self, faults: Faults) {
        *self.lock() = faults;
    }

    /// Changes some settings in place, e.g. `handle.update(|f| f.fail_next.token = 2)`;
    /// returns what the closure returns.
    pub fn update<R>(&self, change: impl FnOnce(&mut Faults) -> R) -> R {
        change(&mut self.lock())
    }

    /// Applies a JSON merge patch (what `PATCH /admin/faults` does) in one step, so concurrent
    /// patches never undo each other; returns the new settings. On error nothing changes.
    pub fn merge(&self, patch: &serde_json::Value) -> Result<Faults, String> {
        let mut faults = self.lock();
        let merged = faults.merged(patch)?;
        *faults = merged.clone();
        Ok(merged)
    }

    /// Back to a healthy partner (what `DELETE /admin/faults` does).
    pub fn clear(&self) {
        self.set(Faults::default());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Faults> {
        // A panic while holding this lock cannot leave Faults half-written in a way that
        // matters, so recover from poisoning instead of taking the whole sandbox down.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, 0).unwrap()
    }

    #[test]
    fn counters_are_consumed_per_class_in_order() {
        let mut f = Faults {
            fail_next: ClassCounts {
                token: 1,
                ..Default::default()
            },
            rate_limit_next: ClassCounts {
                token: 1,
                ..Default::default()
            },
            malformed_next: ClassCounts {
                data: 2,
                ..Default::default()
            },
            ..Faults::default()
        };
        let now = t(0, 0);
        assert_eq!(
            f.decide(EndpointClass::Data, now, 0.5),
            Decision::Pass(Some(Malformed::Html))
        );
        assert_eq!(
            f.decide(EndpointClass::Token, now, 0.5),
            Decision::Fail(500)
        );
        assert_eq!(
            f.decide(EndpointClass::Token, now, 0.5),
            Decision::RateLimited
        );
        assert_eq!(
            f.decide(EndpointClass::Token, now, 0.5),
            Decision::Pass(None)
        );
        assert_eq!(
            f.decide(EndpointClass::Data, now, 0.5),
            Decision::Pass(Some(Malformed::Truncated))
        );
        assert_eq!(
            f.decide(EndpointClass::Data, now, 0.5),
            Decision::Pass(None)
        );
    }

    #[test]
    fn maintenance_windows_and_down_flags() {
        let mut f = Faults {
            daily_maintenance_utc: Some(DailyWindow {
                start: NaiveTime::from_hms_opt(23, 0, 0).unwrap(),
                end: NaiveTime::from_hms_opt(1, 0, 0).unwrap(),
            }),
            revoke_down: true,
            ..Faults::default()
        };
        assert_eq!(
            f.decide(EndpointClass::Data, t(0, 30), 0.9),
            Decision::Unavailable
        );
        assert_eq!(
            f.decide(EndpointClass::Data, t(1, 0), 0.9),
            Decision::Pass(None)
        );
        assert_eq!(
            f.decide(EndpointClass::Revoke, t(12, 0), 0.9),
            Decision::Unavailable
        );
        f.maintenance = Some(Window {
            start: t(12, 0),
            end: t(13, 0),
        });
        assert!(f.in_maintenance(t(12, 59)));
        assert!(!f.in_maintenance(t(13, 0)));
    }

    #[test]
    fn json_round_trip_rejects_unknown_fields() {
        let f: Faults =
            serde_json::from_str(r#"{"fail_next":{"token":3},"backfill":true}"#).unwrap();
        assert_eq!(f.fail_next.token, 3);
        assert_eq!(f.fail_status, 500);
        assert!(serde_json::from_str::<Faults>(r#"{"fail_nxt":{}}"#).is_err());
    }

    #[test]
    fn merge_patch_changes_only_what_it_names() {
        let f = Faults {
            token_down: true,
            fail_next: ClassCounts {
                token: 2,
                ..Default::default()
            },
            access_token_ttl_secs: Some(5),
            ..Faults::default()
        };
        let merged = f
            .merged(&serde_json::json!({
                "fail_next": {"data": 1},
                "access_token_ttl_secs": null,
                "latency_ms": 7
            }))
            .unwrap();
        assert!(merged.token_down, "untouched");
        assert_eq!(merged.fail_next.token, 2, "nested objects merge");
        assert_eq!(merged.fail_next.data, 1);
        assert_eq!(merged.access_token_ttl_secs, None, "null is the default");
        assert_eq!(merged.latency_ms, 7);
        assert!(f.merged(&serde_json::json!({"fail_nxt": {}})).is_err());
        assert!(f.merged(&serde_json::json!({"error_rate": 2.0})).is_err());
        assert!(f.merged(&serde_json::json!([1])).is_err(), "not an object");
    }
}
