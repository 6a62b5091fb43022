//! What a transfer claim does with the breakers that are not closed
//! (docs/operations.md#partner-incidents): an open partner's transfers are skipped, but at its
//! `probe_at` one due connection is claimed as the probe; a half-open partner waits for its
//! probe, then closes (the probe transferred) or opens again with a longer backoff.
//!
//! The probe's outcome is read from what the transfer writes anyway: a completed or yielded
//! run sets `last_sync_at`, an outage-class failure upserts the connection's failure row.
//! So a transfer does not need to know it is a probe, and the claim of any process judges it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};

use super::{BreakerState, BreakerTransition, PartnerBreaker};
use crate::{
    state::State,
    store::{
        Claimed, Result, Store, StoreError, actions::PauseFilter, actions::PauseScope,
        transfer::delta,
    },
};

/// What one claim pass decided about the breakers.
#[derive(Debug, Clone, Default)]
pub struct BreakerPass {
    /// Partners whose transfers this claim skips (open, or half-open with a probe in flight).
    pub skip: Vec<String>,
    /// Probe transfers claimed by this pass.
    pub probes: Vec<Claimed>,
    /// Transitions this pass made.
    pub transitions: Vec<(String, BreakerTransition)>,
}

enum ProbeOutcome {
    Transferred,
    Failed,
    Running,
}

impl Store {
    /// Judges probes, starts due ones and lists the partners to skip. Paused partners are
    /// left alone (the pause skips them anyway).
    pub(in crate::store) async fn breaker_pass(
        &self,
        pauses: &PauseFilter,
        dispatch_lease: Duration,
    ) -> Result<BreakerPass> {
        let backend = self.db.get_database_backend();
        let rows = self
            .db
            .query_all_raw(Statement::from_string(
                backend,
                format!(
                    "SELECT {} FROM partner_breakers WHERE state <> 'closed' ORDER BY partner",
                    super::COLUMNS
                ),
            ))
            .await?;
        let mut pass = BreakerPass::default();
        if rows.is_empty() {
            return Ok(pass);
        }
        let now = self.clock.now();
        for row in &rows {
            let b = super::to_breaker(row)?;
            if pauses.blocks(&b.partner) {
                continue;
            }
            match b.state {
                BreakerState::Closed => {}
                BreakerState::Open => {
                    if b.probe_at.is_none_or(|at| at <= now)
                        && let Some(claimed) = self.start_probe(&b, now, dispatch_lease).await?
                    {
                        pass.transitions.push((
                            b.partner.clone(),
                            BreakerTransition::ProbeStarted {
                                connection: claimed.id,
                            },
                        ));
                        pass.probes.push(claimed);
                    }
                    pass.skip.push(b.partner.clone());
                }
                BreakerState::HalfOpen => match self.probe_outcome(&b, now).await? {
                    ProbeOutcome::Running => pass.skip.push(b.partner.clone()),
                    ProbeOutcome::Failed => {
                        if let Some(t) = self.reopen(&b, now).await? {
                            pass.transitions.push((b.partner.clone(), t));
                        }
                        pass.skip.push(b.partner.clone());
                    }
                    ProbeOutcome::Transferred => match self.close_breaker(&b, now).await? {
                        Some(t) => pass.transitions.push((b.partner.clone(), t)),
                        None => pass.skip.push(b.partner.clone()),
                    },
                },
            }
        }
        Ok(pass)
    }

