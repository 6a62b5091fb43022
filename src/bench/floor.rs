//! The floors our overhead is a ratio to: the same rows written by the simplest SQL loop, and
//! apalis's own throughput for no-op jobs, on the same database.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{TimeDelta, Utc};
use engine::{
    Store,
    jobs::{JobQueue, QueueSettings, Step, StepJob},
    store::Pool,
};

/// Columns written per data record, in order.
const RECORD_COLUMNS: &str = "connection_id, partner_record_id, user_id, datum_type, time, datum, datum_hash, retired, created_at, updated_at";
const RECORDS_PER_CYCLE: usize = 12;

fn insert_sql(postgres: bool) -> String {
    let mut sql = format!("INSERT INTO data_records ({RECORD_COLUMNS}) VALUES ");
    let mut n = 0;
    for r in 0..RECORDS_PER_CYCLE {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..10 {
            n += 1;
            if c > 0 {
                sql.push(',');
            }
            if postgres {
                sql.push_str(&format!("${n}"));
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql
}

fn update_sql(postgres: bool) -> &'static str {
    if postgres {
        "UPDATE connections SET fetched_through = $1, last_sync_at = $2, next_sync_at = $3 WHERE id = $4"
    } else {
        "UPDATE connections SET fetched_through = ?, last_sync_at = ?, next_sync_at = ? WHERE id = ?"
    }
}

/// A CGM reading as mapped (about the size of the real datum).
fn datum(i: usize) -> serde_json::Value {
    serde_json::json!({
        "type": "cbg", "units": "mg/dL", "value": 100 + i,
        "time": "2026-03-10T11:05:00Z", "deviceTime": "2026-03-10T03:05:00",
        "timezoneOffset": -480, "deviceId": "sandbox-G7-12345",
        "payload": {"trend": "flat", "trendRate": 0.1, "transmitterGeneration": "g7",
                    "displayDevice": "iOS", "recordId": "0e1c3a5f-1111-2222-3333-444455556666"},
        "origin": {"id": "0e1c3a5f-1111-2222-3333-444455556666", "name": "Sandbox CGM"}
    })
}

macro_rules! cycle {
    ($pool:expr, $postgres:expr, $conn:expr, $user:expr, $seq:expr) => {{
        let now = Utc::now();
        let mut tx = $pool.begin().await?;
        let sql = insert_sql($postgres);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in 0..RECORDS_PER_CYCLE {
            q = q
                .bind($conn.to_owned())
                .bind(format!("egv-{}-{r}", $seq))
                .bind($user.to_owned())
                .bind("cbg")
                .bind(now - TimeDelta::minutes(5 * r as i64))
                .bind(datum(r))
                .bind(format!("{:060x}{:04x}", $seq, r))
                .bind(false)
                .bind(now)
                .bind(now);
        }
        q.execute(&mut *tx).await?;
        sqlx::query(update_sql($postgres))
            .bind(now)
            .bind(now)
            .bind(now + TimeDelta::hours(1))
            .bind($conn.to_owned())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }};
}

/// Raw SQL floor: `tasks` loops, each one transaction per cycle (12 inserts + 1 update) on its
/// own connection row, for `duration`. Returns cycles per second.
pub async fn raw_sql(
    store: &Store,
    rows: &[(String, String)],
    tasks: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    // Record ids unique across calls: a run tag in the high bits.
    let run: u64 = u64::from(rand::random::<u16>()) << 48;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (conn, user) = rows[t % rows.len()].clone();
        let pool = store.pool().clone();
        let done = done.clone();
        handles.push(tokio::spawn(async move {
            let mut seq: u64 = run | ((t as u64) << 32);
            while Instant::now() < deadline {
                seq += 1;
                match &pool {
                    Pool::Postgres(p) => cycle!(p, true, conn, user, seq),
                    Pool::Sqlite(p) => cycle!(p, false, conn, user, seq),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// apalis's own floor: `jobs` no-op jobs on a queue with no work in the bench (`deliver`),
/// drained by this process's workers with the bench's queue settings. Returns jobs per second
/// over the drain (or over `limit`, if it ends first).
pub async fn apalis_noop(
    store: &Store,
    settings: QueueSettings,
    jobs: usize,
    limit: Duration,
) -> anyhow::Result<f64> {
    let queue = JobQueue::setup(store, settings).await?;
    let batch: Vec<StepJob> = (0..jobs)
        .map(|i| StepJob::new(Step::Deliver, format!("noop-{i}"), 1))
        .collect();
    for chunk in batch.chunks(1000) {
        queue.push(chunk).await?;
    }
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    let started = Instant::now();
    let workers = queue.start_workers(&[Step::Deliver], move |_job: StepJob| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    });
    while done.load(Ordering::Relaxed) < jobs as u64 && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    workers.shutdown().await;
    // Leave apalis's table as the workers will find it: empty of our jobs.
    let _ = queue.purge_finished(Duration::ZERO).await;
    Ok(rate)
}
