//! Committing a window: its records, its skipped records and the cursor advance in one
//! transaction that checks the lease and extends it; the last window's commit also ends the
//! run. Concurrent transfers' commits share one transaction (group commit, `group.rs`); each
//! transfer's lease is still checked on its own row, and one whose lease was lost writes
//! nothing, whatever the rest of its group does.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sea_orm::{DbBackend, DbErr, EntityTrait, TransactionTrait};
use tokio::sync::oneshot;

use super::{
    Result, Store, StoreError,
    connections::to_domain,
    entities::{connection, outbox},
    group::GroupCommit,
    outbox::DataSynced,
    runs::{FetchRun, StepRun, insert_runs, observed},
    start::StartRequest,
    transfer::{Chunk, ChunkStats, SkippedRecord, SyncLease, Tail},
    upsert::{Writes, prepare, record_skips, upsert_records},
};
use crate::{
    failpoint,
    ids::ConnectionId,
    model::{Connection, MappedRecord},
};

/// A chunk commit waiting for its group.
pub(super) struct CommitRequest {
    pub(super) id: String,
    user_id: String,
    pub(super) token: String,
    records: Vec<MappedRecord>,
    hashes: Vec<[u8; 32]>,
    skipped: Vec<SkippedRecord>,
    pub(super) conflicting: u64,
    /// `None`: the cursor stays (a re-read of older windows).
    pub(super) fetched_through: Option<DateTime<Utc>>,
    /// The window's start (`fetched_from` keeps the earliest).
    pub(super) window_start: Option<DateTime<Utc>>,
    /// The chunk's newest/oldest live record time.
    pub(super) newest: Option<DateTime<Utc>>,
    pub(super) oldest: Option<DateTime<Utc>>,
    pub(super) tail: Tail,
    /// An earlier window of this run moved the connection's newest data time.
    pub(super) moved: bool,
    /// The run so far and its connection, for a last window: its step run is written in this
    /// commit.
    run: Option<(ConnectionId, FetchRun)>,
    reply: oneshot::Sender<Result<(ChunkStats, Option<connection::Model>)>>,
}

/// The group-commit queues of one store (shared by its clones).
pub(super) struct Groups {
    pub(super) starts: GroupCommit<StartRequest>,
    pub(super) commits: GroupCommit<CommitRequest>,
    pub(super) stats: GroupCounters,
}

/// What group commit did, counted (tests prove grouping and the one-by-one fallback with it).
#[derive(Default)]
pub(super) struct GroupCounters {
    largest_start: AtomicUsize,
    largest_commit: AtomicUsize,
    start_fallbacks: AtomicUsize,
    commit_fallbacks: AtomicUsize,
}

impl GroupCounters {
    pub(super) fn started(&self, size: usize) {
        self.largest_start.fetch_max(size, Ordering::Relaxed);
    }

