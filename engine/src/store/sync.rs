//! The transfer's storage: claiming due connections, the per-transfer lease, committing a
//! chunk of records with its cursor advance in one transaction, finishing with the next run.
//!
//! Lease protocol (at most one transfer per connection at a time, across processes):
//! 1. The dispatcher claims due connections: `sync_lease_until = now + dispatch_lease`, token
//!    cleared (`FOR UPDATE SKIP LOCKED` on PostgreSQL so dispatchers never block each other).
//! 2. The job's worker starts the transfer by swapping a fresh token in, only if the version is
//!    the job's, the state is active and no token is set: a duplicate job finds the token taken.
//! 3. Every chunk commit checks the token and extends the lease; the finish releases it.
//!    A crash anywhere leaves a lease that expires, and the connection is claimed again: the
//!    repair bound is the lease length.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait,
    sea_query::{Expr, ExprTrait as _, OnConflict},
};
use sha2::{Digest, Sha256};

use super::{
    Result, Store, StoreError,
    entities::{connection, data_record},
};
use crate::{
    failpoint,
    ids::{ConnectionId, UserId},
    model::{Connection, ErrorInfo, MappedRecord, StoredRecord, TokenSet},
    state::State,
};

/// A connection claimed by a dispatcher, to be handed to a worker as a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: ConnectionId,
    pub version: i64,
}

/// A worker's hold on one connection's transfer.
#[derive(Debug, Clone)]
pub struct SyncLease {
    pub connection: Connection,
    /// The tokens as of the start (read in the same statement that took the lease).
    pub tokens: Option<TokenSet>,
    token: String,
}

/// One window's mapped records, and how many partner records the mapping had to skip.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    pub records: Vec<MappedRecord>,
    pub skipped: u64,
}

impl From<Vec<MappedRecord>> for Chunk {
    fn from(records: Vec<MappedRecord>) -> Self {
        Self {
            records,
            skipped: 0,
        }
    }
}

/// What a chunk commit wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkStats {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// How a transfer ended.
#[derive(Debug, Clone)]
pub enum SyncEnd {
    /// Success: failure streak cleared, next run planned.
    Completed { next_sync_at: DateTime<Utc> },
    /// More to do (a long backfill yields): due again at `next_sync_at`, nothing counted.
    Yielded { next_sync_at: DateTime<Utc> },
    /// Failed: error recorded, streak started if none, retry at `next_sync_at`.
    Failed {
        next_sync_at: DateTime<Utc>,
        error: ErrorInfo,
        count_failure: bool,
    },
}

fn lease_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::minutes(5))
}

