//! Running steps as jobs: a dispatcher claims due connections from our tables (the durable
//! timers) and hands each to the job queue as "fetch C at version V"; workers run the step.
//! Because the timer is a column written in the transition's own transaction and a claim is a
//! lease that expires, nothing is lost between commit and enqueue, nor when a worker dies: the
//! connection is claimed again once its lease runs out. The dispatcher is the reconciler.

use std::time::Duration;

use engine::{
    ids::ConnectionId,
    jobs::{JobQueue, Step, StepJob, WorkerHandle},
};
use tokio::{sync::watch, task::JoinHandle};

use crate::{WorkflowError, Workflows, deliver::CONNECTIONS_PER_JOB, fetch::FetchReport};

/// How often finished jobs are purged, and how long they are kept. Our tables hold the truth
/// and the step history; a finished apalis row only slows apalis down: its acknowledgement
/// joins every row its worker ever locked, and the dispatcher's count of pending jobs scans
/// the rows that no partial index covers. Measured at ~1,000 cycles/s on PostgreSQL with a
/// 5-minute retention purged every minute, those two statements took ~40 % of a core; with
/// this they cost little (BENCHMARKS.md).
const JOB_PURGE_INTERVAL: Duration = Duration::from_secs(2);

/// After a transition queued a message, the dispatcher claims due deliveries at most this
/// often: a busy outbox (an event per transfer) is claimed and pushed in groups, one claim and
/// one job per many connections, instead of one per commit (docs/notifications.md#at-least-once).
const DELIVERY_COALESCE: Duration = Duration::from_millis(200);
const JOB_RETENTION: Duration = Duration::from_secs(1);
/// Every this many purges (10 s), the job table is vacuumed (`JobQueue::vacuum`).
const JOB_VACUUM_EVERY: u64 = 5;

/// The background side of a process: dispatcher, step workers (fetch, refresh, revoke,
/// deliver), housekeeping.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    workers: WorkerHandle,
}

impl Workers {
    /// Starts the fetch workers, the maintenance loop, job purging and (with `dispatch`) the
    /// dispatcher on `queue`. Tests that drive transfers by hand turn `dispatch` off.
    pub fn start(workflows: Workflows, queue: JobQueue, dispatch: bool) -> Self {
        let (stop, stopped) = watch::channel(false);
        let handler = {
            let workflows = workflows.clone();
            move |job: StepJob| {
                let workflows = workflows.clone();
                async move { workflows.run_step(job).await }
            }
        };
        let workers = queue.start_workers(
            &[Step::Fetch, Step::Refresh, Step::Revoke, Step::Deliver],
            handler,
        );
        let mut tasks = Vec::new();
        {
            let workflows = workflows.clone().with_fetch_dispatch(dispatch);
            let queue = queue.clone();
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                workflows
                    .dispatcher_loop(&queue, async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
            }));
        }
        {
            let workflows = workflows.clone();
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                workflows
                    .maintenance_loop(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
            }));
        }
        {
            let queue = queue.clone();
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0u64.. {
                    if let Err(err) = queue.purge_finished(JOB_RETENTION).await {
                        tracing::warn!(error = %err, "purging finished jobs failed");
                    }
                    if round % JOB_VACUUM_EVERY == JOB_VACUUM_EVERY - 1
                        && let Err(err) = queue.vacuum().await
                    {
                        tracing::warn!(error = %err, "vacuuming the job table failed");
                    }
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(JOB_PURGE_INTERVAL) => {}
                    }
                }
            }));
        }
        Self {
            stop,
            tasks,
            workers,
        }
    }

    /// Stops dispatching, lets in-flight steps finish (bounded), stops the loops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.workers.shutdown().await;
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

