//! The fetch step (docs/transfers.md): everything a connection's partner published since the
//! last successful transfer, in windows the partner allows, plus an overlap behind the cursor
//! (records published late, gaps backfilled later), mapped to the Tidepool model and stored
//! idempotently. Each window's records and the cursor advance commit in one transaction, so a
//! crash loses no progress and repeats no effect; a long backfill yields and resumes.
//!
//! # Layout
//! - `mod.rs`: the run: windows, commits, the inline refresh.
//! - `config.rs`: [`TransferConfig`], the per-partner settings.
//! - `batch.rs`: one window's records as they arrive: mapped, checked, deduplicated.
//! - `plausible.rs`: which record times are plausible.
//! - `failure.rs`: failures, backoff, operator alerts, the failure budget.
//! - `preview.rs`: a re-fetch's dry run: a range fetched and compared, nothing committed.

mod batch;
mod config;
mod failure;
mod plausible;
mod preview;

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    StoreError, failpoint,
    ids::ConnectionId,
    model::{Actor, Connection, ErrorInfo},
    schedule::SyncPolicy,
    secret::SecretString,
    store::{ChunkStats, SyncEnd, SyncLease},
};

use self::{batch::WindowBatch, plausible::Plausible};
pub use self::{
    config::{RereadConfig, TransferConfig},
    preview::{PreviewRefused, RefetchPreview},
};
use crate::{
    RefreshOutcome, Workflows, adapters::FetchError, error::WorkflowError, mapping::MappingContext,
};

/// What one run of the fetch step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchReport {
    /// Stale or duplicate job: someone else has (or had) this transfer.
    Skipped,
    /// All caught up; next run planned.
    Completed {
        windows: u32,
        stats: ChunkStatsReport,
    },
    /// A long transfer yielded after `windows` windows; due again at once.
    Yielded {
        windows: u32,
        stats: ChunkStatsReport,
    },
    /// The transfer failed; retry planned (or the connection failed/was revoked).
    Failed { code: String },
    /// The connection stopped being ours mid-way (disconnected, lease reclaimed).
    LeaseLost,
}

/// Counters summed over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkStatsReport {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: u64,
}

impl ChunkStatsReport {
    fn add(&mut self, stats: ChunkStats) {
        self.inserted += stats.inserted;
        self.updated += stats.updated;
        self.unchanged += stats.unchanged;
        self.skipped += stats.newly_skipped;
    }
}

fn secs(s: u64) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 2_000))
}

impl Workflows {
    /// Runs the fetch step for a job "fetch connection `id` at version `version`".
    pub async fn run_fetch(
        &self,
        id: ConnectionId,
        version: i64,
    ) -> Result<FetchReport, WorkflowError> {
        let settings = &self.settings.transfer;
        let Some(lease) = self
            .store
            .start_sync(id, version, settings.fetch_lease)
            .await?
        else {
            return Ok(FetchReport::Skipped);
        };
        // The partner's answers are tallied on the lease, for the run's record. The run's
        // state machine is large: on the heap, not on the caller's stack.
        let tally = lease.run.statuses.clone();
        crate::runs::tallied(tally, Box::pin(self.fetch_leased(lease))).await
    }

