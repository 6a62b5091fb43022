//! The fetch step: everything a connection's partner published since the last successful
//! transfer, in windows the partner allows, plus an overlap behind the cursor (records published
//! late, gaps backfilled later: dexcom-api-v3.md), mapped to the Tidepool model and stored
//! idempotently. Each window's records and the cursor advance commit in one transaction, so a
//! crash loses no progress and repeats no effect; a long backfill yields and resumes.

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use engine::{
    StoreError, failpoint,
    ids::ConnectionId,
    model::{Actor, Change, Connection, ErrorInfo},
    schedule::{SyncPolicy, backoff},
    secret::SecretString,
    state::Event,
    store::{Chunk, ChunkStats, SyncEnd, SyncLease},
};
use serde::Deserialize;

use crate::{
    RefreshOutcome, Workflows,
    adapters::FetchError,
    error::WorkflowError,
    mapping::{MappingContext, map_records},
};

/// Per-partner transfer settings (`[partners.<name>.transfer]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// How far back the first transfer of a new connection goes, in days. Default 30.
    pub backfill_days: u32,
    /// Each transfer re-reads this much behind the cursor, so records published late or
    /// backfilled after a gap are not missed; storage is idempotent. Default 14400 (4 h).
    pub overlap_secs: u64,
    /// A connection that keeps failing for this long goes to `failed`. Default 108000 (30 h,
    /// as Tidepool).
    pub failure_budget_secs: u64,
    /// First retry delay after a failed transfer; doubles per consecutive failure. Default 300.
    pub retry_base_secs: u64,
    /// Longest retry delay. Default 21600 (6 h).
    pub retry_cap_secs: u64,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            backfill_days: 30,
            overlap_secs: 4 * 3600,
            failure_budget_secs: 30 * 3600,
            retry_base_secs: 300,
            retry_cap_secs: 6 * 3600,
        }
    }
}

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
    fn add(&mut self, stats: ChunkStats, skipped: usize) {
        self.inserted += stats.inserted;
        self.updated += stats.updated;
        self.unchanged += stats.unchanged;
        self.skipped += skipped as u64;
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
        let Some(mut lease) = self
            .store
            .start_sync(id, version, settings.fetch_lease)
            .await?
        else {
            return Ok(FetchReport::Skipped);
        };
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

        let mut token = match self.usable_token(&mut lease).await? {
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
        let mut refreshed = false;
        let mut windows = 0;
        let mut totals = ChunkStatsReport::default();
        loop {
            let to = (from + data.max_window()).min(now);
            let last = to >= now;
            match data.fetch_window(&token, from, to).await {
                Ok(raw) => {
                    let mapped = map_records(&ctx, &raw);
                    drop(raw);
                    failpoints.hit(failpoint::FETCH_WINDOW_RECEIVED)?;
                    let skipped = mapped.skipped.len();
                    if skipped > 0 {
                        tracing::warn!(connection = %id, skipped, "records the mapping could not understand were skipped");
                    }
                    let chunk = Chunk {
                        records: mapped.records,
                        skipped: skipped as u64,
                    };
                    if last {
                        // The last window's commit also ends the run: one transaction.
                        let next_sync_at =
                            policy.next_sync(self.store.clock().now(), &mut rand::rng());
                        failpoints.hit(failpoint::FETCH_BEFORE_FINISH)?;
                        return match self
                            .store
                            .commit_last_chunk(&mut lease, chunk, to, next_sync_at)
                            .await
                        {
                            Ok((stats, _)) => {
                                totals.add(stats, skipped);
                                failpoints.hit(failpoint::FETCH_FINISHED)?;
                                Ok(FetchReport::Completed {
                                    windows: windows + 1,
                                    stats: totals,
                                })
                            }
                            Err(StoreError::LeaseLost) => Ok(FetchReport::LeaseLost),
                            Err(err) => Err(err.into()),
                        };
                    }
                    match self
                        .store
                        .commit_chunk(&mut lease, chunk, to, settings.fetch_lease)
                        .await
                    {
                        Ok(stats) => {
                            totals.add(stats, skipped);
                            failpoints.hit(failpoint::FETCH_WINDOW_COMMITTED)?;
                        }
                        Err(StoreError::LeaseLost) => return Ok(FetchReport::LeaseLost),
                        Err(err) => return Err(err.into()),
                    }
                    windows += 1;
                }
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
                return Ok(FetchReport::Yielded {
                    windows,
                    stats: totals,
                });
            }
        }
    }

    /// The access token, refreshed first when it is about to expire.
    async fn usable_token(
        &self,
        lease: &mut SyncLease,
    ) -> Result<Result<SecretString, FetchReport>, WorkflowError> {
        let soon = self.store.clock().now() + TimeDelta::seconds(60);
        if lease
            .connection
            .token_expires_at
            .is_some_and(|expires| expires <= soon)
        {
            return self.refresh_for_fetch(lease).await;
        }
        match &lease.tokens {
            Some(tokens) => Ok(Ok(tokens.access_token.clone())),
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
                // The refresh recorded the error and counted it; plan the retry.
                let policy = self.policy_of(&lease.connection);
                let delay = self.retry_delay(&lease.connection);
                let next = policy.after_delay(self.store.clock().now(), delay, &mut rand::rng());
                let error = lease
                    .connection
                    .last_error
                    .clone()
                    .unwrap_or_else(|| ErrorInfo::new(code.clone(), "token refresh failed"));
                self.store
                    .finish_sync(
                        lease,
                        SyncEnd::Failed {
                            next_sync_at: next,
                            error,
                            count_failure: false,
                        },
                    )
                    .await?;
                self.check_budget(&lease.connection).await?;
                Ok(Err(FetchReport::Failed { code }))
            }
            RefreshOutcome::Busy | RefreshOutcome::NotNeeded { .. } => {
                // Someone else is refreshing (or the connection left `active`): try again soon.
                let next = self.store.clock().now() + TimeDelta::seconds(30);
                let error =
                    ErrorInfo::new("refresh_in_progress", "a token refresh was in progress");
                self.store
                    .finish_sync(
                        lease,
                        SyncEnd::Failed {
                            next_sync_at: next,
                            error,
                            count_failure: false,
                        },
                    )
                    .await?;
                Ok(Err(FetchReport::Failed {
                    code: "refresh_in_progress".to_owned(),
                }))
            }
        }
    }

    async fn fetch_failed(
        &self,
        lease: &SyncLease,
        err: FetchError,
        policy: &SyncPolicy,
        transfer: &TransferConfig,
    ) -> Result<FetchReport, WorkflowError> {
        let partner = lease.connection.partner.to_string();
        let (error, count, delay) = match &err {
            FetchError::RateLimited { retry_after } => (
                ErrorInfo::new("rate_limited", "the partner asked us to slow down (429)"),
                false,
                *retry_after,
            ),
            FetchError::Configuration { .. } => {
                self.store
                    .raise_alert(
                        &partner,
                        Some(&lease.connection.id.to_string()),
                        "partner_configuration",
                        &format!("data API rejected our request: {err}"),
                    )
                    .await?;
                (
                    ErrorInfo::new(
                        "partner_configuration",
                        "the partner rejected our request; operators are alerted",
                    ),
                    false,
                    Duration::from_secs(transfer.retry_cap_secs.min(3600)),
                )
            }
            FetchError::Unauthorized => (
                ErrorInfo::new(
                    "unauthorized",
                    "the partner refused a freshly refreshed token",
                ),
                true,
                self.retry_delay(&lease.connection),
            ),
            FetchError::Transient { .. } => (
                ErrorInfo::new("partner_unavailable", err.to_string()),
                true,
                self.retry_delay(&lease.connection),
            ),
        };
        self.end_failed(lease, error, count, delay, policy).await
    }

    async fn end_failed(
        &self,
        lease: &SyncLease,
        error: ErrorInfo,
        count_failure: bool,
        delay: Duration,
        policy: &SyncPolicy,
    ) -> Result<FetchReport, WorkflowError> {
        let code = error.code.clone();
        let next = policy.after_delay(self.store.clock().now(), delay, &mut rand::rng());
        let connection = self
            .store
            .finish_sync(
                lease,
                SyncEnd::Failed {
                    next_sync_at: next,
                    error,
                    count_failure,
                },
            )
            .await?;
        if let Some(connection) = connection {
            self.check_budget(&connection).await?;
        }
        Ok(FetchReport::Failed { code })
    }

    /// `failed` once the current failure streak is older than the partner's budget.
    async fn check_budget(&self, connection: &Connection) -> Result<(), WorkflowError> {
        let connection = self.store.get(connection.id).await?;
        let Some(since) = connection.failing_since else {
            return Ok(());
        };
        let budget = self
            .partners
            .get(connection.partner.as_str())
            .map_or(30 * 3600, |p| p.config().transfer.failure_budget_secs);
        if self.store.clock().now() - since >= secs(budget) {
            let error = connection.last_error.clone().unwrap_or_else(|| {
                ErrorInfo::new("failure_budget_exhausted", "transfers kept failing")
            });
            self.fail_connection(connection.id, error).await?;
        }
        Ok(())
    }

    async fn fail_connection(
        &self,
        id: ConnectionId,
        error: ErrorInfo,
    ) -> Result<(), WorkflowError> {
        let change = Change::new(Event::Fail, Actor::system("fetch"))
            .reason("transfers kept failing beyond the partner's failure budget")
            .error(error);
        match self.store.apply(id, None, change).await {
            Ok(_) | Err(StoreError::InvalidTransition(_)) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    fn policy_of(&self, connection: &Connection) -> SyncPolicy {
        self.partners
            .get(connection.partner.as_str())
            .map(|p| p.sync_policy().clone())
            .unwrap_or_default()
    }

    /// Exponential backoff with jitter from the consecutive-failure count.
    fn retry_delay(&self, connection: &Connection) -> Duration {
        let transfer = self
            .partners
            .get(connection.partner.as_str())
            .map(|p| p.config().transfer.clone())
            .unwrap_or_default();
        backoff(
            connection.failure_count + 1,
            Duration::from_secs(transfer.retry_base_secs),
            Duration::from_secs(transfer.retry_cap_secs),
            &mut rand::rng(),
        )
    }
}
