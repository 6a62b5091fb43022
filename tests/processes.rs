//! Several `tributary worker` OS processes on one PostgreSQL database: they share the due
//! transfers, never run one connection's transfer twice at once, and a worker SIGKILLed in the
//! middle of a transfer loses nothing: once its leases expire, another process takes its
//! connections up again, and every connection ends with exactly the sandbox's records.
//!
//! Real components only: the built binary as child processes, a fresh PostgreSQL database, the
//! sandbox partner in this process on a loopback port (clock frozen, so its data are exactly
//! known; some latency per request, so transfers take a while). Connections are seeded in bulk
//! as the benchmark does ([`tributary::bench::seed`]), each with its own sandbox grant and a
//! cursor four days back.
//!
//! "At most one at a time" is observed at the partner: the sandbox records the most data
//! requests ever in flight at once with one access token (one connection). A transfer sends its
//! requests one after another, so two transfers of one connection at once show up as 2.
//!
//! PostgreSQL only (several processes on one SQLite file is not a supported deployment): like
//! every PostgreSQL test, reported as ignored unless `TRIBUTARY_TEST_POSTGRES_URL` is set.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use engine::{
    Store,
    crypto::Keyring,
    ids::ConnectionId,
    jobs::{JobQueue, QueueSettings},
    store::StoreOptions,
    testing::TestDb,
};
use rand::RngCore as _;
use sandbox::{DataContext, Sandbox, SandboxConfig, data};
use sqlx::PgPool;
use tributary::bench::seed::{self, Group};
use url::Url;

const PARTNER: &str = "sandbox-cgm";
/// Connections seeded, all due at once.
const CONNECTIONS: usize = 30;
/// Added by the sandbox to every request: a window is five sequential requests.
const LATENCY_MS: u64 = 30;
/// How far behind the frozen sandbox clock each connection's cursor starts: with one-day
/// windows and the 4 h overlap, each transfer commits five windows.
const BACKLOG: TimeDelta = TimeDelta::days(4);
/// `workers.fetch_lease_secs`: a killed worker's transfer is taken up this long after its last
/// commit. Far above the time one window takes (~0.2 s), so a live worker never loses its lease.
const FETCH_LEASE_SECS: u64 = 5;
/// `workers.dispatch_lease_secs`.
const DISPATCH_LEASE_SECS: u64 = 3;
/// `workers.concurrency` per process: two processes run four transfers at a time.
const CONCURRENCY: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL skipped: set TRIBUTARY_TEST_POSTGRES_URL to run it"
)]
async fn worker_processes_share_transfers_and_a_sigkilled_one_loses_nothing() {
    let db = TestDb::postgres().await;
    // The body runs as its own task so that a panic still reaches the cleanup below (the
    // worker processes are killed by their guard while the panic unwinds).
    let outcome = tokio::spawn(scenario(db.url.clone())).await;
    db.cleanup().await;
    if let Err(err) = outcome {
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
        panic!("the test task did not finish: {err}");
    }
}