    /// The run, once its lease is taken.
    async fn fetch_leased(&self, mut lease: SyncLease) -> Result<FetchReport, WorkflowError> {
        let settings = &self.settings.transfer;
        let id = lease.connection.id;
        let failpoints = self.store.failpoints();
        failpoints.hit(failpoint::FETCH_STARTED)?;
        let partner = lease.connection.partner.to_string();
        let (Some(client), Some(data)) =
            (self.partners.get(&partner), self.partners.data(&partner))
        else {
            let error = ErrorInfo::new("unknown_partner", "the partner is no longer configured");
            return self
                .end_failed(
                    &lease,
                    error,
                    false,
                    Duration::from_secs(3600),
                    &SyncPolicy::default(),
                )
                .await;
        };
        let policy = client.sync_policy().clone();
        let transfer = client.config().transfer.clone();
        let ctx = MappingContext {
            upload_id: format!("tributary-{}", lease.connection.id.as_uuid().simple()),
            partner: partner.clone(),
            origin_name: client.config().display_name.clone(),
        };

        let (mut token, mut refreshed) = match self.usable_token(&mut lease).await? {
            Ok(token) => token,
            Err(report) => return Ok(report),
        };
        let started = Instant::now();
        let now = self.store.clock().now();
        let backfill_start = now - TimeDelta::days(i64::from(transfer.backfill_days));
        let mut from = match lease.connection.fetched_through {
            Some(through) => (through - secs(transfer.overlap_secs)).min(now),
            None => backfill_start,
        };
        let horizon = transfer.reread_for(client.config().kind);
        let reread = horizon
            .clone()
            .filter(|r| reread_due(r, &lease.connection, now));
        // A backfill reads the whole horizon too: its first window records a re-read.
        let mut backfill_marks = horizon.is_some() && lease.connection.fetched_through.is_none();
        // Re-read windows first: older than the cursor's overlap, they never move the cursor.
        let mut rereads: VecDeque<(DateTime<Utc>, DateTime<Utc>)> = match &reread {
            Some(r) => windows_between(
                (now - secs(r.horizon_secs)).max(backfill_start),
                from,
                data.max_window(),
            ),
            None => VecDeque::new(),
        };
        let mut windows = 0;
        let mut totals = ChunkStatsReport::default();
        // The data time range this run covers, for its `connection.data_synced` event.
        let span_start = rereads.front().map_or(from, |window| window.0);
        loop {
            let (start, to, kinds) = match rereads.front() {
                Some(&(start, end)) => (start, end, reread.as_ref().map(|r| r.kinds.as_slice())),
                None => (from, (from + data.max_window()).min(now), None),
            };
            let advances = kinds.is_none();
            let last = advances && to >= now;
            let plausible = Plausible::new(start, to, self.store.clock().now(), &transfer);
            let mut batch = WindowBatch::new(id, &ctx, plausible);
            let fetched = data
                .fetch_window(&token, start, to, kinds, &mut |kind, item| {
                    batch.take(kind, item)
                })
                .await;
            // Held until the window is committed: its records are in memory until then.
            let _share = match fetched {
                Ok(share) => share,
                Err(FetchError::Unauthorized) if !refreshed => {
                    refreshed = true;
                    match self.refresh_for_fetch(&mut lease).await? {
                        Ok(new_token) => {
                            token = new_token;
                            continue;
                        }
                        Err(report) => return Ok(report),
                    }
                }
                Err(err) => return self.fetch_failed(&lease, err, &policy, &transfer).await,
            };
            failpoints.hit(failpoint::FETCH_WINDOW_RECEIVED)?;
            let chunk = batch.into_chunk(start);
            // The last re-read window, or a backfill's first window, records the re-read in
            // its own commit, so a run that yields later does not read the horizon again.
            let marks = std::mem::take(&mut backfill_marks) && advances
                || (!advances && rereads.len() == 1);
            let committed = if last {
                // The last window's commit also ends the run: one transaction.
                let next_sync_at = policy.next_sync(self.store.clock().now(), &mut rand::rng());
                failpoints.hit(failpoint::FETCH_BEFORE_FINISH)?;
                let synced = engine::store::DataSynced {
                    from: span_start,
                    through: to,
                    inserted: totals.inserted,
                    updated: totals.updated,
                };
                self.store
                    .commit_last_chunk_synced(
                        &mut lease,
                        chunk,
                        to,
                        next_sync_at,
                        marks,
                        Some(synced),
                    )
                    .await
                    .map(|(stats, _)| stats)
            } else {
                let cursor = advances.then_some(to);
                self.store
                    .commit_chunk_marking(&mut lease, chunk, cursor, settings.fetch_lease, marks)
                    .await
            };
            match committed {
                Ok(stats) => {
                    engine::metrics::records_stored(&partner, stats);
                    totals.add(stats);
                }
                Err(StoreError::LeaseLost) => return Ok(FetchReport::LeaseLost),
                Err(err @ StoreError::Injected(_)) => return Err(err.into()),
                Err(err) => return self.storage_failed(&lease, err, &policy).await,
            }
            windows += 1;
            if last {
                failpoints.hit(failpoint::FETCH_FINISHED)?;
                return Ok(FetchReport::Completed {
                    windows,
                    stats: totals,
                });
            }
            failpoints.hit(failpoint::FETCH_WINDOW_COMMITTED)?;
            if !advances {
                // Re-read windows are few (the horizon over the partner's window) and their
                // progress is not recorded until the last: never yield between them.
                rereads.pop_front();
                continue;
            }
            from = to;
            if started.elapsed() >= settings.max_run {
                // A long backfill yields: due again at once, behind whatever else is due.
                let next = self.store.clock().now();
                failpoints.hit(failpoint::FETCH_BEFORE_FINISH)?;
                self.store
                    .finish_sync(&lease, SyncEnd::Yielded { next_sync_at: next })
                    .await?;
                failpoints.hit(failpoint::FETCH_FINISHED)?;
                self.data_synced(&lease.connection, span_start, to, &totals)
                    .await;
                return Ok(FetchReport::Yielded {
                    windows,
                    stats: totals,
                });
            }
        }
    }

