//! The transfer's storage: claiming due connections, the per-transfer lease, committing a
//! chunk of records with its cursor advance in one transaction, finishing with the next run.
//!
//! Lease protocol (at most one transfer per connection at a time, across processes):
//! 1. The dispatcher claims due connections: `sync_lease_until = now + dispatch_lease`, token
//!    cleared (`FOR UPDATE SKIP LOCKED` on PostgreSQL so dispatchers never block each other).
//! 2. The job's worker starts the transfer by swapping a fresh token in, only if the version is
//!    the job's, the state is active and no token is set: a duplicate job finds the token taken.
//! 3. Every chunk commit checks the token and extends the lease; the last chunk's commit (or,
//!    for a run that yields or fails, a separate finish) ends the run and releases it.
//!    A crash anywhere leaves a lease that expires, and the connection is claimed again: the
//!    repair bound is the lease length.
//!
//! Starts and chunk commits of concurrent transfers are group-committed (`group.rs`): one
//! statement starts a group of transfers, one transaction commits a group of chunks. Each
//! transfer's lease is still checked on its own row, and one whose lease was lost writes
//! nothing, whatever the rest of its group does.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
    sea_query::{Expr, ExprTrait as _, OnConflict},
};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::{
    Result, Store, StoreError,
    entities::{connection, data_record},
    group::GroupCommit,
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
    ///
    /// Concurrent starts share one `UPDATE … RETURNING` (group commit, `group.rs`).
    pub async fn start_sync(
        &self,
        id: ConnectionId,
        version: i64,
        lease: Duration,
    ) -> Result<Option<SyncLease>> {
        let (reply, answer) = oneshot::channel();
        let request = StartRequest {
            id: id.to_string(),
            version,
            lease,
            reply,
        };
        let store = self.clone();
        let started = self
            .groups
            .starts
            .submit(request, answer, move |group| {
                store.clone().start_group(group)
            })
            .await
            .ok_or_else(group_failed)??;
        let Some((row, token)) = started else {
            return Ok(None);
        };
        let tokens = self.decrypt_tokens(&row)?;
        Ok(Some(SyncLease {
            connection: super::connections::to_domain(row)?,
            tokens,
            token,
        }))
    }

    /// One statement per lease length (in practice one): takes the lease of every requested
    /// connection that is still claimable at the requested version, and reads the rows back.
    /// Two requests for one connection (a duplicated job) match one row: one of them wins.
    async fn start_group(self, group: Vec<StartRequest>) {
        let now = self.clock.now();
        let mut by_lease: BTreeMap<Duration, Vec<StartRequest>> = BTreeMap::new();
        for request in group {
            by_lease.entry(request.lease).or_default().push(request);
        }
        for (lease, requests) in by_lease {
            let until = now + lease_delta(lease);
            match self.start_rows(&requests, until, now).await {
                Ok(answers) => {
                    for (r, answer) in requests.into_iter().zip(answers) {
                        let _ = r.reply.send(Ok(answer));
                    }
                }
                // A multi-row statement can deadlock with another multi-row write over the
                // same rows (PostgreSQL aborts one of them); a single-row one cannot.
                Err(err) if requests.len() > 1 => {
                    tracing::warn!(error = %err, size = requests.len(), "group start failed; starting its transfers one by one");
                    for r in requests {
                        let answer = self
                            .start_rows(std::slice::from_ref(&r), until, now)
                            .await
                            .map(|mut answers| answers.pop().flatten());
                        let _ = r.reply.send(answer.map_err(StoreError::from));
                    }
                }
                Err(err) => {
                    for r in requests {
                        let _ = r
                            .reply
                            .send(Err(StoreError::Db(DbErr::Custom(err.to_string()))));
                    }
                }
            }
        }
    }

    /// One statement taking the leases of `requests` under a fresh token: for each request,
    /// its row and the token, or `None` (stale, or started by someone else).
    async fn start_rows(
        &self,
        requests: &[StartRequest],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> std::result::Result<Vec<Option<(connection::Model, String)>>, DbErr> {
        let token = uuid::Uuid::new_v4().to_string();
        let rows = match self.backend() {
            super::Backend::Postgres => {
                let wanted: Vec<StartRow<'_>> = requests
                    .iter()
                    .map(|r| StartRow {
                        id: &r.id,
                        version: r.version,
                    })
                    .collect();
                let wanted = serde_json::to_string(&wanted)
                    .map_err(|e| DbErr::Custom(format!("start rows: {e}")))?;
                connection::Entity::find()
                    .from_raw_sql(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        PG_START,
                        [
                            token.clone().into(),
                            until.into(),
                            wanted.into(),
                            now.into(),
                        ],
                    ))
                    .all(&self.db)
                    .await?
            }
            super::Backend::Sqlite => {
                let mut wanted = Condition::any();
                for r in requests {
                    wanted = wanted.add(
                        Condition::all()
                            .add(connection::Column::Id.eq(r.id.as_str()))
                            .add(connection::Column::Version.eq(r.version)),
                    );
                }
                connection::Entity::update_many()
                    .set(connection::ActiveModel {
                        sync_lease_token: Set(Some(token.clone())),
                        sync_lease_until: Set(Some(until)),
                        ..Default::default()
                    })
                    .filter(wanted)
                    .filter(connection::Column::State.eq(State::Active.as_str()))
                    .filter(connection::Column::SyncLeaseToken.is_null())
                    .filter(connection::Column::SyncLeaseUntil.gt(now))
                    .exec_with_returning(&self.db)
                    .await?
            }
        };
        let mut rows: HashMap<String, connection::Model> =
            rows.into_iter().map(|row| (row.id.clone(), row)).collect();
        // Two requests for one connection (a duplicated job): the row goes to the first.
        Ok(requests
            .iter()
            .map(|r| rows.remove(&r.id).map(|row| (row, token.clone())))
            .collect())
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
        self.commit(lease, chunk, fetched_through, Tail::Extend(extend))
            .await
            .map(|(stats, _)| stats)
    }

    /// The last chunk of a transfer: stores it, advances the cursor and ends the transfer as
    /// completed ([`SyncEnd::Completed`]: streak cleared, next run planned, lease released),
    /// all in one transaction. Returns the connection as it now is. `LeaseLost`: nothing
    /// written.
    pub async fn commit_last_chunk(
        &self,
        lease: &mut SyncLease,
        chunk: Chunk,
        fetched_through: DateTime<Utc>,
        next_sync_at: DateTime<Utc>,
    ) -> Result<(ChunkStats, Connection)> {
        let (stats, row) = self
            .commit(lease, chunk, fetched_through, Tail::Finish(next_sync_at))
            .await?;
        let row = row.ok_or_else(|| StoreError::Corrupt("finished row not returned".into()))?;
        Ok((stats, super::connections::to_domain(row)?))
    }

    /// Prepares the chunk here (on the caller's task: serialising and hashing run in parallel
    /// across transfers) and commits it with whatever other transfers are committing now
    /// (group commit, `group.rs`).
    async fn commit(
        &self,
        lease: &mut SyncLease,
        Chunk { records, skipped }: Chunk,
        fetched_through: DateTime<Utc>,
        tail: Tail,
    ) -> Result<(ChunkStats, Option<connection::Model>)> {
        let newest = records.iter().filter(|r| !r.retired).map(|r| r.time).max();
        let oldest = records.iter().filter(|r| !r.retired).map(|r| r.time).min();
        let (reply, answer) = oneshot::channel();
        let request = CommitRequest {
            id: lease.connection.id.to_string(),
            user_id: lease.connection.user_id.to_string(),
            token: lease.token.clone(),
            records: prepare(records)?,
            skipped,
            fetched_through,
            newest: newest.filter(|n| lease.connection.latest_data_time.is_none_or(|t| *n > t)),
            oldest: oldest.filter(|o| lease.connection.earliest_data_time.is_none_or(|t| *o < t)),
            tail,
            reply,
        };
        let store = self.clone();
        let committed = self
            .groups
            .commits
            .submit(request, answer, move |group| {
                store.clone().commit_group(group)
            })
            .await
            .ok_or_else(group_failed)??;
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
        Ok(committed)
    }

    /// Commits a group in one transaction and answers each request. If the transaction fails
    /// (not a failpoint: that is a crash), each request is retried alone, so one connection's
    /// bad write cannot fail the others'.
    async fn commit_group(self, mut group: Vec<CommitRequest>) {
        // Row locks in one order across groups.
        group.sort_by(|a, b| a.id.cmp(&b.id));
        match self.commit_txn(&group).await {
            Ok(results) => {
                for (request, result) in group.into_iter().zip(results) {
                    let _ = request.reply.send(result);
                }
            }
            Err(err) if group.len() > 1 && !matches!(err, StoreError::Injected(_)) => {
                tracing::warn!(error = %err, size = group.len(), "group commit failed; committing its transfers one by one");
                for request in group {
                    let result = match self.commit_txn(std::slice::from_ref(&request)).await {
                        Ok(mut results) => results.pop().unwrap_or(Err(StoreError::LeaseLost)),
                        Err(err) => Err(err),
                    };
                    let _ = request.reply.send(result);
                }
            }
            Err(err) => {
                // The first request gets the error itself (a failpoint stays a failpoint); the
                // others, who shared the rolled-back transaction, its message.
                let message = err.to_string();
                let mut err = Some(err);
                for request in group {
                    let err = err
                        .take()
                        .unwrap_or_else(|| StoreError::Db(DbErr::Custom(message.clone())));
                    let _ = request.reply.send(Err(err));
                }
            }
        }
    }

    /// One transaction: each request's lease check and cursor advance (and, for a last chunk,
    /// the run's end), then the records of those whose lease held. A request whose lease was
    /// lost writes nothing and gets `LeaseLost`.
    async fn commit_txn(
        &self,
        group: &[CommitRequest],
    ) -> Result<Vec<Result<(ChunkStats, Option<connection::Model>)>>> {
        let now = self.clock.now();
        let txn = self.db.begin().await?;
        // `None`: lease lost; `Some(row)`: held (the row when the run ended with it).
        // The lease checks are the first writes: they take the rows (and on SQLite the
        // database) lock, so the records below are written only by lease holders.
        let held = match self.backend() {
            super::Backend::Postgres => advance_cursors_pg(&txn, group, now).await?,
            super::Backend::Sqlite => advance_cursors(&txn, group, now).await?,
        };
        self.failpoints.hit(failpoint::COMMIT_CURSOR_WRITTEN)?;
        let writes: Vec<Writes<'_>> = group
            .iter()
            .zip(&held)
            .map(|(r, held)| Writes {
                connection_id: &r.id,
                user_id: &r.user_id,
                records: if held.is_some() { &r.records } else { &[] },
            })
            .collect();
        let stats = match self.backend() {
            super::Backend::Postgres => upsert_records_pg(&txn, &writes, now).await?,
            super::Backend::Sqlite => upsert_records(&txn, &writes, now).await?,
        };
        self.failpoints.hit(failpoint::COMMIT_RECORDS_WRITTEN)?;
        txn.commit().await?;
        Ok(held
            .into_iter()
            .zip(stats)
            .map(|(held, stats)| held.map(|row| (stats, row)).ok_or(StoreError::LeaseLost))
            .collect())
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
            SyncEnd::Completed { next_sync_at } => completed(&mut update, *next_sync_at, now),
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

/// Each request's lease check and cursor advance, one statement per request (SQLite: one
/// writer, statements are cheap in-process calls).
async fn advance_cursors(
    txn: &DatabaseTransaction,
    group: &[CommitRequest],
    now: DateTime<Utc>,
) -> Result<Vec<Option<Option<connection::Model>>>> {
    let mut held = Vec::with_capacity(group.len());
    for r in group {
        let mut update = connection::ActiveModel {
            fetched_through: Set(Some(r.fetched_through)),
            ..Default::default()
        };
        if let Some(newest) = r.newest {
            update.latest_data_time = Set(Some(newest));
        }
        if let Some(oldest) = r.oldest {
            update.earliest_data_time = Set(Some(oldest));
        }
        match r.tail {
            Tail::Extend(extend) => {
                update.sync_lease_until = Set(Some(now + lease_delta(extend)));
            }
            Tail::Finish(next_sync_at) => completed(&mut update, next_sync_at, now),
        }
        let mut held_by_us = connection::Entity::update_many().set(update);
        if r.skipped > 0 {
            held_by_us = held_by_us.col_expr(
                connection::Column::RecordsSkipped,
                Expr::col(connection::Column::RecordsSkipped)
                    .add(i64::try_from(r.skipped).unwrap_or(i64::MAX)),
            );
        }
        let held_by_us = held_by_us
            .filter(connection::Column::Id.eq(r.id.as_str()))
            .filter(connection::Column::SyncLeaseToken.eq(r.token.as_str()))
            .filter(connection::Column::State.eq(State::Active.as_str()));
        held.push(match r.tail {
            Tail::Extend(_) => {
                let result = held_by_us.exec(txn).await?;
                (result.rows_affected == 1).then_some(None)
            }
            Tail::Finish(_) => held_by_us
                .exec_with_returning(txn)
                .await?
                .into_iter()
                .next()
                .map(Some),
        });
    }
    Ok(held)
}

/// PostgreSQL: every request's lease check and cursor advance in one statement whose text
/// never changes (the group travels as one JSON parameter), so it is parsed and planned once
/// per database connection, not once per group size.
const PG_ADVANCE: &str = "UPDATE connections AS c SET
    fetched_through = v.through,
    latest_data_time = GREATEST(c.latest_data_time, v.newest),
    earliest_data_time = LEAST(c.earliest_data_time, v.oldest),
    records_skipped = c.records_skipped + v.skipped,
    sync_lease_until = CASE WHEN v.finish THEN NULL ELSE v.until END,
    sync_lease_token = CASE WHEN v.finish THEN NULL ELSE c.sync_lease_token END,
    next_sync_at = CASE WHEN v.finish THEN v.next ELSE c.next_sync_at END,
    last_sync_at = CASE WHEN v.finish THEN $2 ELSE c.last_sync_at END,
    failure_count = CASE WHEN v.finish THEN 0 ELSE c.failure_count END,
    failing_since = CASE WHEN v.finish THEN NULL ELSE c.failing_since END,
    last_error_code = CASE WHEN v.finish THEN NULL ELSE c.last_error_code END,
    last_error = CASE WHEN v.finish THEN NULL ELSE c.last_error END
  FROM json_to_recordset($1::json) AS v(id text, token text, through timestamptz,
    newest timestamptz, oldest timestamptz, skipped bigint, until timestamptz, finish boolean,
    next timestamptz)
  WHERE c.id = v.id AND c.sync_lease_token = v.token AND c.state = 'active'
  RETURNING c.*";

/// PostgreSQL: starts a group of transfers (see [`PG_ADVANCE`] for why JSON).
const PG_START: &str = "UPDATE connections AS c SET sync_lease_token = $1, sync_lease_until = $2
  FROM json_to_recordset($3::json) AS w(id text, version bigint)
  WHERE c.id = w.id AND c.version = w.version AND c.state = 'active'
    AND c.sync_lease_token IS NULL AND c.sync_lease_until > $4
  RETURNING c.*";

/// PostgreSQL: inserts new records and updates changed ones in one statement; unchanged ones
/// are neither written nor returned. `xmax = 0` tells an inserted row from an updated one.
const PG_UPSERT: &str = "INSERT INTO data_records (connection_id, partner_record_id, user_id,
    datum_type, time, datum, datum_hash, retired, created_at, updated_at)
  SELECT v.c, v.r, v.u, v.t, v.time, v.datum, v.h, v.retired, $2, $2
  FROM json_to_recordset($1::json) AS v(c text, r text, u text, t text, time timestamptz,
    datum json, h text, retired boolean)
  ON CONFLICT (connection_id, partner_record_id) DO UPDATE SET
    datum_type = excluded.datum_type, time = excluded.time, datum = excluded.datum,
    datum_hash = excluded.datum_hash, retired = excluded.retired,
    updated_at = excluded.updated_at
  WHERE data_records.datum_hash IS DISTINCT FROM excluded.datum_hash
  RETURNING connection_id, (xmax = 0) AS inserted";

/// PostgreSQL timestamps as JSON: microseconds, truncated (as sqlx binds them).
fn pg_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[derive(serde::Serialize)]
struct StartRow<'a> {
    id: &'a str,
    version: i64,
}