async fn scenario(url: String) {
    let started = Instant::now();
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let keyring = Keyring::new("k1", [("k1".to_owned(), key)]).unwrap();
    let store = Store::open_and_migrate(&url, &StoreOptions::default(), keyring.clone())
        .await
        .unwrap();
    // apalis's tables, once, so the worker processes do not race to create them.
    JobQueue::setup(&store, QueueSettings::default())
        .await
        .unwrap();
    let pool = PgPool::connect(&url).await.unwrap();

    // The partner: its own loopback port, clock frozen between two 5-minute EGV slots, at or
    // before the real now (the workers' fetches run to the real now; the sandbox serves
    // nothing after its own).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox_url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let sandbox = Sandbox::new(SandboxConfig::new(
        sandbox_url,
        &Url::parse("http://127.0.0.1:1").unwrap(),
    ));
    let frozen =
        Utc::now().duration_trunc(TimeDelta::minutes(5)).unwrap() - TimeDelta::seconds(150);
    sandbox.set_now(Some(frozen));
    sandbox.faults().update(|f| f.latency_ms = LATENCY_MS);
    let (stop_sandbox, stopped) = tokio::sync::oneshot::channel::<()>();
    let sandbox_task = tokio::spawn(sandbox::serve(sandbox.clone(), listener, async move {
        let _ = stopped.await;
    }));

    let cursor = frozen - BACKLOG;
    let ids = seed::seed(
        &store,
        &keyring,
        &sandbox,
        PARTNER,
        Group::Throughput,
        CONNECTIONS,
        cursor,
        Some(Utc::now()),
    )
    .await
    .unwrap();
    let connections: Vec<(ConnectionId, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.parse().unwrap(), Group::Throughput.user(i)))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let config = write_worker_config(dir.path(), &url, &key, &sandbox);
    let mut workers = Workers::new(dir.path(), config);
    let a = workers.spawn("a");
    let b = workers.spawn("b");

    // Wait until both processes have been seen mid-transfer (a running fetch job of theirs on
    // a connection that has committed windows and is not finished), then SIGKILL one of them
    // while it is in that state.
    let mut seen_mid_transfer = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    let (victim, victim_connections) = loop {
        let progress = Progress::read(&pool, cursor).await;
        assert_eq!(progress.troubled, 0, "{}", progress.describe());
        assert!(
            progress.completed < CONNECTIONS as i64,
            "every transfer finished before both workers were seen mid-transfer ({} seen): \
             make the transfers longer\n{}",
            seen_mid_transfer.len(),
            workers.logs()
        );
        let running = mid_transfer(&pool, cursor).await;
        for pid in running.keys() {
            seen_mid_transfer.insert(*pid);
        }
        if seen_mid_transfer.contains(&a) && seen_mid_transfer.contains(&b) {
            let target = [a, b].into_iter().find(|p| running.contains_key(p));
            if let Some(pid) = target {
                break (pid, running[&pid].clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "both workers were not seen mid-transfer within 40 s ({:?} seen; {})\n{}",
            seen_mid_transfer,
            progress.describe(),
            workers.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let at_kill = Progress::read(&pool, cursor).await;
    workers.kill(victim);
    let survivor = if victim == a { b } else { a };
    eprintln!(
        "killed worker {victim} mid-transfer of {victim_connections:?} after {:.1}s ({})",
        started.elapsed().as_secs_f64(),
        at_kill.describe()
    );
    let replacement = workers.spawn("c");

    // Everything finishes: each connection completed (last_sync_at set, next run planned the
    // partner's interval ahead), no lease held.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let progress = Progress::read(&pool, cursor).await;
        assert_eq!(progress.troubled, 0, "{}", progress.describe());
        if progress.completed == CONNECTIONS as i64 && progress.leased == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "transfers did not all complete within 90 s of the kill: {}\n{}",
            progress.describe(),
            workers.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let finished = started.elapsed();

    // Exactly the partner's records, per connection: everything it serves (at its frozen
    // clock) from the cursor minus the overlap on, nothing else, including across the kill.
    let overlap = TimeDelta::seconds(
        i64::try_from(workflows::fetch::TransferConfig::default().overlap_secs).unwrap(),
    );
    let ctx = sandbox.data_context();
    let mut mismatches = Vec::new();
    let mut total = 0;
    for (id, user) in &connections {
        let stored: BTreeSet<String> = store
            .record_ids(*id, true)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| !r.starts_with("device:"))
            .collect();
        let expected = served(&ctx, user, cursor - overlap, frozen);
        assert!(!expected.is_empty(), "{user}: the sandbox serves nothing?");
        total += stored.len();
        if stored != expected {
            mismatches.push(describe_mismatch(user, &stored, &expected));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {CONNECTIONS} connections differ from the partner's records \
         (killed worker held {victim_connections:?}):\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // No connection failed, none counted a failure, no lease is held.
    type Row = (String, String, i32, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, state, failure_count, last_error_code, sync_lease_token FROM connections",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), CONNECTIONS);
    for (id, state, failures, error, lease) in &rows {
        assert_eq!(state, "active", "{id}");
        assert_eq!(*failures, 0, "{id}: {error:?}");
        assert_eq!(*error, None, "{id}");
        assert_eq!(*lease, None, "{id}");
    }

    // At most one transfer per connection at a time: never two data requests in flight at once
    // with one connection's token (a transfer's requests are sequential).
    let stats = sandbox.stats();
    assert!(stats.cgm.data_requests > 0);
    assert_eq!(
        stats.max_data_requests_in_flight_per_token, 1,
        "two requests of one connection were in flight at once: two transfers ran together"
    );

    // Both original processes did work: the victim was seen mid-transfer (committed windows,
    // its job running) before it was killed; the survivor finished transfers of its own (its
    // log says so: apalis's finished rows are purged within seconds, so counting them races
    // with the purge; they are reported below for information only).
    let done = finished_jobs_by_process(&pool).await;
    let survivor_log = workers.log(survivor);
    assert!(
        survivor_log.contains("fetch done"),
        "the surviving worker logged no finished transfer:\n{survivor_log}"
    );

    eprintln!(
        "{CONNECTIONS} connections, {total} records, {} data requests; finished {:.1}s after \
         start; fetch jobs finished per process {done:?} (victim {victim}, survivor {survivor}, \
         replacement {replacement})",
        stats.cgm.data_requests,
        finished.as_secs_f64()
    );

    drop(workers);
    let _ = stop_sandbox.send(());
    let _ = sandbox_task.await;
    pool.close().await;
    store.close().await;
}

/// Record ids (excluding device records) the sandbox serves at `now` for `user` in `[start,
/// now]`: CGM windows are inclusive at both ends, as the adapter's windows are.
fn served(
    ctx: &DataContext,
    user: &str,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    ids.extend(
        data::egvs(ctx, user, start, now, now)
            .into_iter()
            .map(|r| r.record_id),
    );
    ids.extend(
        data::calibrations(ctx, user, start, now, now)
            .into_iter()
            .map(|r| r.record_id),
    );
    ids.extend(
        data::events(ctx, user, start, now, now)
            .into_iter()
            .map(|r| r.record_id),
    );
    ids.extend(
        data::alerts(ctx, user, start, now, now)
            .into_iter()
            .map(|r| r.record_id),
    );
    ids
}

fn describe_mismatch(user: &str, stored: &BTreeSet<String>, expected: &BTreeSet<String>) -> String {
    let missing: Vec<_> = expected.difference(stored).take(3).collect();
    let extra: Vec<_> = stored.difference(expected).take(3).collect();
    format!(
        "{user}: stored {} expected {}: missing {} (e.g. {missing:?}), extra {} (e.g. {extra:?})",
        stored.len(),
        expected.len(),
        expected.difference(stored).count(),
        stored.difference(expected).count()
    )
}

/// Counts over all connections.
#[derive(Debug)]
struct Progress {
    /// Committed at least one window.
    started: i64,
    /// Finished a transfer: `last_sync_at` set, no lease, next run the interval ahead (a
    /// yielded transfer is due again at once).
    completed: i64,
    /// A lease (claim or transfer) is held.
    leased: i64,
    /// Not active, or an error or failure recorded.
    troubled: i64,
}

impl Progress {
    async fn read(pool: &PgPool, cursor: DateTime<Utc>) -> Self {
        let (started, completed, leased, troubled): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT \
               count(*) FILTER (WHERE fetched_through > $1), \
               count(*) FILTER (WHERE last_sync_at IS NOT NULL AND sync_lease_token IS NULL \
                 AND sync_lease_until IS NULL AND next_sync_at > now() + interval '30 minutes'), \
               count(*) FILTER (WHERE sync_lease_until IS NOT NULL), \
               count(*) FILTER (WHERE state <> 'active' OR failure_count > 0 \
                 OR last_error_code IS NOT NULL) \
             FROM connections",
        )
        .bind(cursor)
        .fetch_one(pool)
        .await
        .unwrap();
        Self {
            started,
            completed,
            leased,
            troubled,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} of {CONNECTIONS} connections started, {} completed, {} leased, {} troubled",
            self.started, self.completed, self.leased, self.troubled
        )
    }
}

/// The process id in an apalis worker name (`{host}-{pid}-{suffix}/{step}/{n}`).
fn pid_of(lock_by: &str) -> Option<u32> {
    let process = lock_by.split('/').next()?;
    let mut parts = process.rsplitn(3, '-');
    let _suffix = parts.next()?;
    parts.next()?.parse().ok()
}

/// Per process: the connections it is transferring right now with windows already committed
/// (its fetch job running, the transfer lease held, cursor moved, not finished).
async fn mid_transfer(pool: &PgPool, cursor: DateTime<Utc>) -> BTreeMap<u32, Vec<String>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT j.lock_by, c.id FROM apalis.jobs j \
         JOIN connections c ON c.id = convert_from(j.job, 'UTF8')::jsonb ->> 'connection_id' \
         WHERE j.job_type = 'tributary.fetch' AND j.status = 'Running' \
           AND j.lock_by IS NOT NULL AND c.sync_lease_token IS NOT NULL \
           AND c.fetched_through > $1 AND c.last_sync_at IS NULL",
    )
    .bind(cursor)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (lock_by, id) in rows {
        if let Some(pid) = pid_of(&lock_by) {
            out.entry(pid).or_default().push(id);
        }
    }
    out
}

/// Finished fetch jobs per worker process.
async fn finished_jobs_by_process(pool: &PgPool) -> BTreeMap<u32, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT lock_by, count(*) FROM apalis.jobs \
         WHERE job_type = 'tributary.fetch' AND status = 'Done' AND lock_by IS NOT NULL \
         GROUP BY lock_by",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for (lock_by, n) in rows {
        if let Some(pid) = pid_of(&lock_by) {
            *out.entry(pid).or_insert(0) += n;
        }
    }
    out
}

