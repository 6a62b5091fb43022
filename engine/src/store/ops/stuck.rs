//! Stuck connections (docs/operations.md#stuck): each reason a stable code and one SQL predicate
//! on a `connections` row. A reason that is the doctor's condition is the doctor's predicate
//! text (`doctor/checks.rs`), not a copy of it. Every time is a bound parameter, derived once
//! per read from its `now`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::DbBackend;

use crate::store::{
    DoctorCode, DoctorSettings,
    doctor::checks::{Binder, Bounds, connection_predicate},
};

/// Why a connection is stuck; its `as_str` is the stable code operators and tools see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StuckReason {
    /// `authorizing` for longer than an authorization lives: the user left the consent page.
    AuthorizationExpired,
    /// `refreshing` for longer than the maintenance loop allows (the doctor's code).
    RefreshLockStale,
    /// Due for longer than [`StuckSettings::overdue_after`] and not paused.
    TransferOverdue,
    /// Claimed by a dispatcher, never started, and no live fetch job names it.
    ClaimWithoutJob,
    /// A transfer lease left behind or ending beyond any writer's bound (the doctor's
    /// `sync_lease_stale` or `sync_lease_too_long`).
    LeasePastBound,
    /// Transfers have failed for longer than [`StuckSettings::failing_for`], budget not spent.
    FailingTooLong,
    /// Transfers complete but the newest data time has not moved for
    /// [`StuckSettings::idle_runs`] runs in a row.
    DataNotAdvancing,
}

impl StuckReason {
    pub const ALL: [StuckReason; 7] = [
        StuckReason::AuthorizationExpired,
        StuckReason::RefreshLockStale,
        StuckReason::TransferOverdue,
        StuckReason::ClaimWithoutJob,
        StuckReason::LeasePastBound,
        StuckReason::FailingTooLong,
        StuckReason::DataNotAdvancing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StuckReason::AuthorizationExpired => "authorization_expired",
            StuckReason::RefreshLockStale => "refresh_lock_stale",
            StuckReason::TransferOverdue => "transfer_overdue",
            StuckReason::ClaimWithoutJob => "claim_without_job",
            StuckReason::LeasePastBound => "lease_past_bound",
            StuckReason::FailingTooLong => "failing_too_long",
            StuckReason::DataNotAdvancing => "data_not_advancing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The reason, in one line.
    pub fn description(self) -> &'static str {
        match self {
            StuckReason::AuthorizationExpired => {
                "authorizing for longer than an authorization lives: the user did not come back"
            }
            StuckReason::RefreshLockStale => {
                "refreshing for longer than the maintenance loop allows"
            }
            StuckReason::TransferOverdue => "the next transfer is overdue and nothing is paused",
            StuckReason::ClaimWithoutJob => {
                "claimed by a dispatcher but never started, and no fetch job is queued for it"
            }
            StuckReason::LeasePastBound => {
                "a transfer lease was left behind or ends beyond any writer's bound"
            }
            StuckReason::FailingTooLong => {
                "transfers have been failing for long, but the failure budget is not spent yet"
            }
            StuckReason::DataNotAdvancing => {
                "transfers complete but bring no newer data (the partner stopped sending)"
            }
        }
    }
}

impl std::fmt::Display for StuckReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The thresholds of the stuck reasons (docs/operations.md#stuck-thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StuckSettings {
    /// The doctor's bounds and grace: the same leases, the same recovery time.
    pub doctor: DoctorSettings,
    /// How long an authorization (its OAuth `state`) lives: `oauth.state_ttl_secs`.
    pub authorization_lifetime: Duration,
    /// A transfer due for longer than this is overdue (default 15 minutes).
    pub overdue_after: Duration,
    /// A dispatcher pushes a claim's job right after the claim; a claim older than this whose
    /// job is not in the queue lost it (default 30 seconds).
    pub claim_grace: Duration,
    /// A failure streak older than this is reported before the budget ends it (default 6 h).
    pub failing_for: Duration,
    /// Completed transfers in a row without newer data (default 6; at least 1).
    pub idle_runs: u32,
}

impl Default for StuckSettings {
    fn default() -> Self {
        Self {
            doctor: DoctorSettings::default(),
            authorization_lifetime: Duration::from_secs(600),
            overdue_after: Duration::from_secs(15 * 60),
            claim_grace: Duration::from_secs(30),
            failing_for: Duration::from_secs(6 * 3600),
            idle_runs: 6,
        }
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::days(1))
}

