//! The doctor's repairs (docs/operations.md#doctor). Each one is safe while steps run:
//! - a fix of a connection's row is one `UPDATE … WHERE id = ? AND version = ? AND <the check's
//!   own predicate>`, which bumps the version and writes a `doctor_repair` journal entry in the
//!   same transaction (a Note, like any journal-only entry: docs/lifecycle.md); a row that
//!   changed since it was found matches nothing and is left alone;
//! - where the engine has a transition for the repair (a stale refresh lock, an invited
//!   connection to end, a revocation to give up), that transition is applied, fenced by the
//!   version read;
//! - a fix of outbox messages re-checks the predicate per message, and journals on the
//!   message's connection (locked first, in the order transitions lock).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseTransaction, EntityTrait, TransactionTrait, Value,
};
use serde_json::json;

use super::{
    DoctorCode, DoctorSettings,
    checks::{self, Binder, Bounds},
};
use crate::{
    ids::ConnectionId,
    invitation::InvitationStatus,
    model::{Actor, Change, RevocationFinish},
    schedule::refresh::refresh_due,
    state::{Event, State},
    store::{
        Result, Store, StoreError,
        entities::{connection, connection_event},
    },
};

/// The journal's event name for a doctor's fix that no transition of the table expresses.
pub const REPAIR_EVENT: &str = "doctor_repair";

