//! The per-partner circuit breaker (docs/operations.md#partner-incidents): when many
//! connections of one partner fail at once, that is the partner's outage, not each user's.
//!
//! Transitions (each a compare-and-swap on the row's `generation`, so processes sharing one
//! database agree on every one of them):
//!
//! | from | event | to | effects |
//! |---|---|---|---|
//! | closed | an outage-class failure with the window over its thresholds | open | `probe_at` = a backoff ahead; alert `partner_outage` (once per incident) |
//! | open | a claim at or after `probe_at`, one connection due | half_open | that one connection claimed as the probe |
//! | half_open | the probe transferred (`last_sync_at` after its start) | closed | incident streaks cleared, the partner's overdue work spread |
//! | half_open | the probe failed or ended without transferring | open | `probes + 1`, `probe_at` a longer backoff ahead |
//!
//! What it costs the transfers: a success writes nothing (its `last_sync_at`, written anyway,
//! is what the breaker reads); an outage-class failure upserts one row of
//! `partner_breaker_failures` and counts the window (an index range); every claim reads the
//! breakers not closed (a table of one row per partner that ever tripped, usually none).
//!
//! # Layout
//! - `mod.rs`: settings, states, rows, counting failures and tripping.
//! - `probe.rs`: what a claim does with breakers not closed: skip, probe, close, reopen.

mod probe;

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, QueryResult, Statement};
use serde::Deserialize;

pub use self::probe::BreakerPass;
use super::{Result, Store, StoreError};
use crate::{ids::ConnectionId, model::ErrorInfo, schedule::backoff};

/// When a partner's breaker trips and how it probes (`[partners.<name>.transfer.breaker]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerPolicy {
    /// The sliding window failures are counted over, in seconds. Default 3600: a sync
    /// interval, so each connection tries at least once within it and a small fleet trips too.
    pub window_secs: u64,
    /// At least this many distinct connections failed within the window. Default 10.
    pub min_failures: u32,
    /// And they are at least this share of the connections that transferred or failed
    /// within the window (0 < ratio ≤ 1). Default 0.5.
    pub failure_ratio: f64,
    /// The first probe's delay after a trip, in seconds; doubles per failed probe. Default 60.
    pub probe_base_secs: u64,
    /// The longest delay between probes, in seconds. Default 1800.
    pub probe_cap_secs: u64,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            window_secs: 3600,
            min_failures: 10,
            failure_ratio: 0.5,
            probe_base_secs: 60,
            probe_cap_secs: 1800,
        }
    }
}

impl BreakerPolicy {
    fn probe_delay(&self, attempt: u32) -> TimeDelta {
        let d = backoff(
            attempt,
            Duration::from_secs(self.probe_base_secs),
            Duration::from_secs(self.probe_cap_secs.max(self.probe_base_secs)),
            &mut rand::rng(),
        );
        TimeDelta::from_std(d).unwrap_or(TimeDelta::minutes(30))
    }
}

/// The breakers' policies and what closing one does.
#[derive(Debug, Clone)]
pub struct BreakerSettings {
    /// For partners without a policy of their own.
    pub default: BreakerPolicy,
    /// By partner name.
    pub partners: HashMap<String, BreakerPolicy>,
    /// On close, the partner's overdue transfers and refreshes are spread over this window
    /// (as on a partner's resume, docs/actions.md#resume-spread).
    pub resume_spread: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            default: BreakerPolicy::default(),
            partners: HashMap::new(),
            resume_spread: Duration::from_secs(300),
        }
    }
}

impl BreakerSettings {
    pub fn policy(&self, partner: &str) -> &BreakerPolicy {
        self.partners.get(partner).unwrap_or(&self.default)
    }
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Transfers run.
    Closed,
    /// The partner is out: claims skip its transfers until `probe_at`.
    Open,
    /// One probe transfer is in flight.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "closed" => Some(BreakerState::Closed),
            "open" => Some(BreakerState::Open),
            "half_open" => Some(BreakerState::HalfOpen),
            _ => None,
        }
    }

    /// The metric's value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