#[derive(serde::Serialize)]
struct AdvanceRow<'a> {
    id: &'a str,
    token: &'a str,
    through: String,
    newest: Option<String>,
    oldest: Option<String>,
    skipped: i64,
    until: Option<String>,
    finish: bool,
    next: Option<String>,
}

#[derive(serde::Serialize)]
struct RecordRow<'a> {
    c: &'a str,
    r: &'a str,
    u: &'a str,
    t: &'a str,
    time: String,
    datum: &'a serde_json::value::RawValue,
    h: &'a str,
    retired: bool,
}

fn json_param<T: serde::Serialize>(rows: &T) -> Result<sea_orm::Value> {
    serde_json::to_string(rows)
        .map(Into::into)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a statement's rows: {e}")))
}

async fn advance_cursors_pg(
    txn: &DatabaseTransaction,
    group: &[CommitRequest],
    now: DateTime<Utc>,
) -> Result<Vec<Option<Option<connection::Model>>>> {
    let rows: Vec<AdvanceRow<'_>> = group
        .iter()
        .map(|r| {
            let (until, finish, next) = match r.tail {
                Tail::Extend(extend) => (Some(pg_time(now + lease_delta(extend))), false, None),
                Tail::Finish(next) => (None, true, Some(pg_time(next))),
            };
            AdvanceRow {
                id: &r.id,
                token: &r.token,
                through: pg_time(r.fetched_through),
                newest: r.newest.map(pg_time),
                oldest: r.oldest.map(pg_time),
                skipped: i64::try_from(r.skipped).unwrap_or(i64::MAX),
                until,
                finish,
                next,
            }
        })
        .collect();
    let mut updated: HashMap<String, connection::Model> = connection::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(
            DbBackend::Postgres,
            PG_ADVANCE,
            [json_param(&rows)?, now.into()],
        ))
        .all(txn)
        .await?
        .into_iter()
        .map(|row| (row.id.clone(), row))
        .collect();
    Ok(group
        .iter()
        .map(|r| {
            let row = updated.remove(&r.id)?;
            Some(matches!(r.tail, Tail::Finish(_)).then_some(row))
        })
        .collect())
}