/// A column a fix writes: a value, or `NULL`.
type Assignment = (&'static str, Option<Value>);

impl Store {
    /// Repairs up to `settings.repair_batch` violations of `code`; returns how many it fixed.
    pub(super) async fn repair_code(
        &self,
        code: DoctorCode,
        actor: &Actor,
        now: DateTime<Utc>,
        settings: &DoctorSettings,
    ) -> Result<u64> {
        let bounds = Bounds::new(now, settings);
        let batch = settings.repair_batch;
        let lease_cleared = || vec![("sync_lease_until", None), ("sync_lease_token", None)];
        let mut fixed = 0;
        match code {
            DoctorCode::OutboxClaimTooLong
            | DoctorCode::OutboxLeaseTooLong
            | DoctorCode::OutboxStuck => {
                return self.repair_messages(code, &bounds, actor, batch).await;
            }
            DoctorCode::RevocationWithoutToken => {
                return self.give_up_revocations(actor, batch).await;
            }
            DoctorCode::RefreshLockStale | DoctorCode::InvitedWithoutInvitation => {
                for row in self.violating(code, &bounds, batch).await? {
                    let event = if code == DoctorCode::RefreshLockStale {
                        Event::RefreshAbandoned { retry_at: now }
                    } else {
                        Event::Disconnect
                    };
                    let change = Change::new(event, actor.clone())
                        .reason(code.description())
                        .details(json!({ "doctor": code.as_str() }));
                    match self
                        .apply(parse_id(&row.id)?, Some(row.version), change)
                        .await
                    {
                        Ok(_) => fixed += 1,
                        Err(StoreError::Conflict { .. } | StoreError::InvalidTransition(_)) => {}
                        Err(err) => return Err(err),
                    }
                }
            }
            DoctorCode::InvitationPendingNotInvited => {
                for row in self.violating(code, &bounds, batch).await? {
                    let Some((txn, version, state)) =
                        self.swap(code, &row, vec![], &bounds).await?
                    else {
                        continue;
                    };
                    let status = if state.is_live() {
                        InvitationStatus::Accepted
                    } else {
                        InvitationStatus::Expired
                    };
                    let mut b = Binder::default();
                    let sql = format!(
                        "UPDATE invitations SET status = {}, closed_at = {} \
                         WHERE connection_id = {} AND status = 'pending'",
                        b.bind(status.as_str()),
                        b.bind(now),
                        b.bind(row.id.clone()),
                    );
                    let closed = txn
                        .execute_raw(b.statement(txn.get_database_backend(), sql))
                        .await?
                        .rows_affected();
                    let details = json!({ "code": code.as_str(), "invitations": closed, "status": status.as_str() });
                    journal(&txn, &row.id, version, state, code, actor, details, now).await?;
                    txn.commit().await?;
                    fixed += 1;
                }
            }
            DoctorCode::TokensNotDiscarded => {
                for row in self.violating(code, &bounds, batch).await? {
                    fixed += u64::from(self.discard_tokens(&row, &bounds, actor).await?);
                }
            }
            DoctorCode::TransferNotScheduled
            | DoctorCode::LeaseNotDue
            | DoctorCode::RefreshNotScheduled
            | DoctorCode::StaleSchedule
            | DoctorCode::SyncLeaseStale
            | DoctorCode::SyncLeaseTooLong
            | DoctorCode::PausedTransferRunning => {
                for row in self.violating(code, &bounds, batch).await? {
                    let sets: Vec<Assignment> = match code {
                        DoctorCode::TransferNotScheduled | DoctorCode::LeaseNotDue => {
                            vec![("next_sync_at", Some(now.into()))]
                        }
                        DoctorCode::RefreshNotScheduled => {
                            let due = refresh_due(now, row.token_expires_at).unwrap_or(now);
                            vec![("refresh_due_at", Some(due.into()))]
                        }
                        DoctorCode::StaleSchedule => {
                            vec![("next_sync_at", None), ("refresh_due_at", None)]
                        }
                        _ => lease_cleared(),
                    };
                    let Some((txn, version, state)) = self.swap(code, &row, sets, &bounds).await?
                    else {
                        continue;
                    };
                    let details = json!({ "code": code.as_str() });
                    journal(&txn, &row.id, version, state, code, actor, details, now).await?;
                    txn.commit().await?;
                    fixed += 1;
                }
            }
            DoctorCode::ActiveWithoutTokens
            | DoctorCode::JournalGap
            | DoctorCode::JournalVersionMismatch
            | DoctorCode::JournalStateMismatch
            | DoctorCode::JournalChainBroken => {}
        }
        Ok(fixed)
    }

    /// The connections violating `code` (a row predicate), smallest id first.
    async fn violating(
        &self,
        code: DoctorCode,
        bounds: &Bounds,
        limit: u64,
    ) -> Result<Vec<connection::Model>> {
        let mut b = Binder::default();
        let Some(predicate) = checks::connection_predicate(code, &mut b, bounds) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT connections.* FROM connections WHERE {predicate} \
             ORDER BY connections.id LIMIT {limit}"
        );
        Ok(connection::Entity::find()
            .from_raw_sql(b.statement(self.db.get_database_backend(), sql))
            .all(&self.db)
            .await?)
    }

    /// Writes `sets` on `row` if it is still at the version read and still violates `code`,
    /// bumping its version, in a transaction left open for the caller's journal entry. `None`:
    /// the row changed meanwhile; nothing was written.
    async fn swap(
        &self,
        code: DoctorCode,
        row: &connection::Model,
        sets: Vec<Assignment>,
        bounds: &Bounds,
    ) -> Result<Option<(DatabaseTransaction, i64, State)>> {
        let mut b = Binder::default();
        let mut assignments: Vec<String> = sets
            .into_iter()
            .map(|(column, value)| match value {
                Some(value) => format!("{column} = {}", b.bind(value)),
                None => format!("{column} = NULL"),
            })
            .collect();
        assignments.push("version = version + 1".to_owned());
        assignments.push(format!("updated_at = {}", b.bind(bounds.now)));
        let id = b.bind(row.id.clone());
        let version = b.bind(row.version);
        let predicate = checks::connection_predicate(code, &mut b, bounds)
            .ok_or_else(|| StoreError::Corrupt(format!("{code} has no row predicate")))?;
        let sql = format!(
            "UPDATE connections SET {} WHERE connections.id = {id} \
             AND connections.version = {version} AND ({predicate}) RETURNING version, state",
            assignments.join(", ")
        );
        let txn = self.db.begin().await?;
        let swapped = txn
            .query_one_raw(b.statement(txn.get_database_backend(), sql))
            .await?;
        let Some(swapped) = swapped else {
            txn.rollback().await?;
            return Ok(None);
        };
        let version: i64 = swapped.try_get("", "version")?;
        let state: String = swapped.try_get("", "state")?;
        let state = state
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("unknown state {state:?}")))?;
        Ok(Some((txn, version, state)))
    }

    /// Discards a connection's tokens as `DiscardTokens` does and, when its refresh token can
    /// still be read, queues its revocation at the partner as a disconnect does (revoking a
    /// revoked grant is harmless: RFC 7009).
    async fn discard_tokens(
        &self,
        row: &connection::Model,
        bounds: &Bounds,
        actor: &Actor,
    ) -> Result<bool> {
        let code = DoctorCode::TokensNotDiscarded;
        let refresh = match self.decrypt_tokens(row) {
            Ok(tokens) => tokens.and_then(|t| t.refresh_token),
            Err(err) => {
                tracing::warn!(connection = %row.id, error = %err, "doctor: stale tokens cannot be read; discarding them without a partner revocation");
                None
            }
        };
        let sets = [
            "token_ciphertext",
            "token_key_id",
            "token_expires_at",
            "refresh_due_at",
        ]
        .map(|column| (column, None))
        .to_vec();
        let Some((txn, version, state)) = self.swap(code, row, sets, bounds).await? else {
            return Ok(false);
        };
        let now = bounds.now;
        if let Some(refresh) = &refresh {
            self.queue_revocation(&txn, &row.id, &row.partner, refresh.expose(), now)
                .await?;
        }
        let details = json!({ "code": code.as_str(), "partnerRevocation": refresh.is_some() });
        journal(&txn, &row.id, version, state, code, actor, details, now).await?;
        txn.commit().await?;
        if refresh.is_some() {
            self.revocations_queued.notify_one();
        }
        Ok(true)
    }

    /// Owed revocations without a token can never be attempted: they are recorded as
    /// abandoned by the revoker's own transition (`RevocationFinished`).
    async fn give_up_revocations(&self, actor: &Actor, limit: u64) -> Result<u64> {
        let backend = self.db.get_database_backend();
        let sql = format!(
            "SELECT id, connection_id, attempts FROM partner_revocations \
             WHERE {} ORDER BY id LIMIT {limit}",
            checks::REVOCATION_WITHOUT_TOKEN
        );
        let rows = self
            .db
            .query_all_raw(Binder::default().statement(backend, sql))
            .await?;
        let mut fixed = 0;
        for row in rows {
            let revocation_id: String = row.try_get("", "id")?;
            let connection_id: String = row.try_get("", "connection_id")?;
            let attempts: i32 = row.try_get("", "attempts")?;
            let finish = RevocationFinish {
                revocation_id,
                confirmed: false,
                attempts: u32::try_from(attempts).unwrap_or(0),
                error: Some("token_missing".to_owned()),
            };
            let code = DoctorCode::RevocationWithoutToken;
            let change = Change::new(Event::RevocationFinished { finish }, actor.clone())
                .reason(code.description())
                .details(json!({ "doctor": code.as_str() }));
            match self.apply(parse_id(&connection_id)?, None, change).await {
                Ok(_) => fixed += 1,
                Err(StoreError::AlreadyDone | StoreError::NotFound) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(fixed)
    }

    /// Fixes messages violating `code`, connection by connection: the connection's row is
    /// locked first (its version bumped for the journal entry), then each message is updated
    /// only if it still violates `code`; nothing changed means nothing is committed.
    async fn repair_messages(
        &self,
        code: DoctorCode,
        bounds: &Bounds,
        actor: &Actor,
        limit: u64,
    ) -> Result<u64> {
        let backend = self.db.get_database_backend();
        let mut b = Binder::default();
        let Some(predicate) = checks::outbox_predicate(code, &mut b, bounds) else {
            return Ok(0);
        };
        let sql = format!(
            "SELECT outbox.seq AS seq, outbox.id AS id, outbox.connection_id AS connection_id \
             FROM outbox WHERE {predicate} ORDER BY outbox.seq LIMIT {limit}"
        );
        let mut by_connection: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for row in self.db.query_all_raw(b.statement(backend, sql)).await? {
            by_connection
                .entry(row.try_get("", "connection_id")?)
                .or_default()
                .push((row.try_get("", "seq")?, row.try_get("", "id")?));
        }
        let now = bounds.now;
        let mut fixed = 0;
        for (connection_id, messages) in by_connection {
            let txn = self.db.begin().await?;
            let mut b = Binder::default();
            let sql = format!(
                "UPDATE connections SET version = version + 1, updated_at = {} \
                 WHERE connections.id = {} RETURNING version, state",
                b.bind(now),
                b.bind(connection_id.clone()),
            );
            let bumped = txn.query_one_raw(b.statement(backend, sql)).await?;
            let mut done = Vec::new();
            for (seq, id) in messages {
                let mut b = Binder::default();
                let sets = match code {
                    DoctorCode::OutboxStuck => format!(
                        "next_attempt_at = {}, claimed_until = NULL, lease_until = NULL",
                        b.bind(now)
                    ),
                    DoctorCode::OutboxClaimTooLong => "claimed_until = NULL".to_owned(),
                    _ => "lease_until = NULL".to_owned(),
                };
                let seq = b.bind(seq);
                let predicate = checks::outbox_predicate(code, &mut b, bounds).unwrap_or_default();
                let sql =
                    format!("UPDATE outbox SET {sets} WHERE outbox.seq = {seq} AND ({predicate})");
                if txn
                    .execute_raw(b.statement(backend, sql))
                    .await?
                    .rows_affected()
                    == 1
                {
                    done.push(id);
                }
            }
            if done.is_empty() {
                txn.rollback().await?;
                continue;
            }
            if let Some(bumped) = bumped {
                let version: i64 = bumped.try_get("", "version")?;
                let state: String = bumped.try_get("", "state")?;
                let state = state
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("unknown state {state:?}")))?;
                let details = json!({ "code": code.as_str(), "messages": done });
                journal(
                    &txn,
                    &connection_id,
                    version,
                    state,
                    code,
                    actor,
                    details,
                    now,
                )
                .await?;
            }
            txn.commit().await?;
            fixed += done.len() as u64;
        }
        if fixed > 0 {
            self.deliveries_queued.notify_one();
        }
        Ok(fixed)
    }
}

fn parse_id(id: &str) -> Result<ConnectionId> {
    id.parse()
        .map_err(|_| StoreError::Corrupt(format!("connection id {id:?}")))
}

/// The journal entry of a fix, at the version the fix's `UPDATE` moved the row to: the state
/// does not change (`from` = `to`), like any journal-only entry.
#[allow(clippy::too_many_arguments)]
async fn journal(
    txn: &DatabaseTransaction,
    id: &str,
    seq: i64,
    state: State,
    code: DoctorCode,
    actor: &Actor,
    details: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    connection_event::Entity::insert(connection_event::ActiveModel {
        connection_id: Set(id.to_owned()),
        seq: Set(seq),
        from_state: Set(Some(state.as_str().to_owned())),
        to_state: Set(state.as_str().to_owned()),
        event: Set(REPAIR_EVENT.to_owned()),
        actor: Set(actor.as_str().to_owned()),
        reason: Set(Some(code.repair().unwrap_or(code.description()).to_owned())),
        details: Set(details),
        at: Set(now),
    })
    .exec(txn)
    .await?;
    Ok(())
}
