//! Worker pools: one apalis worker per step queue, supervised (restarted under a new name if its
//! backend fails), with our own keep-alive and a handler wrapper that never lets apalis retry.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use apalis::prelude::{
    BackendExt as _, BoxDynError, PollSnapshot, PollStrategy, Service, Task, WorkerBuilder,
    WorkerBuilderExt as _, WorkerError,
};
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use serde_json::Value;
use tokio::{sync::watch, task::JoinHandle};
use tracing::Instrument as _;

use super::{JobQueue, Step, StepJob};
use crate::store::Pool;

/// Running worker pools. [`shutdown`](Self::shutdown) stops them; dropping the handle also
/// stops them (gracefully, without waiting).
#[derive(Debug)]
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    timeout: std::time::Duration,
}

impl WorkerHandle {
    /// Stops taking new jobs (claimed but unstarted ones go back to `Pending`), waits for
    /// in-flight jobs and the final acknowledgements, at most `shutdown_timeout`; then cancels
    /// whatever is still running (those jobs are re-enqueued once this worker's heartbeat is
    /// stale).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + self.timeout;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!("job worker did not stop in time; cancelling its jobs");
                task.abort();
                let _ = task.await;
            }
        }
    }
}

pub(super) fn start<H, Fut>(queue: &JobQueue, steps: &[Step], handler: H) -> WorkerHandle
where
    H: Fn(StepJob) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let (stop, _) = watch::channel(false);
    let mut distinct: Vec<Step> = Vec::new();
    for step in steps {
        if !distinct.contains(step) {
            distinct.push(*step);
        }
    }
    let tasks = distinct
        .into_iter()
        .map(|step| {
            tokio::spawn(supervise(
                queue.clone(),
                step,
                handler.clone(),
                stop.subscribe(),
            ))
        })
        .collect();
    WorkerHandle {
        stop,
        tasks,
        timeout: queue.settings.shutdown_timeout,
    }
}

/// Stop was asked for, or the handle was dropped.
fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

async fn supervise<H, Fut>(queue: JobQueue, step: Step, handler: H, stop: watch::Receiver<bool>)
where
    H: Fn(StepJob) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut failures = 0u32;
    while !stopping(&stop) {
        // A fresh name per start: apalis refuses to re-register a live name, and a reused name
        // would keep a dead worker's jobs `Running` forever.
        let name = queue.next_worker_name(step);
        let started = Instant::now();
        let service = StepService {
            step,
            handler: handler.clone(),
            timeout: queue.settings.job_timeout,
        };
        let mut signal_rx = stop.clone();
        let signal = async move {
            let _ = signal_rx.wait_for(|s| *s).await;
            Ok::<(), WorkerError>(())
        };
        tracing::info!(worker = %name, queue = step.queue(), "job worker starting");
        let result = tokio::select! {
            r = run_worker(&queue, step, &name, service, signal) => r,
            () = keep_alive(&queue.pool, &name, queue.settings.heartbeat) => Ok(()),
        };
        let stopped = stopping(&stop);
        match (result, stopped) {
            (Ok(()), true) => tracing::info!(worker = %name, "job worker stopped"),
            (Ok(()), false) => tracing::warn!(worker = %name, "job worker exited; restarting"),
            (Err(e), true) => {
                tracing::warn!(worker = %name, error = %e, "job worker failed while stopping")
            }
            (Err(e), false) => {
                tracing::error!(worker = %name, error = %e, "job worker failed; restarting");
            }
        }
        if stopped {
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        let delay = Duration::from_millis(500) * 2u32.pow(failures.min(6));
        failures += 1;
        let mut stop_rx = stop.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop_rx.wait_for(|s| *s) => return,
        }
    }
}

/// Builds and runs one worker until `signal` (graceful) or a backend error.
async fn run_worker<H, Fut>(
    queue: &JobQueue,
    step: Step,
    name: &str,
    service: StepService<H>,
    signal: impl Future<Output = Result<(), WorkerError>> + Send + 'static,
) -> Result<(), WorkerError>
where
    H: Fn(StepJob) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let s = &queue.settings;
    match &queue.pool {
        Pool::Postgres(pool) => {
            let config = apalis_postgres::Config::default()
                .queue(step.queue())
                .batch_size(s.batch_size)
                .heartbeat_interval(s.heartbeat)
                .missed_heartbeats(s.missed_heartbeats)
                .lock_tasks(true)
                .persist_results(true);
            let backend = PostgresStorage::<Value>::new(pool)
                .with_config(config)
                .poll_with_strategy(PollEvery::new(s.poll_interval));
            WorkerBuilder::new(name)
                .backend(backend)
                .concurrency(s.concurrency)
                .build(service)
                .run_until(signal)
                .await
        }
        Pool::Sqlite(pool) => {
            let config = apalis_sqlite::Config::default()
                .queue(step.queue())
                .batch_size(s.batch_size)
                .heartbeat_interval(s.heartbeat)
                .missed_heartbeats(s.missed_heartbeats)
                .lock_tasks(true)
                .persist_results(true);
            let backend = SqliteStorage::<Value>::new(pool)
                .with_config(config)
                .poll_with_strategy(PollEvery::new(s.poll_interval));
            WorkerBuilder::new(name)
                .backend(backend)
                .concurrency(s.concurrency)
                .build(service)
                .run_until(signal)
                .await
        }
    }
}