/// The `tributary worker` child processes; all are SIGKILLed when this is dropped (also while a
/// failed assertion unwinds), and their logs are printed then if the test is failing.
struct Workers {
    dir: PathBuf,
    config: PathBuf,
    children: Vec<(u32, String, Child)>,
}

impl Workers {
    fn new(dir: &Path, config: PathBuf) -> Self {
        Self {
            dir: dir.to_owned(),
            config,
            children: Vec::new(),
        }
    }

    /// Starts one worker; returns its pid. Its stdout and stderr go to `<name>.log`.
    fn spawn(&mut self, name: &str) -> u32 {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tributary"));
        command
            .arg("--config")
            .arg(&self.config)
            .arg("worker")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        // The test's own TRIBUTARY_TEST_POSTGRES_URL would be read as an unknown config key.
        for (var, _) in std::env::vars_os() {
            if var
                .to_string_lossy()
                .to_ascii_uppercase()
                .starts_with("TRIBUTARY_")
            {
                command.env_remove(var);
            }
        }
        let child = command.spawn().expect("start a worker process");
        let pid = child.id();
        self.children.push((pid, name.to_owned(), child));
        pid
    }

    /// SIGKILL (`Child::kill` on Unix) and reap.
    fn kill(&mut self, pid: u32) {
        let (_, _, child) = self
            .children
            .iter_mut()
            .find(|(p, _, _)| *p == pid)
            .expect("a child of ours");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn log(&self, pid: u32) -> String {
        let name = self
            .children
            .iter()
            .find(|(p, _, _)| *p == pid)
            .map_or("?", |(_, name, _)| name.as_str());
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The last lines of every worker's log.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (pid, name, _) in &self.children {
            let log = self.log(*pid);
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            let _ = writeln!(out, "--- worker {name} (pid {pid}), last lines:");
            for line in tail {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for (_, _, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The configuration every worker process loads: the test database and key, the sandbox CGM
/// partner at the in-process sandbox with one-day windows, short leases, fast polling.
fn write_worker_config(dir: &Path, url: &str, key: &[u8; 32], sandbox: &Sandbox) -> PathBuf {
    let workers = format!(
        "concurrency = {CONCURRENCY}\nbatch_size = {CONCURRENCY}\npoll_interval_ms = 50\n\
         dispatch_batch = 10\ndispatch_lease_secs = {DISPATCH_LEASE_SECS}\n\
         fetch_lease_secs = {FETCH_LEASE_SECS}\nmax_run_secs = 60"
    );
    let toml = tributary::bench::worker_config_toml(
        url,
        key,
        sandbox,
        &tributary::bench::WorkerToml {
            partner: PARTNER,
            database: "max_connections = 8",
            workers: &workers,
            log_filter: "info,sqlx=warn",
            partner_settings: "max_window_days = 1\nrequests_per_second = 1000.0",
        },
    )
    .unwrap();
    let path = dir.join("worker.toml");
    std::fs::write(&path, toml).unwrap();
    path
}