impl Store {
    /// Claims up to `limit` due, active, unpaused connections whose lease is free or expired.
    pub async fn claim_due(&self, limit: u64, dispatch_lease: Duration) -> Result<Vec<Claimed>> {
        let now = self.clock.now();
        let until = now + lease_delta(dispatch_lease);
        let backend = self.db.get_database_backend();
        let lock = if backend == DbBackend::Postgres {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE connections SET sync_lease_until = $1, sync_lease_token = NULL \
             WHERE id IN (SELECT id FROM connections \
                WHERE state = 'active' AND paused = $2 AND next_sync_at <= $3 \
                AND (sync_lease_until IS NULL OR sync_lease_until < $3) \
                ORDER BY next_sync_at LIMIT $4 {lock}) \
             RETURNING id, version"
        );
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [
                    until.into(),
                    false.into(),
                    now.into(),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        rows.into_iter()
            .map(|row| {
                let id: String = row.try_get("", "id")?;
                let version: i64 = row.try_get("", "version")?;
                Ok(Claimed {
                    id: id
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("connection id {id:?}")))?,
                    version,
                })
            })
            .collect()
    }

    /// Starts a claimed transfer. `None`: the job is stale (version moved, no longer active,
    /// claim expired) or another worker already started it — do nothing.
    pub async fn start_sync(
        &self,
        id: ConnectionId,
        version: i64,
        lease: Duration,
    ) -> Result<Option<SyncLease>> {
        let now = self.clock.now();
        let token = uuid::Uuid::new_v4().to_string();
        // One round trip: take the lease and read the row (with its sealed tokens) back.
        let rows = connection::Entity::update_many()
            .set(connection::ActiveModel {
                sync_lease_token: Set(Some(token.clone())),
                sync_lease_until: Set(Some(now + lease_delta(lease))),
                ..Default::default()
            })
            .filter(connection::Column::Id.eq(id.to_string()))
            .filter(connection::Column::Version.eq(version))
            .filter(connection::Column::State.eq(State::Active.as_str()))
            .filter(connection::Column::SyncLeaseToken.is_null())
            .filter(connection::Column::SyncLeaseUntil.gt(now))
            .exec_with_returning(&self.db)
            .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let tokens = self.decrypt_tokens(&row)?;
        Ok(Some(SyncLease {
            connection: super::connections::to_domain(row)?,
            tokens,
            token,
        }))
    }

    /// Re-reads the leased connection and its tokens (after an inline refresh changed them).
    pub async fn reload_lease(&self, lease: &mut SyncLease) -> Result<()> {
        let row = connection::Entity::find_by_id(lease.connection.id.to_string())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        lease.tokens = self.decrypt_tokens(&row)?;
        lease.connection = super::connections::to_domain(row)?;
        Ok(())
    }

    /// Stores a chunk of records and advances the cursor to `fetched_through`, in one
    /// transaction, extending the lease. Fails with `LeaseLost` (nothing written) when the
    /// lease is no longer ours or the connection is no longer active.
    pub async fn commit_chunk(
        &self,
        lease: &mut SyncLease,
        chunk: Chunk,
        fetched_through: DateTime<Utc>,
        extend: Duration,
    ) -> Result<ChunkStats> {
        let (store, mut owned) = (self.clone(), lease.clone());
        let (owned, stats) = super::connections::detached(async move {
            let stats = store
                .commit_chunk_now(&mut owned, chunk, fetched_through, extend)
                .await;
            Ok((owned, stats))
        })
        .await?;
        *lease = owned;
        stats
    }

    async fn commit_chunk_now(
        &self,
        lease: &mut SyncLease,
        Chunk { records, skipped }: Chunk,
        fetched_through: DateTime<Utc>,
        extend: Duration,
    ) -> Result<ChunkStats> {
        let now = self.clock.now();
        let id = lease.connection.id.to_string();
        let txn = self.db.begin().await?;
        let mut cursor = connection::ActiveModel {
            fetched_through: Set(Some(fetched_through)),
            sync_lease_until: Set(Some(now + lease_delta(extend))),
            ..Default::default()
        };
        let newest = records.iter().filter(|r| !r.retired).map(|r| r.time).max();
        let oldest = records.iter().filter(|r| !r.retired).map(|r| r.time).min();
        if let Some(newest) = newest
            && lease.connection.latest_data_time.is_none_or(|t| newest > t)
        {
            cursor.latest_data_time = Set(Some(newest));
        }
        if let Some(oldest) = oldest
            && lease
                .connection
                .earliest_data_time
                .is_none_or(|t| oldest < t)
        {
            cursor.earliest_data_time = Set(Some(oldest));
        }
        // The lease check is the first write: it takes the row (and on SQLite the database)
        // lock, so the records below are written only by the lease holder.
        let mut held = connection::Entity::update_many().set(cursor);
        if skipped > 0 {
            held = held.col_expr(
                connection::Column::RecordsSkipped,
                Expr::col(connection::Column::RecordsSkipped)
                    .add(i64::try_from(skipped).unwrap_or(i64::MAX)),
            );
        }
        let held = held
            .filter(connection::Column::Id.eq(id.as_str()))
            .filter(connection::Column::SyncLeaseToken.eq(lease.token.as_str()))
            .filter(connection::Column::State.eq(State::Active.as_str()))
            .exec(&txn)
            .await?;
        if held.rows_affected != 1 {
            txn.rollback().await?;
            return Err(StoreError::LeaseLost);
        }
        self.failpoints.hit(failpoint::COMMIT_CURSOR_WRITTEN)?;
        let stats =
            upsert_records(&txn, &id, lease.connection.user_id.as_str(), records, now).await?;
        self.failpoints.hit(failpoint::COMMIT_RECORDS_WRITTEN)?;
        txn.commit().await?;
        lease.connection.fetched_through = Some(fetched_through);
        lease.connection.records_skipped += skipped;
        if let Some(newest) = newest {
            lease.connection.latest_data_time = Some(
                lease
                    .connection
                    .latest_data_time
                    .map_or(newest, |t| Ord::max(t, newest)),
            );
        }
        if let Some(oldest) = oldest {
            lease.connection.earliest_data_time = Some(
                lease
                    .connection
                    .earliest_data_time
                    .map_or(oldest, |t| Ord::min(t, oldest)),
            );
        }
        Ok(stats)
    }

    /// Ends a transfer and releases the lease. Returns the connection as it now is (`None` if
    /// the lease had been lost meanwhile, e.g. the user disconnected).
    pub async fn finish_sync(&self, lease: &SyncLease, end: SyncEnd) -> Result<Option<Connection>> {
        let now = self.clock.now();
        let mut update = connection::ActiveModel {
            sync_lease_token: Set(None),
            sync_lease_until: Set(None),
            ..Default::default()
        };
        match &end {
            SyncEnd::Completed { next_sync_at } => {
                update.next_sync_at = Set(Some(*next_sync_at));
                update.last_sync_at = Set(Some(now));
                update.failure_count = Set(0);
                update.failing_since = Set(None);
                update.last_error_code = Set(None);
                update.last_error = Set(None);
            }
            SyncEnd::Yielded { next_sync_at } => {
                update.next_sync_at = Set(Some(*next_sync_at));
                update.last_sync_at = Set(Some(now));
            }
            SyncEnd::Failed {
                next_sync_at,
                error,
                count_failure,
            } => {
                update.next_sync_at = Set(Some(*next_sync_at));
                update.last_error_code = Set(Some(error.code.clone()));
                update.last_error = Set(Some(error.message.clone()));
                if *count_failure {
                    update.failure_count =
                        Set(i32::try_from(lease.connection.failure_count + 1).unwrap_or(i32::MAX));
                    if lease.connection.failing_since.is_none() {
                        update.failing_since = Set(Some(now));
                    }
                }
            }
        }
        let rows = connection::Entity::update_many()
            .set(update)
            .filter(connection::Column::Id.eq(lease.connection.id.to_string()))
            .filter(connection::Column::SyncLeaseToken.eq(lease.token.as_str()))
            .exec_with_returning(&self.db)
            .await?;
        rows.into_iter()
            .next()
            .map(super::connections::to_domain)
            .transpose()
    }

    /// A user asks for a sync now: due at once unless one was requested within `min_interval`
    /// (then `Err(retry_at)`). Only active connections can sync.
    pub async fn request_sync(
        &self,
        id: ConnectionId,
        min_interval: Duration,
    ) -> Result<std::result::Result<Connection, DateTime<Utc>>> {
        let now = self.clock.now();
        let connection = self.get(id).await?;
        if connection.state != State::Active {
            return Err(StoreError::InvalidTransition(
                crate::state::InvalidTransition {
                    from: Some(connection.state),
                    event: crate::state::Event::Note,
                },
            ));
        }
        let earliest = now - lease_delta(min_interval);
        let result = connection::Entity::update_many()
            .set(connection::ActiveModel {
                sync_requested_at: Set(Some(now)),
                next_sync_at: Set(Some(now)),
                ..Default::default()
            })
            .filter(connection::Column::Id.eq(id.to_string()))
            .filter(
                sea_orm::sea_query::Condition::any()
                    .add(connection::Column::SyncRequestedAt.is_null())
                    .add(connection::Column::SyncRequestedAt.lte(earliest)),
            )
            .exec(&self.db)
            .await?;
        if result.rows_affected != 1 {
            let row = connection::Entity::find_by_id(id.to_string())
                .one(&self.db)
                .await?
                .ok_or(StoreError::NotFound)?;
            let last = row.sync_requested_at.unwrap_or(now);
            return Ok(Err(last + lease_delta(min_interval)));
        }
        Ok(Ok(self.get(id).await?))
    }

    /// Stored records of a user in the Tidepool model, oldest first, keyset-paged by
    /// (time, connection, partner record id) after `after`.
    pub async fn records(&self, query: &RecordQuery) -> Result<Vec<StoredRecord>> {
        let mut select = data_record::Entity::find()
            .filter(data_record::Column::UserId.eq(query.user.as_str()))
            .filter(data_record::Column::Retired.eq(false));
        if let Some(t) = &query.datum_type {
            select = select.filter(data_record::Column::DatumType.eq(t.as_str()));
        }
        if let Some(start) = query.start {
            select = select.filter(data_record::Column::Time.gte(start));
        }
        if let Some(end) = query.end {
            select = select.filter(data_record::Column::Time.lt(end));
        }
        if let Some((time, connection_id, record_id)) = &query.after {
            use sea_orm::sea_query::Condition;
            select = select.filter(
                Condition::any()
                    .add(data_record::Column::Time.gt(*time))
                    .add(
                        Condition::all()
                            .add(data_record::Column::Time.eq(*time))
                            .add(
                                Condition::any()
                                    .add(
                                        data_record::Column::ConnectionId
                                            .gt(connection_id.as_str()),
                                    )
                                    .add(
                                        Condition::all()
                                            .add(
                                                data_record::Column::ConnectionId
                                                    .eq(connection_id.as_str()),
                                            )
                                            .add(
                                                data_record::Column::PartnerRecordId
                                                    .gt(record_id.as_str()),
                                            ),
                                    ),
                            ),
                    ),
            );
        }
        Ok(select
            .order_by_asc(data_record::Column::Time)
            .order_by_asc(data_record::Column::ConnectionId)
            .order_by_asc(data_record::Column::PartnerRecordId)
            .limit(query.limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| StoredRecord {
                connection_id: row.connection_id,
                partner_record_id: row.partner_record_id,
                datum_type: row.datum_type,
                time: row.time,
                retired: row.retired,
                datum: row.datum,
            })
            .collect())
    }

    /// All partner record ids stored for a connection, including retired ones (tests, ops).
    pub async fn record_ids(&self, id: ConnectionId, include_retired: bool) -> Result<Vec<String>> {
        let mut select = data_record::Entity::find()
            .filter(data_record::Column::ConnectionId.eq(id.to_string()));
        if !include_retired {
            select = select.filter(data_record::Column::Retired.eq(false));
        }
        Ok(select
            .order_by_asc(data_record::Column::PartnerRecordId)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| r.partner_record_id)
            .collect())
    }
}

