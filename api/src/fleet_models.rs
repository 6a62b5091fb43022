//! The JSON of the fleet endpoints (docs/operations.md#stuck): the listed connection with its
//! stuck reasons, the page, the summary. Counts, codes and ids only.

use chrono::{DateTime, Utc};
use engine::store::{ConnectionPage, ListedConnection, OpsSummary, StuckReason};
use poem_openapi::{Enum, Object};

use crate::{
    models::{ConnectionJson, Nullable, StateJson},
    runs::StepJson,
};

/// Why a connection is stuck (docs/operations.md#stuck).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "StuckReason", rename_all = "snake_case")]
pub enum StuckReasonJson {
    /// `authorizing` longer than an authorization lives.
    AuthorizationExpired,
    /// `refreshing` longer than the maintenance loop allows (the doctor's code).
    RefreshLockStale,
    /// The next transfer is overdue; not paused.
    TransferOverdue,
    /// Claimed, never started, and no fetch job is queued for it.
    ClaimWithoutJob,
    /// A transfer lease left behind or ending beyond any writer's bound.
    LeasePastBound,
    /// Transfers failing for long, failure budget not spent yet.
    FailingTooLong,
    /// Transfers complete but bring no newer data.
    DataNotAdvancing,
}

impl From<StuckReason> for StuckReasonJson {
    fn from(r: StuckReason) -> Self {
        match r {
            StuckReason::AuthorizationExpired => Self::AuthorizationExpired,
            StuckReason::RefreshLockStale => Self::RefreshLockStale,
            StuckReason::TransferOverdue => Self::TransferOverdue,
            StuckReason::ClaimWithoutJob => Self::ClaimWithoutJob,
            StuckReason::LeasePastBound => Self::LeasePastBound,
            StuckReason::FailingTooLong => Self::FailingTooLong,
            StuckReason::DataNotAdvancing => Self::DataNotAdvancing,
        }
    }
}

impl From<StuckReasonJson> for StuckReason {
    fn from(r: StuckReasonJson) -> Self {
        match r {
            StuckReasonJson::AuthorizationExpired => Self::AuthorizationExpired,
            StuckReasonJson::RefreshLockStale => Self::RefreshLockStale,
            StuckReasonJson::TransferOverdue => Self::TransferOverdue,
            StuckReasonJson::ClaimWithoutJob => Self::ClaimWithoutJob,
            StuckReasonJson::LeasePastBound => Self::LeasePastBound,
            StuckReasonJson::FailingTooLong => Self::FailingTooLong,
            StuckReasonJson::DataNotAdvancing => Self::DataNotAdvancing,
        }
    }
}

/// A connection and why it is stuck.
#[derive(Debug, Clone, Object)]
#[oai(rename = "FleetConnection", rename_all = "camelCase")]
pub struct FleetConnectionJson {
    #[oai(flatten)]
    pub connection: ConnectionJson,
    /// Every stuck reason that holds for it (empty when it is not stuck).
    pub stuck_reasons: Vec<StuckReasonJson>,
}

impl From<ListedConnection> for FleetConnectionJson {
    fn from(c: ListedConnection) -> Self {
        Self {
            connection: c.connection.into(),
            stuck_reasons: c.stuck.into_iter().map(Into::into).collect(),
        }
    }
}

