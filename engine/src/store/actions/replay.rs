//! Replay: run a connection's current step now, from its persisted state
//! (docs/actions.md#actions). What runs is decided by the state:
//! - `active`: its transfer is made due now, and a transfer lease left behind (expired, or a
//!   token without an expiry) is cleared so the dispatcher claims it at its next pass. A live
//!   lease (a claimed or running transfer) is refused with `step_in_flight`: a second transfer
//!   never starts beside it.
//! - `refreshing` for longer than the stale-refresh bound: the maintenance loop's own
//!   `RefreshAbandoned` (back to `active`, the refresh due now, its outcome marked unknown);
//!   younger, the refresh is in flight (`step_in_flight`).
//! - `revoked` or `failed` owing a partner revocation: its next attempt is made due now. One
//!   due within the dispatch lease may be claimed right now and is refused (`step_in_flight`).
//! - anything else: `nothing_to_replay`.
//!
//! Work already due is answered as such and nothing is written, so replaying twice journals
//! once. Transfers and refreshes of a paused connection (or partner, or everything) are not
//! replayed (`paused`); revocations are not paused.

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

use super::{
    ActionError, ActionSettings, Entry, REPLAY_EVENT, RETRIES, Reason, Refusal, Swap, parse_state,
};
use crate::{
    ids::ConnectionId,
    model::{Actor, Change, Connection},
    state::{Event, State},
    store::{
        Store, StoreError,
        connections::to_domain,
        doctor::checks::Binder,
        entities::{connection, partner_revocation},
    },
};

/// Which step a replay ran again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStep {
    Transfer,
    Refresh,
    Revocation,
}

impl ReplayStep {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayStep::Transfer => "transfer",
            ReplayStep::Refresh => "refresh",
            ReplayStep::Revocation => "revocation",
        }
    }
}

/// What a replay scheduled.
#[derive(Debug, Clone)]
pub struct Replay {
    pub step: ReplayStep,
    /// When the step is due now (at or before the answer).
    pub due_at: DateTime<Utc>,
    /// `false`: it was already due; nothing was written.
    pub changed: bool,
    /// A transfer lease left behind was cleared.
    pub lease_cleared: bool,
    /// The connection afterwards.
    pub connection: Connection,
}

impl Store {
    /// Runs the connection's current step now (see the module's rules).
    pub async fn replay(
        &self,
        id: ConnectionId,
        actor: &Actor,
        reason: &Reason,
        settings: &ActionSettings,
    ) -> Result<Replay, ActionError> {
        for _ in 0..RETRIES {
            let row = self.row(id).await?;
            let state = parse_state(&row.state)?;
            let attempt = match state {
                State::Active | State::Refreshing => {
                    if row.paused || self.pause_filter().await?.blocks(&row.partner) {
                        return Err(ActionError::Refused(Refusal::Paused));
                    }
                    if state == State::Active {
                        self.replay_transfer(row, actor, reason, settings).await?
                    } else {
                        self.replay_refresh(row, actor, reason, settings).await?
                    }
                }
                State::Revoked | State::Failed => {
                    self.replay_revocation(row, actor, reason, settings).await?
                }
                State::Invited | State::Authorizing => {
                    return Err(ActionError::Refused(Refusal::NothingToReplay));
                }
            };
            if let Some(replay) = attempt {
                return Ok(replay);
            }
        }
        Err(self.lost(id).await)
    }

    /// `None`: the row changed under the swap; decide again.
    async fn replay_transfer(
        &self,
        row: connection::Model,
        actor: &Actor,
        reason: &Reason,
        settings: &ActionSettings,
    ) -> Result<Option<Replay>, ActionError> {
        let now = self.clock.now();
        let live_lease = row.sync_lease_until.filter(|until| *until >= now);
        let orphaned = match live_lease {
            Some(until) => self.claim_orphaned(&row, until, settings).await?,
            None => false,
        };
        if live_lease.is_some() && !orphaned {
            return Err(ActionError::Refused(Refusal::StepInFlight(
                "a transfer is claimed or running",
            )));
        }
        let left_behind = row.sync_lease_until.is_some() || row.sync_lease_token.is_some();
        if let Some(due) = row.next_sync_at.filter(|due| *due <= now && !left_behind) {
            return Ok(Some(Replay {
                step: ReplayStep::Transfer,
                due_at: due,
                changed: false,
                lease_cleared: false,
                connection: to_domain(row)?,
            }));
        }
        let swap = Swap::new()
            .set("next_sync_at", now)
            .null("sync_lease_until")
            .null("sync_lease_token");
        // An orphaned claim is cleared only while it is the very claim judged (no token taken
        // since, the same lease end); any other lease only once it has expired.
        let swap = match live_lease.filter(|_| orphaned) {
            Some(until) => swap.guard(|b| {
                format!(
                    "state = 'active' AND paused = {} AND sync_lease_token IS NULL \
                     AND sync_lease_until = {}",
                    b.bind(false),
                    b.bind(until)
                )
            }),
            None => swap.guard(|b| {
                format!(
                    "state = 'active' AND paused = {} \
                     AND (sync_lease_until IS NULL OR sync_lease_until < {})",
                    b.bind(false),
                    b.bind(now)
                )
            }),
        };
        let details = json!({
            "step": "transfer",
            "leaseCleared": left_behind,
            "claimWithoutJob": orphaned,
            "wasDueAt": row.next_sync_at,
        });
        let entry = Entry::new(REPLAY_EVENT, actor, reason, details);
        Ok(self
            .swap_journaled(&row, swap, Vec::new(), entry)
            .await?
            .map(|connection| Replay {
                step: ReplayStep::Transfer,
                due_at: connection.next_sync_at.unwrap_or(now),
                changed: true,
                lease_cleared: left_behind,
                connection,
            }))
    }

