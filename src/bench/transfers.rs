//! The transfer phases of `tributary bench`: cycles/s over a saturated backlog, then
//! scheduling lag at a paced load.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use engine::Store;

use super::{BenchArgs, Outcome, seed, seed::Group};

/// Makes the throughput backlog due and counts completions once per second.
pub(super) async fn measure(
    args: &BenchArgs,
    store: &Store,
    n: usize,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    use engine::store::entities::connection;
    use sea_orm::{ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    connection::Entity::update_many()
        .set(connection::ActiveModel {
            next_sync_at: Set(Some(Utc::now())),
            ..Default::default()
        })
        .filter(connection::Column::UserId.starts_with(Group::Throughput.prefix()))
        .exec(store.db())
        .await?;
    // Wait for the first completed cycle (process start-up, migrations check, first claim).
    let started = Instant::now();
    loop {
        let (done, _) = seed::progress(store).await?;
        if done > 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("no cycle completed within 120 s: see the worker logs");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let (first, _) = seed::progress(store).await?;
    let cpu0 = super::cpu::CpuTimes::now();
    let t0 = Instant::now();
    let mut last = (t0, first);
    let low_water = (n as u64) * 95 / 100;
    // Counting is a scan of the connections table: at a million rows, once a second would be a
    // measurable share of the database's CPU, so large N are sampled less often.
    let every = Duration::from_secs((n as u64 / 200_000).clamp(1, 5));
    while t0.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(every).await;
        let (done, _) = seed::progress(store).await?;
        last = (Instant::now(), done);
        if done >= low_water {
            outcome.backlog_ran_out = true;
            break;
        }
    }
    let cpu = super::cpu::CpuTimes::now().per_cycle(&cpu0, last.1 - first);
    outcome.cpu = Some(cpu);
    let secs = last.0.duration_since(t0).as_secs_f64();
    outcome.measured_secs = secs;
    outcome.cycles_per_sec = (last.1 - first) as f64 / secs.max(0.001);
    Ok(())
}

/// Parks the rest of the backlog, then offers `lag_load × cycles/s` due connections at evenly
/// spaced due times and reads due → finished for each.
pub(super) async fn lag_phase(
    args: &BenchArgs,
    store: &Store,
    ids: &[String],
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    seed::park_backlog(store).await?;
    // Let claimed and queued throughput jobs drain.
    let mut previous = u64::MAX;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (done, _) = seed::progress(store).await?;
        if done == previous {
            break;
        }
        previous = done;
    }
    let rate = (outcome.cycles_per_sec * args.lag_load).max(1.0);
    let count = ((rate * args.lag_seconds as f64) as usize).clamp(1, ids.len());
    let start = Utc::now() + TimeDelta::seconds(2);
    let due: Vec<(String, DateTime<Utc>)> = ids[..count]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let offset = TimeDelta::microseconds((i as f64 / rate * 1e6) as i64);
            (id.clone(), start + offset)
        })
        .collect();
    seed::schedule(store, &due).await?;
    let end = due.last().map_or(start, |d| d.1);
    let wait = (end - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(10);
    tokio::time::sleep(wait).await;
    let finished: std::collections::HashMap<String, Option<DateTime<Utc>>> =
        seed::last_syncs(store, Group::Lag)
            .await?
            .into_iter()
            .collect();
    let mut lags: Vec<f64> = Vec::new();
    let mut unfinished = 0;
    for (id, at) in &due {
        match finished.get(id).copied().flatten() {
            Some(done) => lags.push((done - *at).num_microseconds().unwrap_or(0) as f64 / 1e3),
            None => unfinished += 1,
        }
    }
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        (!lags.is_empty()).then(|| lags[((lags.len() as f64 * p) as usize).min(lags.len() - 1)])
    };
    outcome.lag_rate = rate;
    outcome.lag_count = count;
    outcome.lag_unfinished = unfinished;
    outcome.lag_p50_ms = pct(0.50);
    outcome.lag_p99_ms = pct(0.99);
    outcome.lag_max_ms = lags.last().copied();
    Ok(())
}