/// Rows per upsert statement on PostgreSQL (one JSON parameter; this bounds its size).
const PG_UPSERT_ROWS: usize = 5_000;

/// [`upsert_records`] for PostgreSQL: one statement per 5,000 records of the whole group.
async fn upsert_records_pg(
    txn: &DatabaseTransaction,
    writes: &[Writes<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<ChunkStats>> {
    let mut stats = vec![ChunkStats::default(); writes.len()];
    let index: HashMap<&str, usize> = writes
        .iter()
        .enumerate()
        .filter(|(_, w)| !w.records.is_empty())
        .map(|(i, w)| (w.connection_id, i))
        .collect();
    let rows: Vec<(&Writes<'_>, &Prepared)> = writes
        .iter()
        .flat_map(|w| w.records.iter().map(move |r| (w, r)))
        .collect();
    for slice in rows.chunks(PG_UPSERT_ROWS) {
        let encoded: Vec<RecordRow<'_>> = slice
            .iter()
            .map(|(w, r)| RecordRow {
                c: w.connection_id,
                r: &r.partner_record_id,
                u: w.user_id,
                t: &r.datum_type,
                time: pg_time(r.time),
                datum: &r.datum,
                h: &r.hash,
                retired: r.retired,
            })
            .collect();
        let written = txn
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                PG_UPSERT,
                [json_param(&encoded)?, now.into()],
            ))
            .await?;
        for row in written {
            let connection_id: String = row.try_get("", "connection_id")?;
            let inserted: bool = row.try_get("", "inserted")?;
            let Some(&i) = index.get(connection_id.as_str()) else {
                continue;
            };
            if inserted {
                stats[i].inserted += 1;
            } else {
                stats[i].updated += 1;
            }
        }
    }
    for (w, s) in writes.iter().zip(&mut stats) {
        s.unchanged = (w.records.len() as u64).saturating_sub(s.inserted + s.updated);
    }
    Ok(stats)
}

/// A transfer start waiting for its group.
pub(super) struct StartRequest {
    id: String,
    version: i64,
    lease: Duration,
    reply: oneshot::Sender<Result<Option<(connection::Model, String)>>>,
}

/// A chunk commit waiting for its group.
pub(super) struct CommitRequest {
    id: String,
    user_id: String,
    token: String,
    records: Vec<Prepared>,
    skipped: u64,
    fetched_through: DateTime<Utc>,
    /// The chunk's newest/oldest live record time, where it moves the connection's bounds.
    newest: Option<DateTime<Utc>>,
    oldest: Option<DateTime<Utc>>,
    tail: Tail,
    reply: oneshot::Sender<Result<(ChunkStats, Option<connection::Model>)>>,
}

/// What a chunk commit does to the lease.
#[derive(Debug, Clone, Copy)]
enum Tail {
    /// More chunks follow: extend the lease by this much.
    Extend(Duration),
    /// The last chunk: the run completes, next run at this time.
    Finish(DateTime<Utc>),
}

/// The group-commit queues of one store (shared by its clones).
pub(super) struct Groups {
    starts: GroupCommit<StartRequest>,
    commits: GroupCommit<CommitRequest>,
}

impl Groups {
    /// At most 64 transfers per group; two groups at a time on PostgreSQL (one builds while
    /// the other commits), one on SQLite (one writer).
    pub(super) fn new(backend: DbBackend) -> Self {
        let slots = if backend == DbBackend::Postgres { 2 } else { 1 };
        Self {
            starts: GroupCommit::new(slots, 64),
            commits: GroupCommit::new(slots, 64),
        }
    }
}

fn group_failed() -> StoreError {
    StoreError::Corrupt("the storage task running this commit failed".to_owned())
}

/// The columns a completed run writes: failure streak cleared, next run planned, lease
/// released, `last_sync_at` set.
fn completed(
    update: &mut connection::ActiveModel,
    next_sync_at: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    update.sync_lease_token = Set(None);
    update.sync_lease_until = Set(None);
    update.next_sync_at = Set(Some(next_sync_at));
    update.last_sync_at = Set(Some(now));
    update.failure_count = Set(0);
    update.failing_since = Set(None);
    update.last_error_code = Set(None);
    update.last_error = Set(None);
}

/// A mapped record ready to store: the datum serialised once, for both its hash and the row.
#[derive(Debug, Clone)]
struct Prepared {
    partner_record_id: String,
    datum_type: String,
    time: DateTime<Utc>,
    retired: bool,
    /// Serialised once here; embedded as is in PostgreSQL's JSON rows, bound as text on SQLite.
    datum: Box<serde_json::value::RawValue>,
    hash: String,
}

/// Deduplicates a chunk by partner record id (overlapping windows: the last one wins) and
/// serialises and hashes each datum.
fn prepare(records: Vec<MappedRecord>) -> Result<Vec<Prepared>> {
    let mut unique: BTreeMap<String, MappedRecord> = BTreeMap::new();
    for record in records {
        unique.insert(record.partner_record_id.clone(), record);
    }
    unique
        .into_values()
        .map(|record| {
            let datum = serde_json::value::to_raw_value(&record.datum)
                .map_err(|e| StoreError::Corrupt(format!("cannot serialise a datum: {e}")))?;
            let mut hasher = Sha256::new();
            hasher.update(datum.get().as_bytes());
            hasher.update([u8::from(record.retired)]);
            Ok(Prepared {
                partner_record_id: record.partner_record_id,
                datum_type: record.datum_type,
                time: record.time,
                retired: record.retired,
                datum,
                hash: hex::encode(hasher.finalize()),
            })
        })
        .collect()
}

/// One connection's records in a group commit.
struct Writes<'a> {
    connection_id: &'a str,
    user_id: &'a str,
    records: &'a [Prepared],
}

