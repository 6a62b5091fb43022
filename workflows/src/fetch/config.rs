//! Per-partner transfer settings (`[partners.<name>.transfer]`; docs/transfers.md).

use engine::store::BreakerPolicy;
use serde::Deserialize;

use crate::{partner::PartnerKind, records::RecordKind};

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
    /// Longest wait a partner's `Retry-After` may impose, in seconds: a longer one is cut to
    /// this, counted as a failure and shown on the connection (docs/transfers.md#rate-limits).
    /// Default 21600 (6 h).
    pub max_retry_after_secs: u64,
    /// Record kinds the partner changes long after their time, re-read over a horizon of their
    /// own (docs/transfers.md#late-changes). Unset: the partner kind's default (Dexcom: events,
    /// 7 days, once a day; pump: none). `reread = { kinds = [] }` turns it off.
    pub reread: Option<RereadConfig>,
    /// When many of the partner's connections fail at once, its circuit breaker trips
    /// (`[partners.<name>.transfer.breaker]`; docs/operations.md#partner-incidents).
    pub breaker: BreakerPolicy,
}

/// The late-change horizon: `kinds` re-read over the last `horizon_secs`, once per
/// `interval_secs` (an overlap of its own, far longer than `overlap_secs` but only for the kinds
/// a partner corrects or deletes late, and only now and then).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RereadConfig {
    pub kinds: Vec<RecordKind>,
    /// Default 604800 (7 days).
    pub horizon_secs: u64,
    /// Default 86400 (once a day).
    pub interval_secs: u64,
}

impl Default for RereadConfig {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            horizon_secs: 7 * 86_400,
            interval_secs: 86_400,
        }
    }
}

impl TransferConfig {
    /// The late-change horizon in force for a partner of `kind`: configured, else the kind's.
    /// `None`: nothing is re-read.
    pub fn reread_for(&self, kind: PartnerKind) -> Option<RereadConfig> {
        let reread = match &self.reread {
            Some(configured) => configured.clone(),
            // Dexcom corrects and deletes user events (`eventStatus`) well after their time:
            // the sandbox deletes one 6 h after it, beyond the 4 h overlap.
            None if kind == PartnerKind::Dexcom => RereadConfig {
                kinds: vec![RecordKind::Event],
                ..RereadConfig::default()
            },
            None => return None,
        };
        (!reread.kinds.is_empty()).then_some(reread)
    }
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
            max_retry_after_secs: 6 * 3600,
            reread: None,
            breaker: BreakerPolicy::default(),
        }
    }
}
