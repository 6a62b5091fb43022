//! The transfer's storage: the types shared by its operations, and the lease protocol.
//!
//! Lease protocol (at most one transfer per connection at a time, across processes;
//! docs/transfers.md#leases):
//! 1. The dispatcher claims due connections (`claim.rs`): `sync_lease_until = now +
//!    dispatch_lease`, token cleared (`FOR UPDATE SKIP LOCKED` on PostgreSQL so dispatchers never
//!    block each other).
//! 2. The job's worker starts the transfer (`start.rs`) by swapping a fresh token in, only if the
//!    version is the job's, the state [may transfer](crate::state::State::may_transfer) and no
//!    token is set: a duplicate job finds the token taken.
//! 3. Every chunk commit (`commit.rs`) checks the token and extends the lease; the last chunk's
//!    commit (or, for a run that yields or fails, `finish.rs`) ends the run and releases it.
//!    A crash anywhere leaves a lease that expires, and the connection is claimed again: the
//!    repair bound is the lease length.
//!
//! The transfer path never bumps the connection's version and never writes `state`: those
//! belong to the transition table. It writes only its own columns (cursor, data times, lease,
//! schedule, the transfer failure streak and the skip counters), always guarded by its lease
//! token and the states that may transfer, and every counter by SQL arithmetic on the row being
//! written (`failure_count = failure_count + 1`), never from a snapshot read earlier: a
//! concurrent transition (a refresh, say) and a transfer can then never undo each other's writes
//! (docs/lifecycle.md#columns).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::{
    ids::{ConnectionId, UserId},
    model::{Connection, ErrorInfo, MappedRecord, TokenSet},
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
    pub(super) token: String,
    /// The run so far (docs/operations.md#step-runs): written when the run ends.
    pub run: super::runs::FetchRun,
}

/// A partner record that could not be stored, and why (never a value: health data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRecord {
    /// Stable across reads: the partner id when readable, else a hash of the record's bytes.
    pub key: String,
    /// The partner record kind (`egv`, `event`, `basal`, …).
    pub kind: String,
    pub partner_record_id: Option<String>,
    pub reason: String,
}

/// One window's mapped records and the records that could not be stored. Ids that come twice
/// are resolved (and those with different contents counted) when the store prepares it.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    pub records: Vec<MappedRecord>,
    pub skipped: Vec<SkippedRecord>,
    /// Where the window began: the earliest ever committed is the connection's
    /// `fetched_from` (docs/coverage.md#coverage). `None` leaves it as it is.
    pub window_start: Option<DateTime<Utc>>,
}

impl From<Vec<MappedRecord>> for Chunk {
    fn from(records: Vec<MappedRecord>) -> Self {
        Self {
            records,
            ..Self::default()
        }
    }
}

/// What a chunk commit wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkStats {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Skipped records seen for the first time (a bad record re-read is not counted again).
    pub newly_skipped: u64,
}

/// How a transfer ended without completing (a completed run ends with its last chunk).
#[derive(Debug, Clone)]
pub enum SyncEnd {
    /// More to do (a long backfill yields): due again at `next_sync_at`, nothing counted.
    Yielded { next_sync_at: DateTime<Utc> },
    /// Failed: error recorded; with `count_failure`, one more failure in the streak (started
    /// now if none runs); retry at `next_sync_at`.
    Failed {
        next_sync_at: DateTime<Utc>,
        error: ErrorInfo,
        count_failure: bool,
    },
}

/// What a chunk commit does besides storing records.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tail {
    /// More chunks follow: extend the lease by this much; `reread`: this chunk completes a
    /// re-read of the partner's late-change horizon.
    Extend { lease: Duration, reread: bool },
    /// The last chunk: the run completes, next run at `next_sync_at`; `reread` when the run
    /// re-read the partner's late-change horizon.
    Finish {
        next_sync_at: DateTime<Utc>,
        reread: bool,
        /// The run so far, when its `connection.data_synced` event is queued in this commit
        /// (docs/notifications.md#webhooks): this chunk's counts are added to it.
        synced: Option<super::outbox::DataSynced>,
    },
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

/// A lease or interval as a time delta; configuration bounds these long before overflow.
pub(super) fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::minutes(5))
}