/// The times the predicates compare with, and the connections live fetch jobs name.
pub(in crate::store) struct StuckBounds {
    now: DateTime<Utc>,
    doctor: Bounds,
    authorized_before: DateTime<Utc>,
    pub(super) overdue_before: DateTime<Utc>,
    claimed_before: DateTime<Utc>,
    failing_before: DateTime<Utc>,
    idle_runs: u32,
    /// JSON array of the connection ids live fetch jobs name.
    live_jobs: String,
    backend: DbBackend,
    /// The partner and global pauses in force, and the partners whose circuit breaker is not
    /// closed: their connections wait by an operator's choice or for the partner.
    pub(in crate::store) pauses: crate::store::actions::PauseFilter,
}

impl StuckBounds {
    pub(in crate::store) fn new(
        now: DateTime<Utc>,
        s: &StuckSettings,
        live_jobs: &[String],
        backend: DbBackend,
    ) -> Self {
        let grace = delta(s.doctor.grace);
        Self {
            now,
            doctor: Bounds::new(now, &s.doctor),
            authorized_before: now - delta(s.authorization_lifetime) - grace,
            overdue_before: now - delta(s.overdue_after),
            // A claim ends `dispatch_lease` after it was made.
            claimed_before: now + delta(s.doctor.dispatch_lease) - delta(s.claim_grace),
            failing_before: now - delta(s.failing_for),
            idle_runs: s.idle_runs.max(1),
            live_jobs: serde_json::to_string(live_jobs).unwrap_or_else(|_| "[]".to_owned()),
            backend,
            pauses: Default::default(),
        }
    }
}

/// `('active', 'refreshing')`: the states that may transfer.
fn transferring() -> String {
    crate::state::State::transfer_guard_sql()
}

/// The condition on a `connections` row for `reason`.
pub(in crate::store) fn predicate(reason: StuckReason, b: &mut Binder, k: &StuckBounds) -> String {
    let doctor = |code, b: &mut Binder| {
        connection_predicate(code, b, &k.doctor).expect("a connection row predicate")
    };
    match reason {
        StuckReason::AuthorizationExpired => format!(
            "connections.state = 'authorizing' AND connections.updated_at < {}",
            b.bind(k.authorized_before)
        ),
        StuckReason::RefreshLockStale => doctor(DoctorCode::RefreshLockStale, b),
        StuckReason::TransferOverdue => overdue(b, k, k.overdue_before),
        StuckReason::ClaimWithoutJob => {
            let before = b.bind(k.claimed_before);
            let ids = b.bind(k.live_jobs.clone());
            // PostgreSQL: an init plan (computed once, and a parallel scan may use it).
            let not_live = match k.backend {
                DbBackend::Postgres => format!(
                    "connections.id <> ALL (ARRAY(SELECT jsonb_array_elements_text({ids}::jsonb)))"
                ),
                _ => format!("connections.id NOT IN (SELECT value FROM json_each({ids}))"),
            };
            let due = due_now(b, k);
            format!(
                "{due} AND connections.sync_lease_token IS NULL \
                 AND connections.sync_lease_until < {before} AND {not_live}"
            )
        }
        StuckReason::LeasePastBound => format!(
            "{} AND (({}) OR ({}))",
            due_now(b, k),
            doctor(DoctorCode::SyncLeaseStale, b),
            doctor(DoctorCode::SyncLeaseTooLong, b)
        ),
        StuckReason::FailingTooLong => format!(
            "connections.state IN {} AND connections.failing_since < {}",
            transferring(),
            b.bind(k.failing_before)
        ),
        // The threshold is written into the text (a number from the settings, never input),
        // so that PostgreSQL's plan can use the partial index on `idle_runs > 0`.
        StuckReason::DataNotAdvancing => format!(
            "connections.state = 'active' AND connections.idle_runs >= {}",
            k.idle_runs
        ),
    }
}

/// Due now: true of every row holding a transfer lease or claim, because a claim takes only a
/// due connection and nothing moves `next_sync_at` ahead while a lease is held (the run's
/// end does both at once; a resume's spread skips leased rows). The lease columns have no
/// index; `next_sync_at` has, and the due rows are few: the lease reasons read those only
/// (docs/operations.md#connection-list). The doctor's lease checks read every row.
pub(super) fn due_now(b: &mut Binder, k: &StuckBounds) -> String {
    format!("connections.next_sync_at <= {}", b.bind(k.now))
}