/// Wakes an idle worker every `every` so it fetches again.
///
/// Replaces apalis's `IntervalStrategy`, which loses its wake-up: when its delay fires it stores
/// a fresh delay without polling it, so if the fetch that follows completes within the same poll
/// (measured: a few times in a hundred idle cycles) no timer is armed and the worker sleeps until
/// its next heartbeat (25–30 s pickups seen with a 30 s heartbeat).
struct PollEvery {
    every: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl PollEvery {
    fn new(every: Duration) -> Self {
        Self { every, sleep: None }
    }
}

impl PollStrategy for PollEvery {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let every = self.every;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Arm the next wake-up now, whatever the caller does next.
        let mut next = Box::pin(tokio::time::sleep(every));
        let _ = next.as_mut().poll(cx);
        self.sleep = Some(next);
        Poll::Ready(Some(()))
    }
}

/// apalis refreshes `last_seen` only between batches; a worker whose claimed batch waits
/// behind long handlers would look dead and have its jobs re-enqueued elsewhere. This keeps the
/// row fresh for as long as the worker runs.
async fn keep_alive(pool: &Pool, name: &str, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = match pool {
            Pool::Postgres(p) => {
                sqlx::query("UPDATE apalis.workers SET last_seen = now() WHERE id = $1")
                    .bind(name)
                    .execute(p)
                    .await
                    .map(|_| ())
            }
            Pool::Sqlite(p) => sqlx::query(
                "UPDATE Workers SET last_seen = CAST(strftime('%s', 'now') AS INTEGER) \
                     WHERE id = ?1",
            )
            .bind(name)
            .execute(p)
            .await
            .map(|_| ()),
        };
        if let Err(e) = result {
            tracing::warn!(worker = %name, error = %e, "job worker keep-alive failed");
        }
    }
}

/// The apalis service: decodes the job and runs the handler. Always succeeds towards apalis,
/// so the job is marked `Done` whatever happened; our tables decide what runs next.
#[derive(Clone)]
struct StepService<H> {
    step: Step,
    handler: H,
    timeout: Duration,
}

impl<H, Fut> Service<Task<Value>> for StepService<H>
where
    H: Fn(StepJob) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    type Response = ();
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxDynError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task<Value>) -> Self::Future {
        let run = run_job(self.step, self.handler.clone(), task.args, self.timeout);
        Box::pin(async move {
            run.await;
            Ok(())
        })
    }
}

/// Cancels the spawned handler if apalis drops the job's future (worker failure or forced
/// shutdown): the job will be re-enqueued, and must not also keep running here.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_job<H, Fut>(step: Step, handler: H, args: Value, timeout: Duration)
where
    H: Fn(StepJob) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    // Decoding here rather than in apalis: an undecodable payload would make apalis's worker
    // exit with a codec error and leave the job claimed.
    let job: StepJob = match serde_json::from_value(args) {
        Ok(job) => job,
        Err(e) => {
            tracing::error!(queue = step.queue(), error = %e, "undecodable job dropped");
            return;
        }
    };
    let (connection, version) = (job.connection_id.clone(), job.version);
    // Every event of the step, here and in the handler, is logged inside this span: its
    // connection and step are on every line (docs/operations.md#logs). A deliver job that
    // serves `more` connections beside the first is logged under the first.
    let span = tracing::info_span!("step", step = %step, connection = %connection, version);
    async move {
        let started = Instant::now();
        // Spawned: its own task (a panic is contained, and handlers run on all runtime threads
        // rather than inside the worker's single polling task); the span goes with it.
        let mut running = AbortOnDrop(tokio::spawn(
            async move { tokio::time::timeout(timeout, handler(job)).await }.in_current_span(),
        ));
        let outcome = (&mut running.0).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(Ok(Ok(()))) => {
                tracing::debug!(%step, connection, version, elapsed_ms, "step done");
            }
            Ok(Ok(Err(error))) => tracing::warn!(
                %step, connection, version, elapsed_ms, error,
                "step failed (not retried by the queue)"
            ),
            Ok(Err(_)) => tracing::error!(
                %step, connection, version, elapsed_ms,
                "step timed out and was cancelled"
            ),
            Err(e) if e.is_panic() => {
                tracing::error!(%step, connection, version, elapsed_ms, "step panicked");
            }
            Err(_) => tracing::warn!(%step, connection, version, "step cancelled"),
        }
    }
    .instrument(span)
    .await;
}
