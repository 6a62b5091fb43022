//! The job transport against real apalis tables on SQLite and PostgreSQL.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use engine::{
    jobs::{JobQueue, QueueSettings, Step, StepJob},
    testing::TestDb,
};

engine::backend_tests!(
    runs_each_job_exactly_once,
    steps_run_on_their_own_queues,
    failed_panicking_and_hung_jobs_are_not_retried,
    purge_removes_only_finished_jobs,
    live_connection_ids_lists_pending_jobs,
    two_processes_share_the_work,
    shutdown_waits_for_in_flight_job,
    pickup_latency_is_well_under_the_heartbeat,
    claimed_jobs_behind_a_slow_handler_stay_with_their_worker,
);

fn settings() -> QueueSettings {
    QueueSettings {
        job_timeout: Duration::from_secs(30),
        shutdown_timeout: Duration::from_secs(10),
        ..QueueSettings::default()
    }
}

fn job(step: Step, n: usize) -> StepJob {
    StepJob::new(step, format!("conn-{n:04}"), 1)
}

/// Runs per job, and which "process" ran it.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<StepJob, Vec<&'static str>>>>);

impl Runs {
    fn record(&self, job: StepJob, by: &'static str) {
        self.0.lock().unwrap().entry(job).or_default().push(by);
    }

    fn distinct(&self, step: Step) -> usize {
        self.0
            .lock()
            .unwrap()
            .keys()
            .filter(|j| j.step == step)
            .count()
    }

    fn total(&self) -> usize {
        self.0.lock().unwrap().values().map(Vec::len).sum()
    }

    fn assert_each_once(&self, expected: usize) {
        let runs = self.0.lock().unwrap();
        assert_eq!(runs.len(), expected, "distinct jobs run");
        let repeated: Vec<_> = runs.iter().filter(|(_, by)| by.len() != 1).collect();
        assert!(repeated.is_empty(), "jobs run more than once: {repeated:?}");
    }

    fn by(&self, who: &str) -> usize {
        let runs = self.0.lock().unwrap();
        runs.values().flatten().filter(|b| **b == who).count()
    }

    /// A handler that records the job after `delay`.
    fn handler(
        &self,
        by: &'static str,
        delay: Duration,
    ) -> impl Fn(StepJob) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
    + Send
    + Sync
    + Clone
    + 'static {
        let runs = self.clone();
        move |job| {
            let runs = runs.clone();
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                runs.record(job, by);
                Ok(())
            })
        }
    }
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn runs_each_job_exactly_once(db: &TestDb) {
    let store = db.store().await;
    let queue = JobQueue::setup(&store, settings()).await.unwrap();
    let jobs: Vec<_> = (0..200).map(|n| job(Step::Fetch, n)).collect();
    queue.push(&jobs).await.unwrap();
    assert_eq!(queue.pending(Step::Fetch).await.unwrap(), 200);

    let runs = Runs::default();
    let workers = queue.start_workers(&[Step::Fetch], runs.handler("p", Duration::ZERO));
    wait_until("200 jobs", Duration::from_secs(20), || {
        runs.distinct(Step::Fetch) == 200
    })
    .await;
    // Several more poll cycles: nothing runs again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    workers.shutdown().await;

    runs.assert_each_once(200);
    assert_eq!(queue.pending(Step::Fetch).await.unwrap(), 0);
}

