//! Connections: creation/reconnect and compare-and-swap transitions. Each transition writes the
//! row, its journal entry and its storage effects (tokens, authorizations, owed revocations,
//! alerts) in one database transaction, so nothing is ever half-written.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait, sea_query::Expr,
};

use super::{
    Result, Store, StoreError,
    effects::{TokenPlain, token_aad},
    entities::{connection, connection_event},
    is_unique_violation,
};
use crate::{
    ids::{ConnectionId, PartnerName, UserId},
    model::{Change, Connection, ErrorInfo, JournalEntry, TokenSet},
    secret::SecretString,
    state::{EffectKind, State, Transition, TransitionSummary, transition},
    text::{storable, storable_value},
};

/// Runs a multi-statement transaction on its own task, so that cancelling the caller (a
/// request whose client went away, a job past its timeout, an aborted worker) cannot drop the
/// transaction half-way with its row locks held on a pooled connection: it runs to its commit
/// or rollback either way.
pub(super) async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| StoreError::Corrupt(format!("storage task failed: {e}")))?
}

/// How often a change without an expected version is retried after losing a race.
const CONFLICT_RETRIES: u32 = 5;

/// The result of an applied change.
#[derive(Debug, Clone)]
pub struct Applied {
    pub connection: Connection,
    pub transition: TransitionSummary,
}

impl Store {
    pub async fn get(&self, id: ConnectionId) -> Result<Connection> {
        let row = connection::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        to_domain(row)
    }

    /// All connections of a user, newest first (including revoked/failed history).
    pub async fn list_for_user(&self, user: &UserId) -> Result<Vec<Connection>> {
        connection::Entity::find()
            .filter(connection::Column::UserId.eq(user.as_str()))
            .order_by_desc(connection::Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_domain)
            .collect()
    }

    /// Connections that have been in `state` since before `older_than` (stuck transient states).
    pub async fn held_since(
        &self,
        state: State,
        older_than: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<Connection>> {
        connection::Entity::find()
            .filter(connection::Column::State.eq(state.as_str()))
            .filter(connection::Column::StateChangedAt.lt(older_than))
            .order_by_asc(connection::Column::StateChangedAt)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_domain)
            .collect()
    }

    /// The journal of a connection, oldest first.
    pub async fn journal(&self, id: ConnectionId) -> Result<Vec<JournalEntry>> {
        connection_event::Entity::find()
            .filter(connection_event::Column::ConnectionId.eq(id.to_string()))
            .order_by_asc(connection_event::Column::Seq)
            .all(&self.db)
            .await?
            .into_iter()
            .map(journal_to_domain)
            .collect()
    }