/// A query over a user's stored data.
#[derive(Debug, Clone)]
pub struct RecordQuery {
    pub user: UserId,
    pub datum_type: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// Keyset cursor: the last (time, connection id, partner record id) of the previous page.
    pub after: Option<(DateTime<Utc>, String, String)>,
    pub limit: u64,
}

fn datum_hash(record: &MappedRecord) -> String {
    let mut hasher = Sha256::new();
    hasher.update(record.datum.to_string().as_bytes());
    hasher.update([u8::from(record.retired)]);
    hex::encode(hasher.finalize())
}

/// Inserts new records, updates changed ones (partner corrections, deletions), leaves
/// unchanged ones alone, and counts each.
async fn upsert_records(
    txn: &DatabaseTransaction,
    connection_id: &str,
    user_id: &str,
    records: Vec<MappedRecord>,
    now: DateTime<Utc>,
) -> Result<ChunkStats> {
    let mut stats = ChunkStats::default();
    // The same partner record twice in one chunk (overlapping windows): the last one wins.
    let mut unique: std::collections::BTreeMap<String, MappedRecord> = Default::default();
    for record in records {
        unique.insert(record.partner_record_id.clone(), record);
    }
    let mut rest: Vec<MappedRecord> = unique.into_values().collect();
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(500));
        let chunk = std::mem::replace(&mut rest, tail);
        let ids: Vec<&str> = chunk.iter().map(|r| r.partner_record_id.as_str()).collect();
        let existing: std::collections::HashMap<String, String> = data_record::Entity::find()
            .select_only()
            .column(data_record::Column::PartnerRecordId)
            .column(data_record::Column::DatumHash)
            .filter(data_record::Column::ConnectionId.eq(connection_id))
            .filter(data_record::Column::PartnerRecordId.is_in(ids))
            .into_tuple::<(String, String)>()
            .all(txn)
            .await?
            .into_iter()
            .collect();
        let mut inserts = Vec::new();
        for record in chunk {
            let hash = datum_hash(&record);
            match existing.get(&record.partner_record_id) {
                None => inserts.push(data_record::ActiveModel {
                    connection_id: Set(connection_id.to_owned()),
                    partner_record_id: Set(record.partner_record_id),
                    user_id: Set(user_id.to_owned()),
                    datum_type: Set(record.datum_type),
                    time: Set(record.time),
                    datum: Set(record.datum),
                    datum_hash: Set(hash),
                    retired: Set(record.retired),
                    created_at: Set(now),
                    updated_at: Set(now),
                }),
                Some(stored) if *stored == hash => stats.unchanged += 1,
                Some(_) => {
                    data_record::Entity::update_many()
                        .set(data_record::ActiveModel {
                            datum_type: Set(record.datum_type),
                            time: Set(record.time),
                            datum: Set(record.datum),
                            datum_hash: Set(hash),
                            retired: Set(record.retired),
                            updated_at: Set(now),
                            ..Default::default()
                        })
                        .filter(data_record::Column::ConnectionId.eq(connection_id))
                        .filter(
                            data_record::Column::PartnerRecordId
                                .eq(record.partner_record_id.as_str()),
                        )
                        .exec(txn)
                        .await?;
                    stats.updated += 1;
                }
            }
        }
        if !inserts.is_empty() {
            let count = inserts.len() as u64;
            data_record::Entity::insert_many(inserts)
                .on_conflict(
                    OnConflict::columns([
                        data_record::Column::ConnectionId,
                        data_record::Column::PartnerRecordId,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
            stats.inserted += count;
        }
    }
    Ok(stats)
}
