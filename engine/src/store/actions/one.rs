//! A connection's own pause, resume, fail and clear-error (docs/actions.md#actions): each
//! reads the row, decides, and swaps on the condition it decided on, with its journal entry.

use serde_json::json;

use super::{
    Acted, ActionError, CLEAR_ERROR_EVENT, Entry, FAILED_BY_OPERATOR, PAUSE_EVENT, RESUME_EVENT,
    RETRIES, Reason, Swap, in_flight_refresh, parse_state,
};
use crate::{
    ids::ConnectionId,
    model::{Actor, Change, ErrorInfo},
    state::{Event, State},
    store::{Store, StoreError, connections::to_domain, entities::connection},
};

/// What an action decided on the row it read.
enum Decision<T> {
    /// Already so: answer this, write nothing.
    Done(T),
    /// Write this (and journal `Entry`); `T` is the answer if the swap wins.
    Swap(Swap, T),
}

/// The actions on one connection that take nothing but a reason (docs/actions.md#actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionAction {
    Pause,
    Resume,
    Fail,
    ClearError,
}

impl Store {
    /// Runs `action` on connection `id`: [`Store::pause_connection`],
    /// [`Store::resume_connection`], [`Store::fail_by_operator`] or [`Store::clear_error`].
    pub async fn act_on(
        &self,
        action: ConnectionAction,
        id: ConnectionId,
        actor: &Actor,
        reason: &Reason,
    ) -> Result<Acted, ActionError> {
        match action {
            ConnectionAction::Pause => self.pause_connection(id, actor, reason).await,
            ConnectionAction::Resume => self.resume_connection(id, actor, reason).await,
            ConnectionAction::Fail => self.fail_by_operator(id, actor, reason).await,
            ConnectionAction::ClearError => self.clear_error(id, actor, reason).await,
        }
    }

    /// Pauses a connection: it is not claimed for transfers or refreshes until resumed. A
    /// transfer running for it loses its lease and stops at its next write (its committed
    /// windows stay). Only `active` connections are paused; `refreshing` is refused
    /// (`step_in_flight`), other states are `invalid_transition`.
    pub async fn pause_connection(
        &self,
        id: ConnectionId,
        actor: &Actor,
        reason: &Reason,
    ) -> Result<Acted, ActionError> {
        self.act(id, actor, reason, PAUSE_EVENT, |row, state| {
            if row.paused {
                return Ok(Decision::Done(false));
            }
            match state {
                State::Refreshing => Err(in_flight_refresh()),
                State::Active => {
                    let running = row.sync_lease_token.is_some();
                    let swap = Swap::new()
                        .set("paused", true)
                        .null("sync_lease_until")
                        .null("sync_lease_token")
                        .guard(|b| {
                            format!(
                                "paused = {} AND state = 'active' AND sync_lease_token IS {}NULL",
                                b.bind(false),
                                if running { "NOT " } else { "" }
                            )
                        });
                    Ok(Decision::Swap(swap, running))
                }
                other => Err(StoreError::NotTransferring(other).into()),
            }
        })
        .await
    }

    /// Resumes a paused connection (in any state: a pause outlives a disconnect and a
    /// reconnect, so an ended connection may be resumed too). Its overdue work stays due and is
    /// claimed at the next pass, unless its partner or everything is still paused.
    pub async fn resume_connection(
        &self,
        id: ConnectionId,
        actor: &Actor,
        reason: &Reason,
    ) -> Result<Acted, ActionError> {
        self.act(id, actor, reason, RESUME_EVENT, |row, state| {
            if !row.paused {
                return Ok(Decision::Done(false));
            }
            if state == State::Refreshing {
                return Err(in_flight_refresh());
            }
            let swap = Swap::new()
                .set("paused", false)
                .guard(|b| format!("paused = {} AND state <> 'refreshing'", b.bind(true)));
            Ok(Decision::Swap(swap, false))
        })
        .await
    }

    /// Clears the connection's last error and its transfer failure streak (`failure_count`,
    /// `failing_since`). Its schedule is left as it is (replay makes it due now).
    pub async fn clear_error(
        &self,
        id: ConnectionId,
        actor: &Actor,
        reason: &Reason,
    ) -> Result<Acted, ActionError> {
        self.act(id, actor, reason, CLEAR_ERROR_EVENT, |row, state| {
            if row.last_error_code.is_none()
                && row.failure_count == 0
                && row.failing_since.is_none()
            {
                return Ok(Decision::Done(false));
            }
            if state == State::Refreshing {
                return Err(in_flight_refresh());
            }
            let swap = Swap::new()
                .null("last_error_code")
                .null("last_error")
                .set("failure_count", 0i32)
                .null("failing_since")
                .guard(|_| "state <> 'refreshing'".to_owned());
            Ok(Decision::Swap(swap, false))
        })
        .await
    }

    /// Moves an `active` connection to `failed` by the table's own `Fail` transition, with the
    /// operator as actor: tokens dropped, a partner-side revocation owed, transfers cancelled
    /// (one running stops at its next write), the patient notified, as any failure does. A
    /// `failed` connection is left as it is; `refreshing` is refused (`step_in_flight`); other
    /// states are `invalid_transition`.
    pub async fn fail_by_operator(
        &self,
        id: ConnectionId,
        actor: &Actor,
        reason: &Reason,
    ) -> Result<Acted, ActionError> {
        for _ in 0..RETRIES {
            let row = self.row(id).await?;
            match parse_state(&row.state)? {
                State::Failed => {
                    return Ok(Acted {
                        connection: to_domain(row)?,
                        changed: false,
                        transfer_stopped: false,
                    });
                }
                State::Refreshing => return Err(in_flight_refresh()),
                _ => {}
            }
            let change = Change::new(Event::Fail, actor.clone())
                .reason(reason.as_str())
                .details(json!({ "operator": true }))
                .error(ErrorInfo::new(
                    FAILED_BY_OPERATOR,
                    "an operator stopped this connection; connect again to resume transfers",
                ));
            match self.apply(id, Some(row.version), change).await {
                Ok(applied) => {
                    return Ok(Acted {
                        connection: applied.connection,
                        changed: true,
                        transfer_stopped: row.sync_lease_token.is_some(),
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(self.lost(id).await)
    }

    /// Reads the row, decides, and swaps with a journal entry; decides again (on the fresh
    /// row) when a concurrent writer won. `decide`'s `T` (here: whether a transfer was
    /// stopped) comes back in [`Acted::transfer_stopped`].
    async fn act(
        &self,
        id: ConnectionId,
        actor: &Actor,
        reason: &Reason,
        event: &'static str,
        decide: impl Fn(&connection::Model, State) -> Result<Decision<bool>, ActionError>,
    ) -> Result<Acted, ActionError> {
        for _ in 0..RETRIES {
            let row = self.row(id).await?;
            let state = parse_state(&row.state)?;
            let (swap, stopped) = match decide(&row, state)? {
                Decision::Done(stopped) => {
                    return Ok(Acted {
                        connection: to_domain(row)?,
                        changed: false,
                        transfer_stopped: stopped,
                    });
                }
                Decision::Swap(swap, stopped) => (swap, stopped),
            };
            let details = json!({ "transferStopped": stopped });
            let entry = Entry::new(event, actor, reason, details);
            if let Some(after) = self.swap_journaled(&row, swap, Vec::new(), entry).await? {
                return Ok(Acted {
                    connection: after,
                    changed: true,
                    transfer_stopped: stopped,
                });
            }
        }
        Err(self.lost(id).await)
    }
}