/// Due before `before`, may transfer, not paused: the overdue transfers (the stuck reason and
/// the summary's count).
pub(super) fn overdue(b: &mut Binder, k: &StuckBounds, before: DateTime<Utc>) -> String {
    format!(
        "connections.state IN {} AND {} AND connections.next_sync_at < {}",
        transferring(),
        unpaused(b, k),
        b.bind(before)
    )
}

/// Not paused: neither the connection, nor its partner, nor everything (as the claims read
/// the pauses, docs/actions.md#actions).
pub(super) fn unpaused(b: &mut Binder, k: &StuckBounds) -> String {
    if k.pauses.all {
        return "1 = 0".to_owned();
    }
    let partners: Vec<String> = k
        .pauses
        .partners()
        .iter()
        .map(|p| b.bind(p.clone()))
        .collect();
    if partners.is_empty() {
        "connections.paused = FALSE".to_owned()
    } else {
        format!(
            "connections.paused = FALSE AND connections.partner NOT IN ({})",
            partners.join(", ")
        )
    }
}

/// Any reason at all, as one condition (dense answers; see [`stuck_ids`] for sparse ones).
pub(super) fn any(b: &mut Binder, k: &StuckBounds) -> String {
    let arms: Vec<String> = StuckReason::ALL
        .into_iter()
        .map(|r| format!("({})", predicate(r, b, k)))
        .collect();
    format!("({})", arms.join(" OR "))
}

/// Holds a transfer lease or claim: true of every row the lease reasons can hold for.
pub(super) const LEASED: &str =
    "(connections.sync_lease_until IS NOT NULL OR connections.sync_lease_token IS NOT NULL)";

/// Whether `reason` is about leases, whose columns have no index: finding it takes a scan of
/// the table (an index on them would cost every claim, start and commit its in-place update:
/// docs/operations.md#connection-list).
pub(super) fn needs_scan(reason: StuckReason) -> bool {
    matches!(
        reason,
        StuckReason::ClaimWithoutJob | StuckReason::LeasePastBound
    )
}

/// A query of the ids (column `id`, once each) of the connections matching `base` that are
/// stuck for one of `reasons`: one arm per indexed reason, each planned on its own index, and
/// one arm (one scan) for the lease reasons together.
pub(super) fn stuck_ids(
    b: &mut Binder,
    k: &StuckBounds,
    base: &str,
    reasons: &[StuckReason],
) -> String {
    let arm = |condition: String| {
        format!("SELECT connections.id AS id FROM connections WHERE {base} AND {condition}")
    };
    let mut arms = Vec::new();
    let mut leases = Vec::new();
    for &reason in reasons {
        let p = format!("({})", predicate(reason, b, k));
        if needs_scan(reason) {
            leases.push(p);
        } else {
            arms.push(arm(p));
        }
    }
    if !leases.is_empty() {
        arms.push(arm(format!("{LEASED} AND ({})", leases.join(" OR "))));
    }
    arms.join(" UNION ")
}

/// `1` when `reason` holds, else `0` (never NULL), as a selectable column.
pub(super) fn flag(reason: StuckReason, b: &mut Binder, k: &StuckBounds) -> String {
    format!("CASE WHEN {} THEN 1 ELSE 0 END", predicate(reason, b, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_unique_snake_case_and_documented() {
        let docs = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/operations.md"
        ));
        let mut seen = std::collections::BTreeSet::new();
        for reason in StuckReason::ALL {
            let s = reason.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert_eq!(StuckReason::parse(s), Some(reason));
            assert!(s.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'));
            assert!(
                docs.contains(&format!("| `{s}` |")),
                "{s} is not in docs/operations.md#stuck"
            );
        }
    }

    #[test]
    fn doctor_reasons_reuse_the_doctor_text() {
        let now = Utc::now();
        let s = StuckSettings::default();
        let k = StuckBounds::new(now, &s, &[], DbBackend::Postgres);
        let mut b = Binder::default();
        let ours = predicate(StuckReason::RefreshLockStale, &mut b, &k);
        let mut b = Binder::default();
        let theirs = connection_predicate(
            DoctorCode::RefreshLockStale,
            &mut b,
            &Bounds::new(now, &s.doctor),
        );
        assert_eq!(Some(ours), theirs);
    }
}