impl Workflows {
    /// Runs one job. Errors are logged; retries are planned in our tables, never by the queue.
    pub async fn run_step(&self, job: StepJob) -> Result<(), String> {
        let id: ConnectionId = job
            .connection_id
            .parse()
            .map_err(|_| format!("job names a bad connection id {:?}", job.connection_id))?;
        match job.step {
            Step::Fetch => match self.run_fetch(id, job.version).await {
                Ok(report) => {
                    match &report {
                        FetchReport::Completed { stats, .. }
                        | FetchReport::Yielded { stats, .. } => {
                            tracing::info!(connection = %id, inserted = stats.inserted, updated = stats.updated, skipped = stats.skipped, "fetch done")
                        }
                        FetchReport::Failed { code } => {
                            tracing::warn!(connection = %id, code, "fetch failed")
                        }
                        FetchReport::Skipped | FetchReport::LeaseLost => {}
                    }
                    Ok(())
                }
                Err(err) => Err(err.to_string()),
            },
            Step::Refresh => self
                .run_refresh_step(id, job.version)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Step::Revoke => self
                .run_revoke_step(id)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Step::Deliver => {
                let mut ids = vec![id];
                for more in &job.more {
                    ids.push(
                        more.parse()
                            .map_err(|_| format!("job names a bad connection id {more:?}"))?,
                    );
                }
                self.run_deliver_steps(&ids)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// A user (or an operator) asks for a transfer now: due at once unless one was asked within
    /// `transfer.sync_request_interval` (then `Err(retry_at)`). The API writes through here,
    /// never straight into the store.
    pub async fn request_sync(
        &self,
        id: ConnectionId,
    ) -> Result<Result<engine::model::Connection, chrono::DateTime<chrono::Utc>>, WorkflowError>
    {
        let interval = self.settings.transfer.sync_request_interval;
        match self.store.request_sync(id, interval).await {
            Ok(outcome) => Ok(outcome),
            Err(engine::StoreError::NotTransferring(state)) => {
                Err(WorkflowError::NotTransferring(state))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Claims due refreshes and enqueues them as jobs (fenced by version). Processes share the
    /// claims: each connection goes to one of them, and a lost job is due again once its
    /// claim (the dispatch lease) runs out.
    pub async fn dispatch_refreshes(&self, queue: &JobQueue) -> Result<usize, String> {
        let claimed = self
            .store
            .claim_due_refreshes(
                self.settings.refresh_batch,
                self.settings.transfer.dispatch_lease,
            )
            .await
            .map_err(|e| e.to_string())?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let jobs: Vec<StepJob> = claimed
            .iter()
            .map(|c| StepJob::new(Step::Refresh, c.id.to_string(), c.version))
            .collect();
        queue.push(&jobs).await.map_err(|e| e.to_string())?;
        Ok(jobs.len())
    }

    /// Claims connections with due outbox messages and enqueues their deliver steps, one job
    /// per [`CONNECTIONS_PER_JOB`] connections. Returns how many connections were dispatched.
    pub async fn dispatch_deliveries(&self, queue: &JobQueue) -> Result<usize, String> {
        let claimed: Vec<String> = self
            .store
            .claim_due_deliveries(
                self.settings.transfer.dispatch_batch,
                self.settings.transfer.dispatch_lease,
            )
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|id| id.to_string())
            .collect();
        let jobs: Vec<StepJob> = claimed
            .chunks(CONNECTIONS_PER_JOB)
            .map(|ids| StepJob {
                more: ids[1..].to_vec(),
                ..StepJob::new(Step::Deliver, ids[0].clone(), 0)
            })
            .collect();
        if !jobs.is_empty() {
            queue.push(&jobs).await.map_err(|e| e.to_string())?;
        }
        Ok(claimed.len())
    }

    /// One dispatcher pass: claims due partner revocations and due connections and enqueues
    /// their steps. Returns how many jobs were pushed.
    pub async fn dispatch_due(&self, queue: &JobQueue) -> Result<usize, String> {
        let settings = &self.settings.transfer;
        let revocations: Vec<StepJob> = self
            .store
            .claim_due_revocations(settings.dispatch_batch, settings.dispatch_lease)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|id| StepJob::new(Step::Revoke, id.to_string(), 0))
            .collect();
        if !revocations.is_empty() {
            queue.push(&revocations).await.map_err(|e| e.to_string())?;
        }
        if !self.fetch_dispatch {
            return Ok(revocations.len());
        }
        let pending = queue
            .pending(Step::Fetch)
            .await
            .map_err(|e| e.to_string())?;
        let room = settings
            .max_pending
            .saturating_sub(pending)
            .min(settings.dispatch_batch);
        if room == 0 {
            return Ok(revocations.len());
        }
        let claimed = self
            .store
            .claim_due(room, settings.dispatch_lease)
            .await
            .map_err(|e| e.to_string())?;
        if claimed.is_empty() {
            return Ok(revocations.len());
        }
        let jobs: Vec<StepJob> = claimed
            .iter()
            .map(|c| StepJob::new(Step::Fetch, c.id.to_string(), c.version))
            .collect();
        queue.push(&jobs).await.map_err(|e| e.to_string())?;
        Ok(jobs.len() + revocations.len())
    }

    /// Dispatches until `shutdown`; passes back-to-back while there is a backlog.
    pub async fn dispatcher_loop(
        &self,
        queue: &JobQueue,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let poll = self.settings.transfer.poll_interval;
        let mut last_refresh_scan: Option<tokio::time::Instant> = None;
        let mut last_delivery_scan: Option<tokio::time::Instant> = None;
        let mut deliveries_waiting = false;
        loop {
            if last_delivery_scan.is_none_or(|t| {
                t.elapsed() >= self.settings.delivery.poll_interval
                    || (deliveries_waiting && t.elapsed() >= DELIVERY_COALESCE)
            }) {
                last_delivery_scan = Some(tokio::time::Instant::now());
                deliveries_waiting = false;
                match self.dispatch_deliveries(queue).await {
                    Ok(n) if n as u64 >= self.settings.transfer.dispatch_batch => {
                        last_delivery_scan = None
                    }
                    Ok(_) => {}
                    Err(err) => tracing::error!(error = %err, "dispatching due deliveries failed"),
                }
            }
            if last_refresh_scan.is_none_or(|t| t.elapsed() >= self.settings.refresh_scan_interval)
            {
                last_refresh_scan = Some(tokio::time::Instant::now());
                match self.dispatch_refreshes(queue).await {
                    // A full batch: more are due; claim again on the next pass.
                    Ok(n) if n as u64 >= self.settings.refresh_batch => last_refresh_scan = None,
                    Ok(_) => {}
                    Err(err) => tracing::error!(error = %err, "dispatching due refreshes failed"),
                }
            }
            let pause = match self.dispatch_due(queue).await {
                Ok(n) if n as u64 >= self.settings.transfer.dispatch_batch => Duration::ZERO,
                Ok(_) => poll,
                Err(err) => {
                    tracing::error!(error = %err, "dispatching due connections failed");
                    poll * 4
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                // A disconnect queued a revocation: dispatch it without waiting for the poll.
                _ = self.store.revocations_queued().notified() => {}
                // A transition queued an email or a webhook: deliver it soon, with what else
                // is queued meanwhile.
                _ = self.store.deliveries_queued().notified(), if !deliveries_waiting => {
                    deliveries_waiting = true
                }
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
