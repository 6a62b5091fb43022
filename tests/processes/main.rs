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
//!
//! # Layout
//! - `main.rs`: the scenario, and the records the partner serves.
//! - `progress.rs`: what the database shows of the transfers and of which process runs them.
//! - `workers.rs`: the worker processes and their configuration.

mod progress;
mod workers;

use std::{
    collections::BTreeSet,
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

use crate::{
    progress::{Progress, finished_jobs_by_process, mid_transfer},
    workers::{Workers, write_worker_config},
};

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