/// A partner's breaker as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerBreaker {
    pub partner: String,
    pub state: BreakerState,
    /// Bumped by every transition (the compare-and-swap guard).
    pub generation: i64,
    /// When the last incident began (kept after it closed).
    pub opened_at: Option<DateTime<Utc>>,
    /// The last incident's first counted failure: failure streaks begun since are cleared on
    /// close.
    pub since: Option<DateTime<Utc>>,
    /// While open, when the next probe may run.
    pub probe_at: Option<DateTime<Utc>>,
    /// Failed probes of the current incident.
    pub probes: u32,
    /// While half-open, the probe's connection and when it was claimed.
    pub probe_connection: Option<String>,
    pub probe_started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A transition this process made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakerTransition {
    Tripped,
    ProbeStarted {
        connection: ConnectionId,
    },
    Reopened {
        probe_at: DateTime<Utc>,
    },
    Closed {
        /// Connections whose failure streak began during the incident, cleared.
        cleared: u64,
        /// Connections whose overdue work was spread over the resume window.
        rescheduled: u64,
    },
}

pub(super) fn count(row: &QueryResult, column: &str) -> Result<u64> {
    let n: Option<i64> = row.try_get("", column)?;
    Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

fn to_breaker(row: &QueryResult) -> Result<PartnerBreaker> {
    let state: String = row.try_get("", "state")?;
    let probes: i32 = row.try_get("", "probes")?;
    Ok(PartnerBreaker {
        partner: row.try_get("", "partner")?,
        state: BreakerState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("breaker state {state:?}")))?,
        generation: row.try_get("", "generation")?,
        opened_at: row.try_get("", "opened_at")?,
        since: row.try_get("", "since")?,
        probe_at: row.try_get("", "probe_at")?,
        probes: u32::try_from(probes).unwrap_or(0),
        probe_connection: row.try_get("", "probe_connection")?,
        probe_started_at: row.try_get("", "probe_started_at")?,
        updated_at: row.try_get("", "updated_at")?,
    })
}

const COLUMNS: &str = "partner, state, generation, opened_at, since, probe_at, probes, \
     probe_connection, probe_started_at, updated_at";

impl Store {
    /// Sets the breakers' policies (by partner) and the spread on close.
    pub fn with_breakers(mut self, settings: BreakerSettings) -> Self {
        self.breakers = std::sync::Arc::new(settings);
        self
    }

    pub fn breaker_settings(&self) -> &BreakerSettings {
        &self.breakers
    }

    /// Every partner's breaker that ever tripped, by partner.
    pub async fn breakers(&self) -> Result<Vec<PartnerBreaker>> {
        self.breaker_rows("", Vec::new()).await
    }

    /// `partner`'s breaker; `None` when it never tripped (closed).
    pub async fn breaker(&self, partner: &str) -> Result<Option<PartnerBreaker>> {
        Ok(self
            .breaker_rows(" WHERE partner = $1", vec![partner.to_owned().into()])
            .await?
            .into_iter()
            .next())
    }

    /// Whether `partner`'s breaker is open or half-open: its failures are the partner's, and
    /// no connection's failure budget runs out meanwhile (docs/transfers.md#failures).
    pub async fn breaker_holds(&self, partner: &str) -> Result<bool> {
        Ok(self
            .breaker(partner)
            .await?
            .is_some_and(|b| b.state != BreakerState::Closed))
    }

    async fn breaker_rows(
        &self,
        filter: &str,
        values: Vec<sea_orm::Value>,
    ) -> Result<Vec<PartnerBreaker>> {
        let backend = self.db.get_database_backend();
        let sql = format!("SELECT {COLUMNS} FROM partner_breakers{filter} ORDER BY partner");
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        rows.iter().map(to_breaker).collect()
    }