/// Rows per statement: 10 values per inserted row stays far below both backends' limits.
const UPSERT_ROWS: usize = 500;

/// Inserts new records, updates changed ones (partner corrections, deletions), leaves
/// unchanged ones alone, and counts each, per connection: one lookup and one insert per 500
/// records across the whole group (SQLite; PostgreSQL: [`upsert_records_pg`]).
async fn upsert_records(
    txn: &DatabaseTransaction,
    writes: &[Writes<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<ChunkStats>> {
    let mut stats = vec![ChunkStats::default(); writes.len()];
    let all: Vec<(usize, &Prepared)> = writes
        .iter()
        .enumerate()
        .flat_map(|(i, w)| w.records.iter().map(move |r| (i, r)))
        .collect();
    for slice in all.chunks(UPSERT_ROWS) {
        let mut lookup = Condition::any();
        let mut by_connection: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for (i, r) in slice {
            by_connection
                .entry(*i)
                .or_default()
                .push(r.partner_record_id.as_str());
        }
        for (i, ids) in by_connection {
            lookup = lookup.add(
                Condition::all()
                    .add(data_record::Column::ConnectionId.eq(writes[i].connection_id))
                    .add(data_record::Column::PartnerRecordId.is_in(ids)),
            );
        }
        let existing: HashMap<(String, String), String> = data_record::Entity::find()
            .select_only()
            .column(data_record::Column::ConnectionId)
            .column(data_record::Column::PartnerRecordId)
            .column(data_record::Column::DatumHash)
            .filter(lookup)
            .into_tuple::<(String, String, String)>()
            .all(txn)
            .await?
            .into_iter()
            .map(|(c, r, h)| ((c, r), h))
            .collect();
        let mut insert = sea_orm::sea_query::Query::insert();
        insert
            .into_table(data_record::Entity)
            .columns([
                data_record::Column::ConnectionId,
                data_record::Column::PartnerRecordId,
                data_record::Column::UserId,
                data_record::Column::DatumType,
                data_record::Column::Time,
                data_record::Column::Datum,
                data_record::Column::DatumHash,
                data_record::Column::Retired,
                data_record::Column::CreatedAt,
                data_record::Column::UpdatedAt,
            ])
            .on_conflict(
                OnConflict::columns([
                    data_record::Column::ConnectionId,
                    data_record::Column::PartnerRecordId,
                ])
                .do_nothing()
                .to_owned(),
            );
        let mut inserts = 0;
        for (i, r) in slice {
            let w = &writes[*i];
            let key = (w.connection_id.to_owned(), r.partner_record_id.clone());
            match existing.get(&key) {
                None => {
                    insert.values_panic([
                        Expr::val(w.connection_id),
                        Expr::val(r.partner_record_id.as_str()),
                        Expr::val(w.user_id),
                        Expr::val(r.datum_type.as_str()),
                        Expr::val(r.time),
                        Expr::val(r.datum.get()),
                        Expr::val(r.hash.as_str()),
                        Expr::val(r.retired),
                        Expr::val(now),
                        Expr::val(now),
                    ]);
                    inserts += 1;
                    stats[*i].inserted += 1;
                }
                Some(stored) if *stored == r.hash => stats[*i].unchanged += 1,
                Some(_) => {
                    data_record::Entity::update_many()
                        .col_expr(
                            data_record::Column::DatumType,
                            Expr::val(r.datum_type.as_str()),
                        )
                        .col_expr(data_record::Column::Time, Expr::val(r.time))
                        .col_expr(data_record::Column::Datum, Expr::val(r.datum.get()))
                        .col_expr(data_record::Column::DatumHash, Expr::val(r.hash.as_str()))
                        .col_expr(data_record::Column::Retired, Expr::val(r.retired))
                        .col_expr(data_record::Column::UpdatedAt, Expr::val(now))
                        .filter(data_record::Column::ConnectionId.eq(w.connection_id))
                        .filter(
                            data_record::Column::PartnerRecordId.eq(r.partner_record_id.as_str()),
                        )
                        .exec(txn)
                        .await?;
                    stats[*i].updated += 1;
                }
            }
        }
        if inserts > 0 {
            txn.execute(&insert).await?;
        }
    }
    Ok(stats)
}
