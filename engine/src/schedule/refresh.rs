//! When an access token is refreshed ahead of its expiry (docs/oauth.md#refresh-margin).
//!
//! A fixed margin fails both ways: a 300 s margin on a partner whose tokens live 300 s (a common
//! default of authorization servers) refreshes an idle connection on every scan, and a margin
//! much shorter than a long-lived token's lifetime leaves little room for a retry. The margin is
//! a quarter of the token's lifetime, at most [`MAX_MARGIN`]: a 2-hour Dexcom token is refreshed
//! 5 minutes before it expires, a 5-minute token 75 s before, so a connection is refreshed at
//! most once per three quarters of its tokens' lifetime, whatever else happens to it.

use chrono::{DateTime, TimeDelta, Utc};

/// Longest margin: refreshing a long-lived token far ahead of time gains nothing.
pub const MAX_MARGIN: TimeDelta = TimeDelta::minutes(5);

/// When a token stored at `stored_at` that expires at `expires_at` should be refreshed. `None`
/// for a token without an expiry (it is refreshed when the partner answers 401).
pub fn refresh_due(
    stored_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let expires_at = expires_at?;
    let lifetime = expires_at - stored_at;
    if lifetime <= TimeDelta::zero() {
        return Some(stored_at);
    }
    let margin = (lifetime / 4).min(MAX_MARGIN);
    Some(expires_at - margin)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap() + TimeDelta::seconds(secs)
    }

    #[test]
    fn margin_is_a_quarter_of_the_lifetime_at_most_five_minutes() {
        // Dexcom: 2 h tokens, refreshed 5 min before expiry.
        assert_eq!(refresh_due(t(0), Some(t(7200))), Some(t(6900)));
        // A 5-minute token: 75 s before expiry, not on every scan.
        assert_eq!(refresh_due(t(0), Some(t(300))), Some(t(225)));
        // A 60 s token: 15 s before.
        assert_eq!(refresh_due(t(0), Some(t(60))), Some(t(45)));
        // Already expired: due at once.
        assert_eq!(refresh_due(t(10), Some(t(0))), Some(t(10)));
        assert_eq!(refresh_due(t(0), None), None);
    }

    #[test]
    fn a_connection_is_refreshed_at_most_once_per_three_quarters_of_a_lifetime() {
        for lifetime in [30, 60, 300, 600, 3600, 7200, 86_400] {
            let due = refresh_due(t(0), Some(t(lifetime))).unwrap();
            let interval = (due - t(0)).num_milliseconds();
            assert!(interval * 4 >= lifetime * 3000, "{lifetime}: {interval} ms");
        }
    }
}