    /// Records an outage-class failure (5xx, timeout, connection error, 429) of `connection`,
    /// then trips `partner`'s breaker if its window is over the thresholds. Returns the
    /// transition when this call made it (a concurrent trip elsewhere returns `None`).
    pub async fn record_outage_failure(
        &self,
        partner: &str,
        connection: ConnectionId,
    ) -> Result<Option<BreakerTransition>> {
        let backend = self.db.get_database_backend();
        let now = self.clock.now();
        self.db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                "INSERT INTO partner_breaker_failures (partner, connection_id, failed_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (partner, connection_id) \
                 DO UPDATE SET failed_at = excluded.failed_at",
                [
                    partner.to_owned().into(),
                    connection.to_string().into(),
                    now.into(),
                ],
            ))
            .await?;
        let breaker = self.breaker(partner).await?;
        if breaker
            .as_ref()
            .is_some_and(|b| b.state != BreakerState::Closed)
        {
            // A probe's failure is judged by the next claim (probe.rs).
            return Ok(None);
        }
        let policy = self.breakers.policy(partner).clone();
        let window_start =
            now - TimeDelta::seconds(i64::try_from(policy.window_secs).unwrap_or(3600));
        let Some(since) = self.over_thresholds(partner, window_start, &policy).await? else {
            return Ok(None);
        };
        let probe_at = now + policy.probe_delay(1);
        let won = match breaker {
            None => {
                self.db
                    .execute_raw(Statement::from_sql_and_values(
                        backend,
                        "INSERT INTO partner_breakers (partner, state, generation, opened_at, \
                         since, probe_at, probes, updated_at) \
                         VALUES ($1, 'open', 1, $2, $3, $4, 0, $2) \
                         ON CONFLICT (partner) DO NOTHING",
                        [
                            partner.to_owned().into(),
                            now.into(),
                            since.into(),
                            probe_at.into(),
                        ],
                    ))
                    .await?
                    .rows_affected()
                    == 1
            }
            Some(b) => {
                self.db
                    .execute_raw(Statement::from_sql_and_values(
                        backend,
                        "UPDATE partner_breakers SET state = 'open', \
                         generation = generation + 1, opened_at = $1, since = $2, \
                         probe_at = $3, probes = 0, probe_connection = NULL, \
                         probe_started_at = NULL, updated_at = $1 \
                         WHERE partner = $4 AND generation = $5 AND state = 'closed'",
                        [
                            now.into(),
                            since.into(),
                            probe_at.into(),
                            partner.to_owned().into(),
                            b.generation.into(),
                        ],
                    ))
                    .await?
                    .rows_affected()
                    == 1
            }
        };
        if !won {
            return Ok(None);
        }
        tracing::error!(partner, "partner outage: the circuit breaker tripped");
        crate::metrics::breaker_transition(partner, BreakerState::Open);
        self.raise_alert(
            partner,
            None,
            &ErrorInfo::new(
                "partner_outage",
                format!(
                    "many connections of {partner} failed at once (5xx, timeouts, 429): its \
                     transfers are paused and probed until it answers again"
                ),
            ),
        )
        .await?;
        Ok(Some(BreakerTransition::Tripped))
    }

    /// The window's start when `partner` is over the thresholds (the incident's start): at least
    /// `min_failures` distinct connections failed since `window_start` without transferring
    /// since, and they are at least `failure_ratio` of those that failed or transferred.
    async fn over_thresholds(
        &self,
        partner: &str,
        window_start: DateTime<Utc>,
        policy: &BreakerPolicy,
    ) -> Result<Option<DateTime<Utc>>> {
        let backend = self.db.get_database_backend();
        let values =
            || -> Vec<sea_orm::Value> { vec![partner.to_owned().into(), window_start.into()] };
        let failed = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                "SELECT COUNT(*) AS n \
                 FROM partner_breaker_failures f JOIN connections c ON c.id = f.connection_id \
                 WHERE f.partner = $1 AND f.failed_at >= $2 \
                 AND (c.last_sync_at IS NULL OR c.last_sync_at < f.failed_at)",
                values(),
            ))
            .await?;
        let Some(failed) = failed else {
            return Ok(None);
        };
        let n = count(&failed, "n")?;
        if n == 0 || n < u64::from(policy.min_failures) {
            return Ok(None);
        }
        // Only past the first threshold: a scan of the partner's recent successes.
        let succeeded = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                "SELECT COUNT(*) AS n FROM connections c \
                 WHERE c.partner = $1 AND c.last_sync_at >= $2 AND NOT EXISTS ( \
                   SELECT 1 FROM partner_breaker_failures f WHERE f.partner = $1 \
                   AND f.connection_id = c.id AND f.failed_at > c.last_sync_at)",
                values(),
            ))
            .await?
            .map(|row| count(&row, "n"))
            .transpose()?
            .unwrap_or(0);
        let ratio = n as f64 / (n + succeeded) as f64;
        Ok((ratio >= policy.failure_ratio).then_some(window_start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            assert_eq!(BreakerState::parse(s.as_str()), Some(s));
        }
        assert_eq!(BreakerState::parse("ajar"), None);
    }

    #[test]
    fn probes_back_off_to_the_cap() {
        let p = BreakerPolicy::default();
        assert!(p.probe_delay(1) <= TimeDelta::seconds(60));
        assert!(p.probe_delay(1) >= TimeDelta::seconds(30));
        assert!(p.probe_delay(40) <= TimeDelta::seconds(1800));
        assert!(p.probe_delay(40) >= TimeDelta::seconds(900));
    }
}
