//! Partner-side revocations still owed (docs/oauth.md#revocation). The refresh token lives here,
//! sealed, only until the partner confirms or the retry limit is reached; the outcome is recorded
//! by a transition (`RevocationFinished`), so the row and its journal entry commit together.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{Result, Store, StoreError, effects::revocation_aad, entities::partner_revocation};
use crate::{
    ids::ConnectionId,
    model::{Actor, Change, RevocationFinish},
    secret::SecretString,
    state::Event,
};

/// A revocation to attempt now.
#[derive(Debug)]
pub struct DueRevocation {
    pub id: String,
    pub connection_id: ConnectionId,
    pub partner: String,
    pub attempts: u32,
    pub refresh_token: SecretString,
}

/// A revocation as operators see it (no token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationStatus {
    pub id: String,
    pub connection_id: String,
    pub partner: String,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
}

impl Store {
    /// Revocations whose next attempt is due, oldest first.
    pub async fn due_revocations(&self, limit: u64) -> Result<Vec<DueRevocation>> {
        let now = self.clock.now();
        let rows = partner_revocation::Entity::find()
            .filter(partner_revocation::Column::CompletedAt.is_null())
            .filter(partner_revocation::Column::NextAttemptAt.lte(now))
            .order_by_asc(partner_revocation::Column::NextAttemptAt)
            .limit(limit)
            .all(&self.db)
            .await?;
        self.unseal_revocations(rows)
    }

    fn unseal_revocations(
        &self,
        rows: Vec<partner_revocation::Model>,
    ) -> Result<Vec<DueRevocation>> {
        let mut due = Vec::with_capacity(rows.len());
        for row in rows {
            let (Some(blob), Some(key_id)) = (&row.token_ciphertext, &row.key_id) else {
                continue;
            };
            let token = self.keyring.open(key_id, blob, &revocation_aad(&row.id))?;
            due.push(DueRevocation {
                connection_id: row
                    .connection_id
                    .parse()
                    .map_err(|_| StoreError::Corrupt("revocation connection id".to_owned()))?,
                id: row.id,
                partner: row.partner,
                attempts: u32::try_from(row.attempts).unwrap_or(0),
                refresh_token: SecretString::new(
                    String::from_utf8(token)
                        .map_err(|_| StoreError::Corrupt("refresh token is not UTF-8".into()))?,
                ),
            });
        }
        Ok(due)
    }

    /// Claims due revocations for the job queue: their next attempt moves `lease` ahead (so a
    /// lost job is simply due again then) and their connections are returned, once each.
    pub async fn claim_due_revocations(
        &self,
        limit: u64,
        lease: std::time::Duration,
    ) -> Result<Vec<ConnectionId>> {
        self.claim_connections(
            |lock| {
                format!(
                    "UPDATE partner_revocations SET next_attempt_at = $1 \
                     WHERE id IN (SELECT id FROM partner_revocations \
                        WHERE completed_at IS NULL AND next_attempt_at <= $2 \
                        ORDER BY next_attempt_at LIMIT $3 {lock}) \
                     RETURNING connection_id"
                )
            },
            limit,
            lease,
        )
        .await
    }

    /// Runs a claim `UPDATE … RETURNING connection_id` with parameters `$1` (now + `lease`),
    /// `$2` (now) and `$3` (`limit`); `sql` is given the row lock its subquery takes
    /// (`FOR UPDATE SKIP LOCKED` on PostgreSQL, nothing on SQLite's single writer). Returns the
    /// claimed connections, once each (the outbox's claim too).
    pub(super) async fn claim_connections(
        &self,
        sql: impl FnOnce(&str) -> String,
        limit: u64,
        lease: std::time::Duration,
    ) -> Result<Vec<ConnectionId>> {
        use sea_orm::{ConnectionTrait, DbBackend, Statement};
        let now = self.clock.now();
        let until =
            now + chrono::TimeDelta::from_std(lease).unwrap_or(chrono::TimeDelta::minutes(2));
        let lock = if self.db.get_database_backend() == DbBackend::Postgres {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = sql(lock);
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                sql,
                [
                    until.into(),
                    now.into(),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        let mut ids = std::collections::BTreeSet::new();
        for row in rows {
            let id: String = row.try_get("", "connection_id")?;
            ids.insert(
                id.parse::<ConnectionId>()
                    .map_err(|_| StoreError::Corrupt(format!("connection id {id:?}")))?,
            );
        }
        Ok(ids.into_iter().collect())
    }

    /// The revocations of a connection still owed to the partner (claimed or not).
    pub async fn open_revocations(&self, id: ConnectionId) -> Result<Vec<DueRevocation>> {
        let rows = partner_revocation::Entity::find()
            .filter(partner_revocation::Column::ConnectionId.eq(id.to_string()))
            .filter(partner_revocation::Column::CompletedAt.is_null())
            .order_by_asc(partner_revocation::Column::CreatedAt)
            .all(&self.db)
            .await?;
        self.unseal_revocations(rows)
    }

    /// All revocations of a connection (for operators and tests).
    pub async fn revocations(&self, id: ConnectionId) -> Result<Vec<RevocationStatus>> {
        Ok(partner_revocation::Entity::find()
            .filter(partner_revocation::Column::ConnectionId.eq(id.to_string()))
            .order_by_asc(partner_revocation::Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| RevocationStatus {
                id: row.id,
                connection_id: row.connection_id,
                partner: row.partner,
                attempts: u32::try_from(row.attempts).unwrap_or(0),
                next_attempt_at: row.next_attempt_at,
                last_error: row.last_error,
                completed_at: row.completed_at,
                outcome: row.outcome,
            })
            .collect())
    }

    /// The partner confirmed (or the limit was reached): the token is deleted for good and the
    /// outcome journaled, in one transaction. Finishing twice is a no-op.
    pub async fn finish_revocation(
        &self,
        revocation: &DueRevocation,
        confirmed: bool,
        error: Option<&str>,
    ) -> Result<()> {
        let attempts = revocation.attempts + 1;
        let finish = RevocationFinish {
            revocation_id: revocation.id.clone(),
            confirmed,
            attempts,
            error: error.map(str::to_owned),
        };
        let change = Change::new(
            Event::RevocationFinished { finish },
            Actor::system("revoker"),
        )
        .details(serde_json::json!({ "attempts": attempts, "error": error }));
        match self.apply(revocation.connection_id, None, change).await {
            Ok(_) | Err(StoreError::AlreadyDone) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// A failed attempt: try again at `next_attempt_at`.
    pub async fn retry_revocation(
        &self,
        revocation: &DueRevocation,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<()> {
        partner_revocation::Entity::update_many()
            .set(partner_revocation::ActiveModel {
                attempts: Set(i32::try_from(revocation.attempts + 1).unwrap_or(i32::MAX)),
                next_attempt_at: Set(next_attempt_at),
                last_error: Set(Some(crate::text::storable(error))),
                ..Default::default()
            })
            .filter(partner_revocation::Column::Id.eq(revocation.id.as_str()))
            .filter(partner_revocation::Column::CompletedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