    pub(super) fn start_fell_back(&self) {
        self.start_fallbacks.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of [`GroupCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// The most transfers one start statement served.
    pub largest_start: usize,
    /// The most transfers one commit transaction served.
    pub largest_commit: usize,
    /// Groups whose statement failed and whose transfers were retried one by one.
    pub start_fallbacks: usize,
    pub commit_fallbacks: usize,
    /// Starts and commits queued right now, waiting for a slot.
    pub queued: usize,
    /// Groups of starts and commits running right now.
    pub running: usize,
    /// Groups of each kind that may run at once (PostgreSQL 2, SQLite 1).
    pub slots: usize,
}

impl Groups {
    /// At most 64 transfers per group; two groups at a time on PostgreSQL (one builds while
    /// the other commits), one on SQLite (one writer).
    pub(super) fn new(backend: DbBackend) -> Self {
        let slots = if backend == DbBackend::Postgres { 2 } else { 1 };
        Self {
            starts: GroupCommit::new(slots, 64),
            commits: GroupCommit::new(slots, 64),
            stats: GroupCounters::default(),
        }
    }
}

impl Store {
    /// What group commit did so far in this store (and its clones).
    pub fn group_stats(&self) -> GroupStats {
        let c = &self.groups.stats;
        GroupStats {
            largest_start: c.largest_start.load(Ordering::Relaxed),
            largest_commit: c.largest_commit.load(Ordering::Relaxed),
            start_fallbacks: c.start_fallbacks.load(Ordering::Relaxed),
            commit_fallbacks: c.commit_fallbacks.load(Ordering::Relaxed),
            queued: self.groups.starts.queued() + self.groups.commits.queued(),
            running: self.groups.starts.running() + self.groups.commits.running(),
            slots: self.groups.commits.slots(),
        }
    }
}

pub(super) fn group_failed() -> StoreError {
    StoreError::Corrupt("the storage task running this commit failed".to_owned())
}

impl Store {
    /// Stores a chunk of records and advances the cursor to `fetched_through` (`None`: the
    /// cursor stays, for a re-read of older windows), in one transaction, extending the lease.
    /// Fails with `LeaseLost` (nothing written) when the lease is no longer ours or the
    /// connection can no longer transfer.
    pub async fn commit_chunk(
        &self,
        lease: &mut SyncLease,
        chunk: Chunk,
        fetched_through: Option<DateTime<Utc>>,
        extend: Duration,
    ) -> Result<ChunkStats> {
        self.commit_chunk_marking(lease, chunk, fetched_through, extend, false)
            .await
    }

    /// [`Store::commit_chunk`] that, with `reread`, also records that the partner's late-change
    /// horizon has now been read (`reread_at`), in the same transaction.
    pub async fn commit_chunk_marking(
        &self,
        lease: &mut SyncLease,
        chunk: Chunk,
        fetched_through: Option<DateTime<Utc>>,
        extend: Duration,
        reread: bool,
    ) -> Result<ChunkStats> {
        let tail = Tail::Extend {
            lease: extend,
            reread,
        };
        self.commit(lease, chunk, fetched_through, tail)
            .await
            .map(|(stats, _)| stats)
    }

    /// The last chunk of a transfer: stores it, advances the cursor and ends the transfer as
    /// completed (streak cleared, next run planned, lease released; `reread`: the late-change
    /// horizon was re-read now), all in one transaction. Returns the connection as it now is.
    /// `LeaseLost`: nothing written.
    pub async fn commit_last_chunk(
        &self,
        lease: &mut SyncLease,
        chunk: Chunk,
        fetched_through: DateTime<Utc>,
        next_sync_at: DateTime<Utc>,
        reread: bool,
    ) -> Result<(ChunkStats, Connection)> {
        self.commit_last_chunk_synced(lease, chunk, fetched_through, next_sync_at, reread, None)
            .await
    }

    /// [`Store::commit_last_chunk`] that also queues the run's `connection.data_synced` event
    /// in the same transaction (docs/notifications.md#webhooks): `synced` holds the run's data
    /// range and its counts before this chunk, whose counts are added. Nothing is queued when
    /// the run stored nothing new or no webhook endpoint is configured.
    pub async fn commit_last_chunk_synced(
        &self,
        lease: &mut SyncLease,
        chunk: Chunk,
        fetched_through: DateTime<Utc>,
        next_sync_at: DateTime<Utc>,
        reread: bool,
        synced: Option<DataSynced>,
    ) -> Result<(ChunkStats, Connection)> {
        let tail = Tail::Finish {
            next_sync_at,
            reread,
            synced,
        };
        let (stats, row) = self
            .commit(lease, chunk, Some(fetched_through), tail)
            .await?;
        let row = row.ok_or_else(|| StoreError::Corrupt("finished row not returned".into()))?;
        Ok((stats, to_domain(row)?))
    }

    /// Prepares the chunk here (on the caller's task: serialising and hashing run in parallel
    /// across transfers) and commits it with whatever other transfers are committing now.
    async fn commit(
        &self,
        lease: &mut SyncLease,
        chunk: Chunk,
        fetched_through: Option<DateTime<Utc>>,
        tail: Tail,
    ) -> Result<(ChunkStats, Option<connection::Model>)> {
        let live = || chunk.records.iter().filter(|r| !r.retired).map(|r| r.time);
        let (newest, oldest) = (live().max(), live().min());
        let (reply, answer) = oneshot::channel();
        let finishing = matches!(tail, Tail::Finish { .. });
        let mut records = chunk.records;
        let (hashes, repeated) = prepare(&mut records)?;
        let request = CommitRequest {
            id: lease.connection.id.to_string(),
            user_id: lease.connection.user_id.to_string(),
            token: lease.token.clone(),
            records,
            hashes,
            skipped: chunk.skipped,
            conflicting: repeated,
            fetched_through,
            window_start: chunk.window_start,
            newest,
            oldest,
            tail,
            moved: lease.connection.latest_data_time != lease.run.started_latest,
            run: finishing.then(|| (lease.connection.id, lease.run.clone())),
            reply,
        };
        let store = self.clone();
        let (stats, row) = self
            .groups
            .commits
            .submit(request, answer, move |group| {
                store.clone().commit_group(group)
            })
            .await
            .ok_or_else(group_failed)??;
        let row = row.ok_or_else(|| StoreError::Corrupt("committed row not returned".into()))?;
        // Keep the lease's view of the row and of its run current (the rest of the run reads
        // them).
        lease.connection = to_domain(row.clone())?;
        lease.run.counts.add_window(stats);
        Ok((stats, Some(row)))
    }

    /// Commits a group in one transaction and answers each request. If the transaction fails
    /// (not a failpoint: that is a crash), each request is retried alone, so one connection's
    /// bad write cannot fail the others'.
    async fn commit_group(self, mut group: Vec<CommitRequest>) {
        // Row locks in one order across groups.
        group.sort_by(|a, b| a.id.cmp(&b.id));
        self.groups
            .stats
            .largest_commit
            .fetch_max(group.len(), Ordering::Relaxed);
        match self.commit_txn(&group).await {
            Ok(results) => {
                for (request, result) in group.into_iter().zip(results) {
                    let _ = request.reply.send(result);
                }
            }
            Err(err) if group.len() > 1 && !matches!(err, StoreError::Injected(_)) => {
                tracing::warn!(error = %err, size = group.len(), "group commit failed; committing its transfers one by one");
                self.groups
                    .stats
                    .commit_fallbacks
                    .fetch_add(1, Ordering::Relaxed);
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

    /// One transaction: the lease checks and cursor advances (the first writes: they take the
    /// rows, and on SQLite the database, lock, so the records below are written only by lease
    /// holders), then the records and skipped records of those whose lease held.
    async fn commit_txn(
        &self,
        group: &[CommitRequest],
    ) -> Result<Vec<Result<(ChunkStats, Option<connection::Model>)>>> {
        let now = self.clock.now();
        let txn = self.db.begin().await?;
        let mut held = self.advance_cursors(&txn, group, now).await?;
        self.failpoints.hit(failpoint::COMMIT_CURSOR_WRITTEN)?;
        let writes: Vec<Writes<'_>> = group
            .iter()
            .map(|r| Writes {
                connection_id: &r.id,
                user_id: &r.user_id,
                records: if held.contains_key(&r.id) {
                    &r.records
                } else {
                    &[]
                },
                hashes: &r.hashes,
                skipped: if held.contains_key(&r.id) {
                    &r.skipped
                } else {
                    &[]
                },
            })
            .collect();
        let backend = self.db.get_database_backend();
        let mut stats = upsert_records(&txn, backend, &writes, now).await?;
        let newly_skipped = record_skips(&txn, backend, &writes, now).await?;
        for ((s, n), r) in stats.iter_mut().zip(newly_skipped).zip(group) {
            s.newly_skipped = n;
            if let Some(row) = held.get_mut(&r.id).filter(|_| n > 0) {
                row.records_skipped += i64::try_from(n).unwrap_or(i64::MAX);
            }
        }
        let events: Vec<outbox::ActiveModel> = group
            .iter()
            .zip(&stats)
            .filter_map(|(r, s)| match r.tail {
                Tail::Finish {
                    synced: Some(prior),
                    ..
                } => held.get(&r.id).map(|row| {
                    let synced = DataSynced {
                        inserted: prior.inserted + s.inserted,
                        updated: prior.updated + s.updated,
                        ..prior
                    };
                    self.data_synced_rows(&row.id, &row.user_id, &row.partner, &synced, now)
                }),
                _ => None,
            })
            .flatten()
            .collect();
        let queued = !events.is_empty();
        if queued {
            outbox::Entity::insert_many(events).exec(&txn).await?;
        }
        let runs = completed_runs(group, &stats, &held, now);
        insert_runs(&txn, self.recorded(&runs)).await?;
        self.failpoints.hit(failpoint::COMMIT_RECORDS_WRITTEN)?;
        txn.commit().await?;
        observed(&runs);
        if queued {
            self.deliveries_queued.notify_one();
        }
        Ok(group
            .iter()
            .zip(stats)
            .map(|(r, stats)| match held.remove(&r.id) {
                Some(row) => Ok((stats, Some(row))),
                None => Err(StoreError::LeaseLost),
            })
            .collect())
    }
}

/// The step runs of the group's last windows whose lease held: each run so far plus its last
/// window (docs/operations.md#step-runs).
fn completed_runs(
    group: &[CommitRequest],
    stats: &[ChunkStats],
    held: &std::collections::HashMap<String, connection::Model>,
    now: DateTime<Utc>,
) -> Vec<StepRun> {
    let mut runs = Vec::new();
    for (request, stats) in group.iter().zip(stats) {
        let Some((id, run)) = request
            .run
            .as_ref()
            .filter(|_| held.contains_key(&request.id))
        else {
            continue;
        };
        let mut run = run.clone();
        run.counts.add_window(*stats);
        runs.push(run.ended(*id, now, "completed", None));
    }
    runs
}