    /// A live dispatcher claim (no lease token) older than the claim grace whose fetch job is
    /// no longer queued or running: the stuck reason `claim_without_job`
    /// (docs/operations.md#stuck). Its job was lost (deleted, or a queue that failed), so
    /// nothing will start it before the claim expires. Read after the row: a job that started
    /// meanwhile took a token, and the swap's guard sees it.
    async fn claim_orphaned(
        &self,
        row: &connection::Model,
        until: DateTime<Utc>,
        settings: &ActionSettings,
    ) -> Result<bool, ActionError> {
        let now = self.clock.now();
        let claimed_before = now
            + TimeDelta::from_std(settings.dispatch_lease).unwrap_or(TimeDelta::minutes(2))
            - TimeDelta::from_std(settings.claim_grace).unwrap_or(TimeDelta::seconds(30));
        if row.sync_lease_token.is_some() || until >= claimed_before {
            return Ok(false);
        }
        Ok(!self.fetch_job_live(&row.id).await?)
    }

    async fn replay_refresh(
        &self,
        row: connection::Model,
        actor: &Actor,
        reason: &Reason,
        settings: &ActionSettings,
    ) -> Result<Option<Replay>, ActionError> {
        let now = self.clock.now();
        let stale_before = now
            - TimeDelta::from_std(settings.stale_refresh_after).unwrap_or(TimeDelta::minutes(5));
        if row.state_changed_at >= stale_before {
            return Err(super::in_flight_refresh());
        }
        let change = Change::new(Event::RefreshAbandoned { retry_at: now }, actor.clone())
            .reason(reason.as_str())
            .details(json!({ "replay": "refresh" }));
        let id = row
            .id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("connection id {:?}", row.id)))?;
        match self.apply(id, Some(row.version), change).await {
            Ok(applied) => Ok(Some(Replay {
                step: ReplayStep::Refresh,
                due_at: now,
                changed: true,
                lease_cleared: false,
                connection: applied.connection,
            })),
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    async fn replay_revocation(
        &self,
        row: connection::Model,
        actor: &Actor,
        reason: &Reason,
        settings: &ActionSettings,
    ) -> Result<Option<Replay>, ActionError> {
        use partner_revocation::Column as R;
        let now = self.clock.now();
        let owed = partner_revocation::Entity::find()
            .filter(R::ConnectionId.eq(row.id.as_str()))
            .filter(R::CompletedAt.is_null())
            .filter(R::TokenCiphertext.is_not_null())
            .all(&self.db)
            .await
            .map_err(StoreError::from)?;
        if owed.is_empty() {
            return Err(ActionError::Refused(Refusal::NothingToReplay));
        }
        let claimable_until =
            now + TimeDelta::from_std(settings.dispatch_lease).unwrap_or(TimeDelta::minutes(2));
        let waiting = |r: &&partner_revocation::Model| r.next_attempt_at > claimable_until;
        if owed
            .iter()
            .any(|r| r.next_attempt_at > now && r.next_attempt_at <= claimable_until)
        {
            return Err(ActionError::Refused(Refusal::StepInFlight(
                "a partner revocation attempt may be running",
            )));
        }
        let later: Vec<String> = owed.iter().filter(waiting).map(|r| r.id.clone()).collect();
        if later.is_empty() {
            let due = owed.iter().map(|r| r.next_attempt_at).min().unwrap_or(now);
            return Ok(Some(Replay {
                step: ReplayStep::Revocation,
                due_at: due,
                changed: false,
                lease_cleared: false,
                connection: to_domain(row)?,
            }));
        }
        let mut b = Binder::default();
        let sql = format!(
            "UPDATE partner_revocations SET next_attempt_at = {} \
             WHERE connection_id = {} AND completed_at IS NULL AND next_attempt_at > {}",
            b.bind(now),
            b.bind(row.id.clone()),
            b.bind(claimable_until),
        );
        let due_now = b.statement(self.db.get_database_backend(), sql);
        let state = row.state.clone();
        let swap = Swap::new().guard(|b| format!("state = {}", b.bind(state)));
        let details = json!({ "step": "revocation", "revocations": later });
        let entry = Entry::new(REPLAY_EVENT, actor, reason, details);
        let Some(connection) = self
            .swap_journaled(&row, swap, vec![due_now], entry)
            .await?
        else {
            return Ok(None);
        };
        self.revocations_queued.notify_one();
        Ok(Some(Replay {
            step: ReplayStep::Revocation,
            due_at: now,
            changed: true,
            lease_cleared: false,
            connection,
        }))
    }
}