    /// Starts a connection for (user, partner) with `change.event` (`StartAuthorization` or
    /// `Invite`). A live connection gets the event applied (so `active` answers
    /// `invalid_transition`); otherwise the most recent revoked/failed one is reused, keeping its
    /// data cursor (reconnect); otherwise a new row is inserted. Returns whether a row was created.
    pub async fn open_connection(
        &self,
        user: &UserId,
        partner: &PartnerName,
        change: Change,
    ) -> Result<(Applied, bool)> {
        let mut attempt = 0;
        loop {
            match self
                .open_connection_once(user, partner, change.clone())
                .await
            {
                Err(StoreError::Conflict { .. } | StoreError::AlreadyLive)
                    if attempt < CONFLICT_RETRIES =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn open_connection_once(
        &self,
        user: &UserId,
        partner: &PartnerName,
        change: Change,
    ) -> Result<(Applied, bool)> {
        let existing = connection::Entity::find()
            .filter(connection::Column::UserId.eq(user.as_str()))
            .filter(connection::Column::Partner.eq(partner.as_str()))
            .order_by_desc(connection::Column::UpdatedAt)
            .all(&self.db)
            .await?;
        let live = existing
            .iter()
            .find(|row| row.state.parse::<State>().is_ok_and(State::is_live));
        if let Some(row) = live.or(existing.first()) {
            let applied = self.apply_to_row(row.clone(), None, change).await?;
            return Ok((applied, false));
        }

        let transition = transition(None, &change.event)?;
        let now = self.clock.now();
        let id = ConnectionId::new();
        let id_str = id.to_string();
        let row = connection::ActiveModel {
            id: Set(id_str.clone()),
            user_id: Set(user.as_str().to_owned()),
            partner: Set(partner.as_str().to_owned()),
            state: Set(transition.to.as_str().to_owned()),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
            state_changed_at: Set(now),
            last_error_code: Set(None),
            last_error: Set(None),
            failure_count: Set(0),
            paused: Set(false),
            token_ciphertext: Set(None),
            token_key_id: Set(None),
            token_expires_at: Set(None),
            scope: Set(None),
            earliest_data_time: Set(None),
            latest_data_time: Set(None),
            last_sync_at: Set(None),
            next_sync_at: Set(None),
            fetched_through: Set(None),
            fetched_from: Set(None),
            failing_since: Set(None),
            sync_lease_until: Set(None),
            sync_lease_token: Set(None),
            sync_requested_at: Set(None),
            records_skipped: Set(0),
            refresh_failures: Set(0),
            refresh_due_at: Set(None),
            refresh_outcome_unknown_at: Set(None),
            records_conflicting: Set(0),
            reread_at: Set(None),
            contact_ciphertext: Set(None),
            contact_key_id: Set(None),
            idle_runs: Set(0),
        };
        let txn = self.db.begin().await?;
        if let Err(err) = connection::Entity::insert(row).exec(&txn).await {
            return Err(if is_unique_violation(&err) {
                StoreError::AlreadyLive
            } else {
                err.into()
            });
        }
        // The new row's effects on its own columns (none today from "nothing yet", but the
        // table decides, not this function) and its error update.
        self.column_effects(
            connection::Entity::update_many(),
            &id_str,
            &transition,
            &change.error,
            now,
        )
        .col_expr(connection::Column::Version, Expr::val(1))
        .filter(connection::Column::Id.eq(id_str.as_str()))
        .exec(&txn)
        .await?;
        self.table_effects(
            &txn,
            &id_str,
            user.as_str(),
            partner.as_str(),
            None,
            &transition,
            &change,
            now,
        )
        .await?;
        self.queue_state_change(
            &txn,
            &id_str,
            user.as_str(),
            partner.as_str(),
            &transition,
            &change,
            None,
            now,
        )
        .await?;
        insert_journal(&txn, &id_str, 1, &transition, &change, now).await?;
        txn.commit().await?;
        self.after_commit(&transition);
        let connection = self.get(id).await?;
        Ok((
            Applied {
                connection,
                transition: transition.summary(),
            },
            true,
        ))
    }

    /// Applies `change` to a connection with compare-and-swap on its version. With
    /// `expected_version`, a connection at any other version is a `Conflict` (a stale job does
    /// nothing); without, the version just read is the one swapped.
    ///
    /// Without an expected version a lost race is retried (a few times) against the fresh row,
    /// so the event is re-validated against whatever state the winner left.
    pub async fn apply(
        &self,
        id: ConnectionId,
        expected_version: Option<i64>,
        change: Change,
    ) -> Result<Applied> {
        let store = self.clone();
        detached(async move { store.apply_retrying(id, expected_version, change).await }).await
    }

    async fn apply_retrying(
        &self,
        id: ConnectionId,
        expected_version: Option<i64>,
        change: Change,
    ) -> Result<Applied> {
        let mut attempt = 0;
        loop {
            let row = connection::Entity::find_by_id(id.to_string())
                .one(&self.db)
                .await?
                .ok_or(StoreError::NotFound)?;
            match self
                .apply_to_row(row, expected_version, change.clone())
                .await
            {
                Err(StoreError::Conflict { .. })
                    if expected_version.is_none() && attempt < CONFLICT_RETRIES =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn apply_to_row(
        &self,
        row: connection::Model,
        expected_version: Option<i64>,
        change: Change,
    ) -> Result<Applied> {
        use connection::Column as C;
        if let Some(expected) = expected_version
            && expected != row.version
        {
            return Err(StoreError::Conflict {
                expected,
                actual: row.version,
            });
        }
        let from = parse_state(&row.state)?;
        let transition = transition(Some(from), &change.event)?;
        let now = self.clock.now();
        let new_version = row.version + 1;

        let mut update = connection::Entity::update_many()
            .col_expr(C::State, Expr::val(transition.to.as_str()))
            .col_expr(C::Version, Expr::val(new_version))
            .col_expr(C::UpdatedAt, Expr::val(now));
        if transition.to != from {
            update = update.col_expr(C::StateChangedAt, Expr::val(now));
        }
        let update = self.column_effects(update, &row.id, &transition, &change.error, now);

        let txn = self.db.begin().await?;
        // The first statement writes, so SQLite takes the write lock (waiting up to the busy
        // timeout) instead of failing a read-to-write upgrade; PostgreSQL re-checks the
        // predicate after a concurrent commit. Either way exactly one writer wins.
        let swapped = update
            .filter(C::Id.eq(row.id.as_str()))
            .filter(C::Version.eq(row.version))
            .exec_with_returning(&txn)
            .await?;
        let Some(swapped) = swapped.into_iter().next() else {
            txn.rollback().await?;
            let actual = connection::Entity::find_by_id(row.id.clone())
                .one(&self.db)
                .await?
                .map_or(row.version, |r| r.version);
            return Err(StoreError::Conflict {
                expected: row.version,
                actual,
            });
        };
        self.table_effects(
            &txn,
            &row.id,
            &row.user_id,
            &row.partner,
            Some(&row),
            &transition,
            &change,
            now,
        )
        .await?;
        self.queue_state_change(
            &txn,
            &row.id,
            &row.user_id,
            &row.partner,
            &transition,
            &change,
            swapped.last_error_code.as_deref(),
            now,
        )
        .await?;
        insert_journal(&txn, &row.id, new_version, &transition, &change, now).await?;
        txn.commit().await?;
        self.after_commit(&transition);
        Ok(Applied {
            connection: to_domain(swapped)?,
            transition: transition.summary(),
        })
    }

    /// What a committed transition sets in motion in this process: a queued partner
    /// revocation wakes the dispatcher (other processes find it on their next pass).
    fn after_commit(&self, transition: &Transition<'_>) {
        crate::metrics::transition(transition.from, transition.to, transition.event);
        if transition.has(EffectKind::RevokeAtPartner) {
            self.revocations_queued.notify_one();
        }
        let state_changed = transition.from != Some(transition.to);
        if transition.has(EffectKind::SendInvite)
            || transition.has(EffectKind::NotifyConnectionLost)
            || (state_changed && !self.outbox.webhook_endpoints.is_empty())
        {
            self.deliveries_queued.notify_one();
        }
    }

    /// Woken when a transition in this process queued a partner revocation.
    pub fn revocations_queued(&self) -> &tokio::sync::Notify {
        &self.revocations_queued
    }

    /// Decrypts the tokens of a connection, if it holds any.
    pub async fn tokens(&self, id: ConnectionId) -> Result<Option<TokenSet>> {
        let row = connection::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        self.decrypt_tokens(&row)
    }

    pub(super) fn decrypt_tokens(&self, row: &connection::Model) -> Result<Option<TokenSet>> {
        let (Some(blob), Some(key_id)) = (&row.token_ciphertext, &row.token_key_id) else {
            return Ok(None);
        };
        let plain = self.keyring.open(key_id, blob, &token_aad(&row.id))?;
        let plain: TokenPlain = serde_json::from_slice(&plain)
            .map_err(|e| StoreError::Corrupt(format!("token payload: {e}")))?;
        Ok(Some(TokenSet {
            access_token: SecretString::new(plain.a),
            refresh_token: plain.r.map(SecretString::new),
            expires_at: row.token_expires_at,
            scope: row.scope.clone(),
        }))
    }
}

async fn insert_journal(
    txn: &DatabaseTransaction,
    id: &str,
    seq: i64,
    transition: &Transition<'_>,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut details = change.details.clone();
    storable_value(&mut details);
    connection_event::Entity::insert(connection_event::ActiveModel {
        connection_id: Set(id.to_owned()),
        seq: Set(seq),
        from_state: Set(transition.from.map(|s| s.as_str().to_owned())),
        to_state: Set(transition.to.as_str().to_owned()),
        event: Set(change.event.journal_name().to_owned()),
        actor: Set(change.actor.as_str().to_owned()),
        reason: Set(change.reason.as_deref().map(storable)),
        details: Set(details),
        at: Set(now),
    })
    .exec(txn)
    .await?;
    Ok(())
}

fn parse_state(s: &str) -> Result<State> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("unknown state {s:?}")))
}

pub(super) fn to_domain(row: connection::Model) -> Result<Connection> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("{what} of connection {}", row.id));
    Ok(Connection {
        id: row.id.parse().map_err(|_| corrupt("id"))?,
        user_id: UserId::parse(&row.user_id).map_err(|_| corrupt("user id"))?,
        partner: PartnerName::parse(&row.partner).map_err(|_| corrupt("partner"))?,
        state: parse_state(&row.state)?,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
        state_changed_at: row.state_changed_at,
        last_error: row
            .last_error_code
            .clone()
            .map(|code| ErrorInfo::new(code, row.last_error.clone().unwrap_or_default())),
        failure_count: u32::try_from(row.failure_count).map_err(|_| corrupt("failure count"))?,
        paused: row.paused,
        has_tokens: row.token_ciphertext.is_some(),
        token_expires_at: row.token_expires_at,
        scope: row.scope,
        earliest_data_time: row.earliest_data_time,
        latest_data_time: row.latest_data_time,
        last_sync_at: row.last_sync_at,
        next_sync_at: row.next_sync_at,
        fetched_through: row.fetched_through,
        fetched_from: row.fetched_from,
        failing_since: row.failing_since,
        records_skipped: u64::try_from(row.records_skipped)
            .map_err(|_| corrupt("skipped record count"))?,
        records_conflicting: u64::try_from(row.records_conflicting)
            .map_err(|_| corrupt("conflicting record count"))?,
        refresh_failures: u32::try_from(row.refresh_failures)
            .map_err(|_| corrupt("refresh failure count"))?,
        refresh_due_at: row.refresh_due_at,
        refresh_outcome_unknown_at: row.refresh_outcome_unknown_at,
        reread_at: row.reread_at,
    })
}

fn journal_to_domain(row: connection_event::Model) -> Result<JournalEntry> {
    Ok(JournalEntry {
        connection_id: row
            .connection_id
            .parse()
            .map_err(|_| StoreError::Corrupt("journal connection id".to_owned()))?,
        seq: row.seq,
        from: row.from_state.as_deref().map(parse_state).transpose()?,
        to: parse_state(&row.to_state)?,
        event: row.event,
        actor: row.actor,
        reason: row.reason,
        details: row.details,
        at: row.at,
    })
}
