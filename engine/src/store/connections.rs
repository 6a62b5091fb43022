//! Connections: creation/reconnect and compare-and-swap transitions. Each transition writes the
//! row, its journal entry and its storage effects (tokens, authorizations, owed revocations,
//! alerts) in one database transaction, so nothing is ever half-written.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use serde::{Deserialize, Serialize};

use super::{
    Result, Store, StoreError,
    entities::{
        connection, connection_event, oauth_authorization, operator_alert, partner_revocation,
    },
    is_unique_violation,
};
use crate::{
    ids::{ConnectionId, PartnerName, UserId},
    model::{Change, Connection, ErrorInfo, ErrorUpdate, FailureCount, JournalEntry, TokenSet},
    secret::SecretString,
    state::{Effect, Event, State, Transition, transition},
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
    pub transition: Transition,
}

/// The sealed plaintext of a token set. Short keys: it is never seen outside this module.
#[derive(Serialize, Deserialize)]
struct TokenPlain {
    a: String,
    r: Option<String>,
}

pub(super) fn token_aad(id: &str) -> Vec<u8> {
    format!("tokens:{id}").into_bytes()
}

pub(super) fn revocation_aad(id: &str) -> Vec<u8> {
    format!("revocation:{id}").into_bytes()
}

pub(super) fn verifier_aad(id: &str) -> Vec<u8> {
    format!("verifier:{id}").into_bytes()
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

    /// Active connections whose access token expires before `before` (due for a refresh);
    /// those carrying an error only when unchanged since `idle_since`, so a refresh that just
    /// failed is not retried at once (at most one attempt per idle period).
    pub async fn tokens_expiring_before(
        &self,
        before: DateTime<Utc>,
        idle_since: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<Connection>> {
        connection::Entity::find()
            .filter(connection::Column::TokenExpiresAt.lt(before))
            .filter(connection::Column::State.eq(State::Active.as_str()))
            .filter(
                sea_orm::sea_query::Condition::any()
                    .add(connection::Column::LastErrorCode.is_null())
                    .add(connection::Column::UpdatedAt.lt(idle_since)),
            )
            .order_by_asc(connection::Column::TokenExpiresAt)
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

        let transition = transition(None, change.event)?;
        let now = self.clock.now();
        let id = ConnectionId::new();
        let id_str = id.to_string();
        let mut row = connection::ActiveModel {
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
            failing_since: Set(None),
            sync_lease_until: Set(None),
            sync_lease_token: Set(None),
            sync_requested_at: Set(None),
            records_skipped: Set(0),
        };
        apply_error_fields(&mut row, &change.error, None);
        let txn = self.db.begin().await?;
        if let Err(err) = connection::Entity::insert(row).exec(&txn).await {
            return Err(if is_unique_violation(&err) {
                StoreError::AlreadyLive
            } else {
                err.into()
            });
        }
        self.write_effects(
            &txn,
            &id_str,
            partner.as_str(),
            None,
            &transition,
            &change,
            now,
        )
        .await?;
        insert_journal(&txn, &id_str, 1, &transition, &change, now).await?;
        txn.commit().await?;
        let connection = self.get(id).await?;
        Ok((
            Applied {
                connection,
                transition,
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
        if let Some(expected) = expected_version
            && expected != row.version
        {
            return Err(StoreError::Conflict {
                expected,
                actual: row.version,
            });
        }
        let from = parse_state(&row.state)?;
        let transition = transition(Some(from), change.event)?;
        let now = self.clock.now();
        let new_version = row.version + 1;

        let mut update = connection::ActiveModel {
            state: Set(transition.to.as_str().to_owned()),
            version: Set(new_version),
            updated_at: Set(now),
            ..Default::default()
        };
        if transition.to != from {
            update.state_changed_at = Set(now);
        }
        apply_error_fields(&mut update, &change.error, Some(&row));
        match change.failure_count {
            FailureCount::Keep => {}
            FailureCount::Reset => update.failure_count = Set(0),
            FailureCount::Increment => {
                update.failure_count = Set(row.failure_count.saturating_add(1))
            }
        }

        let txn = self.db.begin().await?;
        // The first statement writes, so SQLite takes the write lock (waiting up to the busy
        // timeout) instead of failing a read-to-write upgrade; PostgreSQL re-checks the
        // predicate after a concurrent commit. Either way exactly one writer wins.
        let result = connection::Entity::update_many()
            .set(update)
            .filter(connection::Column::Id.eq(row.id.as_str()))
            .filter(connection::Column::Version.eq(row.version))
            .exec(&txn)
            .await?;
        if result.rows_affected != 1 {
            txn.rollback().await?;
            let actual = connection::Entity::find_by_id(row.id.clone())
                .one(&self.db)
                .await?
                .map_or(row.version, |r| r.version);
            return Err(StoreError::Conflict {
                expected: row.version,
                actual,
            });
        }
        self.write_effects(
            &txn,
            &row.id,
            &row.partner,
            Some(&row),
            &transition,
            &change,
            now,
        )
        .await?;
        insert_journal(&txn, &row.id, new_version, &transition, &change, now).await?;
        txn.commit().await?;

        let id: ConnectionId = row
            .id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("bad connection id {:?}", row.id)))?;
        Ok(Applied {
            connection: self.get(id).await?,
            transition,
        })
    }

    /// Performs the storage effects of a transition inside its transaction.
    #[allow(clippy::too_many_arguments)]
    async fn write_effects(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
        partner: &str,
        before: Option<&connection::Model>,
        transition: &Transition,
        change: &Change,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let effects = &transition.effects;
        let event = transition.event.as_str();
        let mut update = connection::ActiveModel::default();
        let mut touched = false;

        if effects.contains(&Effect::InvalidateAuthorizations) {
            oauth_authorization::Entity::update_many()
                .set(oauth_authorization::ActiveModel {
                    consumed_at: Set(Some(now)),
                    ..Default::default()
                })
                .filter(oauth_authorization::Column::ConnectionId.eq(id))
                .filter(oauth_authorization::Column::ConsumedAt.is_null())
                .exec(txn)
                .await?;
        }
        if effects.contains(&Effect::IssueAuthorization) {
            let auth = change
                .authorization
                .as_ref()
                .ok_or(StoreError::MissingInput(event, "an authorization"))?;
            let sealed = self
                .keyring
                .seal(&verifier_aad(id), auth.pkce_verifier.expose().as_bytes());
            oauth_authorization::Entity::insert(oauth_authorization::ActiveModel {
                state_hash: Set(auth.state_hash.clone()),
                connection_id: Set(id.to_owned()),
                partner: Set(partner.to_owned()),
                verifier_ciphertext: Set(sealed.blob),
                key_id: Set(sealed.key_id),
                created_at: Set(now),
                expires_at: Set(auth.expires_at),
                consumed_at: Set(None),
            })
            .exec(txn)
            .await?;
        }
        if effects.contains(&Effect::RevokeAtPartner)
            && let Some(refresh) = before
                .map(|row| self.decrypt_tokens(row))
                .transpose()?
                .flatten()
                .and_then(|t| t.refresh_token)
        {
            let revocation_id = uuid::Uuid::now_v7().to_string();
            let sealed = self
                .keyring
                .seal(&revocation_aad(&revocation_id), refresh.expose().as_bytes());
            partner_revocation::Entity::insert(partner_revocation::ActiveModel {
                id: Set(revocation_id),
                connection_id: Set(id.to_owned()),
                partner: Set(partner.to_owned()),
                token_ciphertext: Set(Some(sealed.blob)),
                key_id: Set(Some(sealed.key_id)),
                attempts: Set(0),
                next_attempt_at: Set(now),
                last_error: Set(None),
                created_at: Set(now),
                completed_at: Set(None),
                outcome: Set(None),
            })
            .exec(txn)
            .await?;
        }
        if effects.contains(&Effect::DiscardTokens) {
            update.token_ciphertext = Set(None);
            update.token_key_id = Set(None);
            update.token_expires_at = Set(None);
            touched = true;
        }
        if effects.contains(&Effect::StoreTokens) {
            let tokens = change
                .tokens
                .as_ref()
                .ok_or(StoreError::MissingInput(event, "tokens"))?;
            let plain = serde_json::to_vec(&TokenPlain {
                a: tokens.access_token.expose().clone(),
                r: tokens.refresh_token.as_ref().map(|r| r.expose().clone()),
            })
            .expect("token JSON serializes");
            let sealed = self.keyring.seal(&token_aad(id), &plain);
            update.token_ciphertext = Set(Some(sealed.blob));
            update.token_key_id = Set(Some(sealed.key_id));
            update.token_expires_at = Set(tokens.expires_at);
            update.scope = Set(tokens.scope.clone());
            touched = true;
        }
        if effects.contains(&Effect::ScheduleFetch) {
            // Due at once: the first transfer after connecting starts within seconds.
            update.next_sync_at = Set(Some(now));
            touched = true;
        }
        if effects.contains(&Effect::CancelFetch) {
            update.next_sync_at = Set(None);
            update.failing_since = Set(None);
            // A transfer in flight loses its lease: its next write is refused.
            update.sync_lease_until = Set(None);
            update.sync_lease_token = Set(None);
            touched = true;
        }
        if effects.contains(&Effect::AlertOperators) {
            let (code, message) = match &change.error {
                ErrorUpdate::Set(e) => (e.code.clone(), e.message.clone()),
                _ => (event.to_owned(), change.reason.clone().unwrap_or_default()),
            };
            tracing::error!(connection = id, partner, code, "operator alert: {message}");
            operator_alert::Entity::insert(operator_alert::ActiveModel {
                id: Set(uuid::Uuid::now_v7().to_string()),
                partner: Set(partner.to_owned()),
                connection_id: Set(Some(id.to_owned())),
                code: Set(code),
                message: Set(message),
                created_at: Set(now),
            })
            .exec(txn)
            .await?;
        }
        if touched {
            connection::Entity::update_many()
                .set(update)
                .filter(connection::Column::Id.eq(id))
                .exec(txn)
                .await?;
        }
        Ok(())
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

fn apply_error_fields(
    update: &mut connection::ActiveModel,
    error: &ErrorUpdate,
    _before: Option<&connection::Model>,
) {
    match error {
        ErrorUpdate::Keep => {}
        ErrorUpdate::Clear => {
            update.last_error_code = Set(None);
            update.last_error = Set(None);
        }
        ErrorUpdate::Set(ErrorInfo { code, message }) => {
            update.last_error_code = Set(Some(code.clone()));
            update.last_error = Set(Some(message.clone()));
        }
    }
}

async fn insert_journal(
    txn: &DatabaseTransaction,
    id: &str,
    seq: i64,
    transition: &Transition,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<()> {
    connection_event::Entity::insert(connection_event::ActiveModel {
        connection_id: Set(id.to_owned()),
        seq: Set(seq),
        from_state: Set(transition.from.map(|s| s.as_str().to_owned())),
        to_state: Set(transition.to.as_str().to_owned()),
        event: Set(journal_event_name(change)),
        actor: Set(change.actor.as_str().to_owned()),
        reason: Set(change.reason.clone()),
        details: Set(change.details.clone()),
        at: Set(now),
    })
    .exec(txn)
    .await?;
    Ok(())
}

/// Notes carry their own name in `details.note` (e.g. `partner_revocation_confirmed`).
fn journal_event_name(change: &Change) -> String {
    if change.event == Event::Note
        && let Some(note) = change.details.get("note").and_then(|n| n.as_str())
    {
        return note.to_owned();
    }
    change.event.as_str().to_owned()
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
        failing_since: row.failing_since,
        records_skipped: u64::try_from(row.records_skipped)
            .map_err(|_| corrupt("skipped record count"))?,
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
