//! Per-partner transfer settings (`[partners.<name>.transfer]`; docs/transfers.md).

use serde::Deserialize;

/// How transfers read, check and retry. Bounds are checked at start (the configuration's
/// validation); defaults are here, once.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// How far back the first transfer of a new connection goes, in days. Default 30.
    pub backfill_days: u32,
    /// Each transfer re-reads this much behind the cursor, so records published late or
    /// backfilled after a gap are not missed; storage is idempotent. Default 14400 (4 h).
    pub overlap_secs: u64,
    /// A connection that keeps failing for this long goes to `failed`. Default 108000 (30 h,
    /// as Tidepool).
    pub failure_budget_secs: u64,
    /// First retry delay after a failed transfer; doubles per consecutive failure. Default 300.
    pub retry_base_secs: u64,
    /// Longest retry delay. Default 21600 (6 h).
    pub retry_cap_secs: u64,
    /// A record dated more than this before the window asked for, or after its end, is
    /// implausible: skipped and counted, never stored (partners' windows are exact; a record
    /// far outside is a bug or an attack that would otherwise pin the connection's
    /// `earliestDataTime`/`latestDataTime` for ever). Default 86400 (1 day).
    pub window_slack_secs: u64,
    /// A record dated more than this after the current time is implausible. Default 3600.
    pub max_future_secs: u64,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            backfill_days: 30,
            overlap_secs: 4 * 3600,
            failure_budget_secs: 30 * 3600,
            retry_base_secs: 300,
            retry_cap_secs: 6 * 3600,
            window_slack_secs: 86_400,
            max_future_secs: 3600,
        }
    }
}