    /// Claims the partner's longest-due connection as the probe: the breaker moves to
    /// half-open first (one process wins), then the connection is claimed; if it was taken
    /// meanwhile the breaker goes back to open as it was.
    async fn start_probe(
        &self,
        b: &PartnerBreaker,
        now: DateTime<Utc>,
        dispatch_lease: Duration,
    ) -> Result<Option<Claimed>> {
        let backend = self.db.get_database_backend();
        let due = format!(
            "state IN {} AND paused = $2 AND next_sync_at <= $3 \
             AND (sync_lease_until IS NULL OR sync_lease_until < $3)",
            State::transfer_guard_sql()
        );
        let candidate = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "SELECT id FROM connections WHERE partner = $1 AND {due} \
                     ORDER BY next_sync_at LIMIT 1"
                ),
                [b.partner.clone().into(), false.into(), now.into()],
            ))
            .await?;
        let Some(candidate) = candidate else {
            return Ok(None);
        };
        let id: String = candidate.try_get("", "id")?;
        let half_open = self
            .db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                "UPDATE partner_breakers SET state = 'half_open', generation = generation + 1, \
                 probe_connection = $1, probe_started_at = $2, updated_at = $2 \
                 WHERE partner = $3 AND generation = $4 AND state = 'open'",
                [
                    id.clone().into(),
                    now.into(),
                    b.partner.clone().into(),
                    b.generation.into(),
                ],
            ))
            .await?;
        if half_open.rows_affected() != 1 {
            return Ok(None);
        }
        let until = now + delta(dispatch_lease);
        let claimed = self
            .claimed(
                backend,
                format!(
                    "UPDATE connections SET sync_lease_until = $1, sync_lease_token = NULL \
                     WHERE id = $2 AND state IN {} AND paused = $3 AND next_sync_at <= $4 \
                     AND (sync_lease_until IS NULL OR sync_lease_until < $4) \
                     RETURNING id, version",
                    State::transfer_guard_sql()
                ),
                vec![until.into(), id.into(), false.into(), now.into()],
            )
            .await;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(err) => {
                self.back_to_open(b).await?;
                return Err(err);
            }
        };
        match claimed.into_iter().next() {
            Some(c) => {
                tracing::info!(partner = %b.partner, connection = %c.id, "partner outage: probing");
                crate::metrics::breaker_transition(&b.partner, BreakerState::HalfOpen);
                Ok(Some(c))
            }
            None => {
                self.back_to_open(b).await?;
                Ok(None)
            }
        }
    }

    /// Undoes a half-open move whose probe could not be claimed: open, as before.
    async fn back_to_open(&self, b: &PartnerBreaker) -> Result<()> {
        self.db
            .execute_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "UPDATE partner_breakers SET state = 'open', generation = generation + 1, \
                 probe_connection = NULL, probe_started_at = NULL \
                 WHERE partner = $1 AND generation = $2 AND state = 'half_open'",
                [b.partner.clone().into(), (b.generation + 1).into()],
            ))
            .await?;
        Ok(())
    }

    /// How the probe went, from what its transfer wrote.
    async fn probe_outcome(&self, b: &PartnerBreaker, now: DateTime<Utc>) -> Result<ProbeOutcome> {
        let (Some(id), Some(started)) = (&b.probe_connection, b.probe_started_at) else {
            return Ok(ProbeOutcome::Failed);
        };
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "SELECT c.last_sync_at AS synced, c.sync_lease_until AS lease, \
                 f.failed_at AS failed FROM connections c \
                 LEFT JOIN partner_breaker_failures f \
                   ON f.partner = c.partner AND f.connection_id = c.id \
                 WHERE c.id = $1",
                [id.clone().into()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(ProbeOutcome::Failed);
        };
        let synced: Option<DateTime<Utc>> = row.try_get("", "synced")?;
        let lease: Option<DateTime<Utc>> = row.try_get("", "lease")?;
        let failed: Option<DateTime<Utc>> = row.try_get("", "failed")?;
        Ok(if synced.is_some_and(|t| t >= started) {
            ProbeOutcome::Transferred
        } else if failed.is_some_and(|t| t >= started) {
            ProbeOutcome::Failed
        } else if lease.is_some_and(|t| t >= now) {
            ProbeOutcome::Running
        } else {
            // Ended without transferring (another kind of failure, a lost job): not a
            // recovery, so probe again later.
            ProbeOutcome::Failed
        })
    }

    async fn reopen(
        &self,
        b: &PartnerBreaker,
        now: DateTime<Utc>,
    ) -> Result<Option<BreakerTransition>> {
        let policy = self.breakers.policy(&b.partner);
        let probes = b.probes.saturating_add(1);
        let probe_at = now + policy.probe_delay(probes.saturating_add(1));
        let done = self
            .db
            .execute_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "UPDATE partner_breakers SET state = 'open', generation = generation + 1, \
                 probes = probes + 1, probe_at = $1, probe_connection = NULL, \
                 probe_started_at = NULL, updated_at = $2 \
                 WHERE partner = $3 AND generation = $4 AND state = 'half_open'",
                [
                    probe_at.into(),
                    now.into(),
                    b.partner.clone().into(),
                    b.generation.into(),
                ],
            ))
            .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        tracing::info!(partner = %b.partner, probes, "partner outage: the probe failed");
        crate::metrics::breaker_transition(&b.partner, BreakerState::Open);
        Ok(Some(BreakerTransition::Reopened { probe_at }))
    }

    /// Closes the breaker after a successful probe. In the same transaction, the failure
    /// streaks that began during the incident are cleared and those begun before it restart
    /// now (the partner's outage is charged to no user's failure budget), and the failing
    /// connections that have not transferred since (the probe has) are made due; the
    /// partner's failure rows
    /// are dropped (the incident's failures must not trip it again). Then the partner's
    /// overdue work is spread over the resume window, as on a partner's resume.
    async fn close_breaker(
        &self,
        b: &PartnerBreaker,
        now: DateTime<Utc>,
    ) -> Result<Option<BreakerTransition>> {
        let backend = self.db.get_database_backend();
        let txn = self.db.begin().await?;
        let closed = txn
            .execute_raw(Statement::from_sql_and_values(
                backend,
                "UPDATE partner_breakers SET state = 'closed', generation = generation + 1, \
                 probe_at = NULL, probes = 0, probe_connection = NULL, \
                 probe_started_at = NULL, updated_at = $1 \
                 WHERE partner = $2 AND generation = $3 AND state = 'half_open'",
                [now.into(), b.partner.clone().into(), b.generation.into()],
            ))
            .await?;
        if closed.rows_affected() != 1 {
            return Ok(None);
        }
        let since = b.since.or(b.opened_at).unwrap_or(now);
        let cleared = txn
            .execute_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "UPDATE connections SET \
                     failure_count = CASE WHEN failing_since >= $3 THEN 0 ELSE failure_count END, \
                     failing_since = CASE WHEN failing_since >= $3 THEN NULL ELSE $1 END, \
                     next_sync_at = CASE WHEN next_sync_at > $1 AND (last_sync_at IS NULL \
                       OR last_sync_at < failing_since) THEN $1 ELSE next_sync_at END \
                     WHERE partner = $2 AND state IN {} AND failing_since IS NOT NULL",
                    State::transfer_guard_sql()
                ),
                [now.into(), b.partner.clone().into(), since.into()],
            ))
            .await?
            .rows_affected();
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            "DELETE FROM partner_breaker_failures WHERE partner = $1",
            [b.partner.clone().into()],
        ))
        .await?;
        txn.commit().await?;
        let scope = crate::ids::PartnerName::parse(&b.partner)
            .map(PauseScope::Partner)
            .map_err(|_| StoreError::Corrupt(format!("breaker partner {:?}", b.partner)))?;
        let rescheduled = self
            .spread_overdue(&scope, self.breakers.resume_spread)
            .await?;
        tracing::warn!(partner = %b.partner, cleared, rescheduled, "partner outage over: the circuit breaker closed");
        crate::metrics::breaker_transition(&b.partner, BreakerState::Closed);
        Ok(Some(BreakerTransition::Closed {
            cleared,
            rescheduled,
        }))
    }
}