async fn steps_run_on_their_own_queues(db: &TestDb) {
    let store = db.store().await;
    let queue = JobQueue::setup(&store, settings()).await.unwrap();
    let mut jobs: Vec<_> = (0..20).map(|n| job(Step::Fetch, n)).collect();
    jobs.extend((0..20).map(|n| job(Step::Refresh, n)));
    queue.push(&jobs).await.unwrap();

    let runs = Runs::default();
    let refresh = queue.start_workers(&[Step::Refresh], runs.handler("refresh", Duration::ZERO));
    wait_until("refresh jobs", Duration::from_secs(10), || {
        runs.distinct(Step::Refresh) == 20
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    refresh.shutdown().await;
    assert_eq!(
        runs.distinct(Step::Fetch),
        0,
        "fetch jobs ran on refresh workers"
    );
    assert_eq!(queue.pending(Step::Fetch).await.unwrap(), 20);
    assert_eq!(queue.pending(Step::Refresh).await.unwrap(), 0);

    let fetch = queue.start_workers(
        &[Step::Fetch, Step::Revoke],
        runs.handler("fetch", Duration::ZERO),
    );
    wait_until("fetch jobs", Duration::from_secs(10), || {
        runs.distinct(Step::Fetch) == 20
    })
    .await;
    fetch.shutdown().await;
    runs.assert_each_once(40);
    assert_eq!(runs.by("refresh"), 20);
    assert_eq!(queue.pending(Step::Fetch).await.unwrap(), 0);
}

async fn failed_panicking_and_hung_jobs_are_not_retried(db: &TestDb) {
    let store = db.store().await;
    let settings = QueueSettings {
        job_timeout: Duration::from_millis(300),
        ..settings()
    };
    let queue = JobQueue::setup(&store, settings).await.unwrap();
    let jobs: Vec<_> = (0..12).map(|n| job(Step::Fetch, n)).collect();
    queue.push(&jobs).await.unwrap();

    let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let recorded = calls.clone();
    let workers = queue.start_workers(&[Step::Fetch], move |job: StepJob| {
        let calls = recorded.clone();
        async move {
            let n: usize = job.connection_id[5..].parse().unwrap();
            *calls.lock().unwrap().entry(job.connection_id).or_default() += 1;
            match n % 3 {
                0 => Err("partner said 503".to_owned()),
                1 => panic!("handler bug"),
                _ => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(())
                }
            }
        }
    });
    wait_until("12 calls", Duration::from_secs(10), || {
        calls.lock().unwrap().len() == 12
    })
    .await;
    // Hung ones time out after 300 ms; give apalis several poll cycles to retry anything.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    workers.shutdown().await;

    let calls = calls.lock().unwrap().clone();
    assert!(calls.values().all(|c| *c == 1), "retried: {calls:?}");
    assert_eq!(queue.pending(Step::Fetch).await.unwrap(), 0);
    assert_eq!(queue.purge_finished(Duration::ZERO).await.unwrap(), 12);
}

async fn purge_removes_only_finished_jobs(db: &TestDb) {
    let store = db.store().await;
    let queue = JobQueue::setup(&store, settings()).await.unwrap();
    let jobs: Vec<_> = (0..20).map(|n| job(Step::Deliver, n)).collect();
    queue.push(&jobs).await.unwrap();
    let runs = Runs::default();
    let workers = queue.start_workers(&[Step::Deliver], runs.handler("p", Duration::ZERO));
    wait_until("20 jobs", Duration::from_secs(10), || runs.total() == 20).await;
    workers.shutdown().await;
    assert_eq!(queue.pending(Step::Deliver).await.unwrap(), 0);

    // Jobs still waiting are never purged.
    let waiting: Vec<_> = (100..103).map(|n| job(Step::Deliver, n)).collect();
    queue.push(&waiting).await.unwrap();

    assert_eq!(
        queue
            .purge_finished(Duration::from_secs(3600))
            .await
            .unwrap(),
        0,
        "finished less than an hour ago"
    );
    assert_eq!(queue.purge_finished(Duration::ZERO).await.unwrap(), 20);
    assert_eq!(queue.purge_finished(Duration::ZERO).await.unwrap(), 0);
    // Vacuuming after a purge (outside any transaction on PostgreSQL) keeps every live job.
    queue.vacuum().await.unwrap();
    assert_eq!(queue.pending(Step::Deliver).await.unwrap(), 3);
    assert_eq!(
        queue.live_connection_ids(Step::Deliver).await.unwrap(),
        vec!["conn-0100", "conn-0101", "conn-0102"]
    );
}

async fn live_connection_ids_lists_pending_jobs(db: &TestDb) {
    let store = db.store().await;
    let queue = JobQueue::setup(&store, settings()).await.unwrap();
    let at = |step, id: &str, version| StepJob::new(step, id, version);
    queue
        .push(&[
            at(Step::Fetch, "c2", 1),
            at(Step::Fetch, "c1", 1),
            at(Step::Fetch, "c1", 1),
            at(Step::Fetch, "c1", 2),
            at(Step::Refresh, "c3", 4),
        ])
        .await
        .unwrap();
    queue.push(&[]).await.unwrap();

    assert_eq!(
        queue.live_connection_ids(Step::Fetch).await.unwrap(),
        vec!["c1", "c2"]
    );
    assert_eq!(
        queue.live_connection_ids(Step::Refresh).await.unwrap(),
        vec!["c3"]
    );
    assert!(
        queue
            .live_connection_ids(Step::Revoke)
            .await
            .unwrap()
            .is_empty()
    );
    // The exact duplicate in one push is pushed once.
    assert_eq!(queue.pending(Step::Fetch).await.unwrap(), 3);
    assert_eq!(queue.pending(Step::Refresh).await.unwrap(), 1);
}

async fn two_processes_share_the_work(db: &TestDb) {
    // Two stores: two pools, as two processes would have.
    let (store_a, store_b) = (db.store().await, db.store().await);
    // Four at a time each: one process alone would need 2.5 s for the 200 jobs, so the other
    // polls and takes its share even on a loaded machine (at the default 64, one could take
    // them all before the other's first poll).
    let small = || QueueSettings {
        concurrency: 4,
        batch_size: 4,
        ..settings()
    };
    let a = JobQueue::setup(&store_a, small()).await.unwrap();
    let b = JobQueue::setup(&store_b, small()).await.unwrap();
    assert_ne!(a.worker_name(), b.worker_name());
    assert!(a.worker_name().contains(&std::process::id().to_string()));

    let runs = Runs::default();
    // Handlers take 50 ms.
    let wa = a.start_workers(&[Step::Fetch], runs.handler("a", Duration::from_millis(50)));
    let wb = b.start_workers(&[Step::Fetch], runs.handler("b", Duration::from_millis(50)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let jobs: Vec<_> = (0..200).map(|n| job(Step::Fetch, n)).collect();
    a.push(&jobs).await.unwrap();
    wait_until("200 jobs", Duration::from_secs(20), || {
        runs.distinct(Step::Fetch) == 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    wa.shutdown().await;
    wb.shutdown().await;

    runs.assert_each_once(200);
    let (by_a, by_b) = (runs.by("a"), runs.by("b"));
    assert!(by_a > 0 && by_b > 0, "work not shared: a {by_a}, b {by_b}");
    assert_eq!(a.pending(Step::Fetch).await.unwrap(), 0);
}

async fn shutdown_waits_for_in_flight_job(db: &TestDb) {
    let store = db.store().await;
    let queue = JobQueue::setup(&store, settings()).await.unwrap();
    let started: Arc<Mutex<Vec<StepJob>>> = Arc::default();
    let runs = Runs::default();
    let (s, r) = (started.clone(), runs.clone());
    let workers = queue.start_workers(&[Step::Fetch], move |job: StepJob| {
        let (started, runs) = (s.clone(), r.clone());
        async move {
            started.lock().unwrap().push(job.clone());
            tokio::time::sleep(Duration::from_millis(300)).await;
            runs.record(job, "p");
            Ok(())
        }
    });
    queue.push(&[job(Step::Fetch, 1)]).await.unwrap();
    wait_until("the job to start", Duration::from_secs(5), || {
        !started.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(runs.total(), 0, "still running");
    workers.shutdown().await;
    assert_eq!(
        runs.total(),
        1,
        "shutdown returned before the in-flight job completed"
    );
    assert_eq!(
        queue.pending(Step::Fetch).await.unwrap(),
        0,
        "completion not recorded"
    );

    queue.push(&[job(Step::Fetch, 2)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        started.lock().unwrap().len(),
        1,
        "a job started after shutdown"
    );
    assert_eq!(queue.pending(Step::Fetch).await.unwrap(), 1);
}

/// Idle workers poll every 200 ms; the heartbeat (30 s here) must not matter. Several idle
/// cycles: apalis's own interval strategy lost its wake-up in a few percent of them.
async fn pickup_latency_is_well_under_the_heartbeat(db: &TestDb) {
    let store = db.store().await;
    let settings = QueueSettings {
        heartbeat: Duration::from_secs(30),
        ..settings()
    };
    let queue = JobQueue::setup(&store, settings).await.unwrap();
    let runs = Runs::default();
    let workers = queue.start_workers(&[Step::Revoke], runs.handler("p", Duration::ZERO));
    // Let the worker register and go idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = vec![];
    for n in 0..12 {
        tokio::time::sleep(Duration::from_millis((n as u64 * 137) % 400)).await;
        let pushed = Instant::now();
        queue.push(&[job(Step::Revoke, n)]).await.unwrap();
        wait_until("pickup", Duration::from_secs(10), || runs.total() == n + 1).await;
        latencies.push(pushed.elapsed());
    }
    workers.shutdown().await;
    let worst = latencies.iter().max().unwrap();
    eprintln!("pickup latencies: {latencies:?}");
    assert!(*worst < Duration::from_secs(5), "pickup took {worst:?}");
}

/// A worker claims a batch larger than its free slots; while its handler is busy apalis does
/// not heartbeat. Without our keep-alive the other process re-enqueued and re-ran every claimed
/// job (measured: 2–4 runs each); with it, each runs once.
async fn claimed_jobs_behind_a_slow_handler_stay_with_their_worker(db: &TestDb) {
    let settings = QueueSettings {
        concurrency: 1,
        batch_size: 3,
        heartbeat: Duration::from_secs(1),
        missed_heartbeats: 2,
        ..settings()
    };
    let (store_a, store_b) = (db.store().await, db.store().await);
    let a = JobQueue::setup(&store_a, settings.clone()).await.unwrap();
    let b = JobQueue::setup(&store_b, settings).await.unwrap();
    let runs = Runs::default();
    let wa = a.start_workers(
        &[Step::Fetch],
        runs.handler("a", Duration::from_millis(1_200)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let jobs: Vec<_> = (0..3).map(|n| job(Step::Fetch, n)).collect();
    a.push(&jobs).await.unwrap();
    // Let `a` claim all three, then start the other process.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let wb = b.start_workers(
        &[Step::Fetch],
        runs.handler("b", Duration::from_millis(1_200)),
    );
    wait_until("3 jobs", Duration::from_secs(15), || runs.total() >= 3).await;
    // Past the orphan threshold (2 s) once more.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    wa.shutdown().await;
    wb.shutdown().await;
    runs.assert_each_once(3);
}