    /// A run that yields after storing new or changed records tells the webhook endpoints,
    /// once, after it has yielded (docs/notifications.md#webhooks): a crash before this loses
    /// the event, never the data. A completed run queues its event with its last commit.
    async fn data_synced(
        &self,
        connection: &engine::model::Connection,
        from: DateTime<Utc>,
        through: DateTime<Utc>,
        totals: &ChunkStatsReport,
    ) {
        let event = engine::store::DataSynced {
            from,
            through,
            inserted: totals.inserted,
            updated: totals.updated,
        };
        if let Err(err) = self.store.queue_data_synced(connection, &event).await {
            tracing::warn!(connection = %connection.id, error = %err, "queueing the data_synced event failed");
        }
    }

    /// The access token, refreshed first when it is about to expire; `true` when it was.
    async fn usable_token(
        &self,
        lease: &mut SyncLease,
    ) -> Result<Result<(SecretString, bool), FetchReport>, WorkflowError> {
        let soon = self.store.clock().now() + TimeDelta::seconds(60);
        if lease
            .connection
            .token_expires_at
            .is_some_and(|expires| expires <= soon)
        {
            return Ok(self
                .refresh_for_fetch(lease)
                .await?
                .map(|token| (token, true)));
        }
        match &lease.tokens {
            Some(tokens) => Ok(Ok((tokens.access_token.clone(), false))),
            None => {
                let error = ErrorInfo::new("no_tokens", "an active connection holds no tokens");
                self.fail_connection(lease.connection.id, error).await?;
                Ok(Err(FetchReport::Failed {
                    code: "no_tokens".to_owned(),
                }))
            }
        }
    }

    /// Refreshes inside a transfer (a 401, or an expiring token) and returns the new token.
    async fn refresh_for_fetch(
        &self,
        lease: &mut SyncLease,
    ) -> Result<Result<SecretString, FetchReport>, WorkflowError> {
        let outcome = self
            .refresh(lease.connection.id, Actor::system("fetch"))
            .await?;
        self.store.reload_lease(lease).await?;
        let policy = self.policy_of(&lease.connection);
        match outcome {
            RefreshOutcome::Refreshed { .. } => match &lease.tokens {
                Some(tokens) => Ok(Ok(tokens.access_token.clone())),
                None => Ok(Err(FetchReport::LeaseLost)),
            },
            // The refresh step already moved the connection to `revoked` and journaled why.
            RefreshOutcome::Revoked { .. } => Ok(Err(FetchReport::Failed {
                code: "invalid_grant".to_owned(),
            })),
            RefreshOutcome::Deferred { code, .. } => {
                // The refresh recorded its own failure; the transfer failed too (no data
                // could be fetched) and counts in the transfer streak, whose backoff and budget
                // are the transfer's own.
                let error = lease
                    .connection
                    .last_error
                    .clone()
                    .unwrap_or_else(|| ErrorInfo::new(code.clone(), "token refresh failed"));
                let delay = self.retry_delay(&lease.connection);
                self.end_failed(lease, error, true, delay, &policy).await?;
                Ok(Err(FetchReport::Failed { code }))
            }
            RefreshOutcome::Busy | RefreshOutcome::NotNeeded { .. } => {
                // Someone else is refreshing (or the connection left `active`): try again soon.
                let error =
                    ErrorInfo::new("refresh_in_progress", "a token refresh was in progress");
                self.end_failed(lease, error, false, Duration::from_secs(30), &policy)
                    .await?;
                Ok(Err(FetchReport::Failed {
                    code: "refresh_in_progress".to_owned(),
                }))
            }
        }
    }
}

/// Whether the late-change horizon is due: last read an interval ago, or never read by a
/// connection that has transferred before (a new connection's backfill reads it anyway).
fn reread_due(reread: &RereadConfig, connection: &Connection, now: DateTime<Utc>) -> bool {
    match connection.reread_at {
        Some(read) => now - read >= secs(reread.interval_secs),
        None => connection.fetched_through.is_some(),
    }
}

/// `[start, end)` cut into windows of at most `max`.
fn windows_between(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    max: TimeDelta,
) -> VecDeque<(DateTime<Utc>, DateTime<Utc>)> {
    let mut windows = VecDeque::new();
    let mut at = start;
    while at < end {
        let next = (at + max).min(end);
        windows.push_back((at, next));
        at = next;
    }
    windows
}