/// One page of the connection list, smallest id first.
#[derive(Debug, Clone, Object)]
#[oai(rename = "FleetConnectionPage", rename_all = "camelCase")]
pub struct FleetPageJson {
    pub connections: Vec<FleetConnectionJson>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

impl FleetPageJson {
    pub fn new(
        page: ConnectionPage,
        cursor: impl Fn(&engine::ids::ConnectionId) -> String,
    ) -> Self {
        Self {
            next_cursor: page.next.as_ref().map(cursor).into(),
            connections: page.connections.into_iter().map(Into::into).collect(),
        }
    }
}

/// Connections of one partner in one state.
#[derive(Debug, Clone, Object)]
#[oai(rename = "PartnerStateCount", rename_all = "camelCase")]
pub struct PartnerStateJson {
    pub partner: String,
    pub state: StateJson,
    pub count: u64,
}

/// Jobs of one step waiting or running in the queue.
#[derive(Debug, Clone, Object)]
#[oai(rename = "QueueDepth", rename_all = "camelCase")]
pub struct QueueDepthJson {
    pub step: StepJson,
    pub pending: u64,
}

/// One step's runs finished in the last hour.
#[derive(Debug, Clone, Object)]
#[oai(rename = "RecentRuns", rename_all = "camelCase")]
pub struct RecentRunsJson {
    pub step: StepJson,
    pub runs: u64,
    /// Runs that ended with an error code.
    pub errors: u64,
    /// Records stored for the first time.
    pub inserted: u64,
    /// Records whose contents changed.
    pub updated: u64,
}

/// Connections whose last error has this code.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ErrorCount", rename_all = "camelCase")]
pub struct ErrorCountJson {
    pub code: String,
    pub count: u64,
}

/// Connections stuck for this reason.
#[derive(Debug, Clone, Object)]
#[oai(rename = "StuckCount", rename_all = "camelCase")]
pub struct StuckCountJson {
    pub reason: StuckReasonJson,
    pub count: u64,
}

/// The fleet in counts (docs/operations.md#summary).
#[derive(Debug, Clone, Object)]
#[oai(rename = "FleetSummary", rename_all = "camelCase")]
pub struct SummaryJson {
    /// When the counts were taken.
    pub at: DateTime<Utc>,
    pub total: u64,
    /// Partner, then state, ascending; only the pairs that have connections.
    pub by_partner_state: Vec<PartnerStateJson>,
    /// Connections paused one by one.
    pub paused: u64,
    /// Active or refreshing, not paused, due now.
    pub due_now: u64,
    /// Of those, due longer than the overdue threshold.
    pub overdue: u64,
    /// How long the transfer due longest has been due, in seconds (the scheduling lag);
    /// `null` when none is due.
    pub oldest_due_secs: Nullable<u64>,
    /// Transfers started, holding a live lease.
    pub in_flight: u64,
    /// Claimed by a dispatcher, not started yet, claim live.
    pub claimed: u64,
    /// Every step; zeros when the job queue's tables do not exist.
    pub queue: Vec<QueueDepthJson>,
    /// Every step's runs finished in the hour before `at`.
    pub last_hour: Vec<RecentRunsJson>,
    /// Connections by `last_error_code`, most first.
    pub errors: Vec<ErrorCountJson>,
    /// Every stuck reason with its count (0 included).
    pub stuck: Vec<StuckCountJson>,
    /// Connections stuck for at least one reason.
    pub stuck_connections: u64,
    /// Every partner's circuit breaker that ever tripped (a partner not listed is closed;
    /// docs/operations.md#partner-incidents).
    pub breakers: Vec<BreakerJson>,
}

/// A partner's circuit breaker (docs/operations.md#partner-incidents).
#[derive(Debug, Clone, Object)]
#[oai(rename = "PartnerBreaker", rename_all = "camelCase")]
pub struct BreakerJson {
    pub partner: String,
    /// `closed`, `open` (the partner's transfers wait; one probe at `probeAt`) or `half_open`
    /// (the probe is running).
    pub state: String,
    /// When the last incident began (kept once it is over).
    pub opened_at: Nullable<DateTime<Utc>>,
    /// While open: when the next probe may run.
    pub probe_at: Nullable<DateTime<Utc>>,
    /// Probes of the current incident that failed.
    pub failed_probes: u32,
    /// While half-open: the connection probing.
    pub probe_connection: Nullable<String>,
}

impl From<OpsSummary> for SummaryJson {
    fn from(s: OpsSummary) -> Self {
        Self {
            at: s.at,
            total: s.total,
            by_partner_state: s
                .by_partner_state
                .into_iter()
                .map(|p| PartnerStateJson {
                    partner: p.partner,
                    state: p.state.into(),
                    count: p.count,
                })
                .collect(),
            paused: s.paused,
            due_now: s.due_now,
            overdue: s.overdue,
            oldest_due_secs: s.oldest_due.map(|d| d.as_secs()).into(),
            in_flight: s.in_flight,
            claimed: s.claimed,
            queue: s
                .queue
                .into_iter()
                .map(|q| QueueDepthJson {
                    step: q.step.into(),
                    pending: q.pending,
                })
                .collect(),
            last_hour: s
                .last_hour
                .into_iter()
                .map(|(step, r)| RecentRunsJson {
                    step: step.into(),
                    runs: r.runs,
                    errors: r.errors,
                    inserted: r.inserted,
                    updated: r.updated,
                })
                .collect(),
            errors: s
                .errors
                .into_iter()
                .map(|(code, count)| ErrorCountJson { code, count })
                .collect(),
            stuck: s
                .stuck
                .into_iter()
                .map(|(reason, count)| StuckCountJson {
                    reason: reason.into(),
                    count,
                })
                .collect(),
            stuck_connections: s.stuck_connections,
            breakers: s
                .breakers
                .into_iter()
                .map(|b| BreakerJson {
                    partner: b.partner,
                    state: b.state.as_str().to_owned(),
                    opened_at: b.opened_at.into(),
                    probe_at: b.probe_at.into(),
                    failed_probes: b.probes,
                    probe_connection: b.probe_connection.into(),
                })
                .collect(),
        }
    }
}
