//! `tributary bench --refresh`: do token refreshes keep up? The throughput connections get
//! tokens of `--token-lifetime-secs` whose refresh times fall uniformly over the next lifetime
//! (the steady state of a fleet connected at random times), the sandbox issues tokens of the
//! same lifetime, and the worker processes run as in production: refresh due times claimed in
//! leases, refresh jobs, rotation at the sandbox. Over the measuring interval: refreshes/s
//! achieved against the rate the fleet needs (N ÷ lifetime), the most connections refreshed late
//! at any moment (a token with less than half its refresh margin left; a claimed refresh moves
//! `refresh_due_at`, so due times cannot tell) and the most whose token expired before its
//! refresh, which must stay 0. PostgreSQL only (the spread is one SQL statement).

use std::{
    path::Path,
    process::Child,
    time::{Duration, Instant},
};

use engine::Store;
use sandbox::Sandbox;
use sea_orm::{ConnectionTrait as _, DbBackend, Statement};

use super::{BenchArgs, Outcome, seed::Group};

/// Refresh results of one configuration.
#[derive(Debug, Default, Clone)]
pub(super) struct RefreshOutcome {
    pub(super) lifetime_secs: u64,
    pub(super) needed_per_sec: f64,
    pub(super) achieved_per_sec: f64,
    pub(super) refreshes: u64,
    pub(super) max_late: u64,
    pub(super) max_expired: u64,
    /// Worker processes SIGKILLed during the run (`--kill-every-secs`).
    pub(super) kills: u64,
    /// Refreshes whose outcome a kill left unknown (repaired from `refreshing`), and of those,
    /// connections the partner then revoked for reuse of the spent refresh token.
    pub(super) outcome_unknown: u64,
    pub(super) reuse_revoked: u64,
}

/// The running worker processes, for `--kill-every-secs`.
pub(super) struct Workers<'a> {
    pub(super) children: &'a mut Vec<Child>,
    pub(super) exe: &'a Path,
    pub(super) config: &'a Path,
    pub(super) dir: &'a Path,
}

/// The refresh margin for a token of `lifetime` (engine::schedule::refresh: a quarter, at most
/// 5 minutes).
fn margin_secs(lifetime: u64) -> u64 {
    (lifetime / 4).min(300)
}

/// Spreads the throughput group's refresh times uniformly over the next `lifetime` seconds,
/// each token expiring one margin after its refresh time, and has the sandbox issue tokens of
/// that lifetime.
pub(super) async fn spread(store: &Store, sandbox: &Sandbox, lifetime: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        store.db().get_database_backend() == DbBackend::Postgres,
        "bench --refresh runs on PostgreSQL only"
    );
    let margin = margin_secs(lifetime);
    let sql = format!(
        "WITH r AS (SELECT id, random() * {lifetime} AS x FROM connections WHERE user_id LIKE '{}%')
         UPDATE connections c SET
            refresh_due_at = now() + r.x * interval '1 second',
            token_expires_at = now() + (r.x + {margin}) * interval '1 second'
         FROM r WHERE c.id = r.id",
        Group::Throughput.prefix()
    );
    store
        .db()
        .execute_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await?;
    sandbox
        .faults()
        .update(|f| f.access_token_ttl_secs = Some(lifetime));
    Ok(())
}

async fn count(store: &Store, condition: &str) -> anyhow::Result<u64> {
    count_where(
        store,
        &format!("state IN ('active', 'refreshing') AND {condition}"),
    )
    .await
}

async fn count_where(store: &Store, condition: &str) -> anyhow::Result<u64> {
    let sql = format!("SELECT count(*) AS n FROM connections WHERE {condition}");
    let row = store
        .db()
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await?
        .ok_or_else(|| anyhow::anyhow!("count returned no row"))?;
    let n: i64 = row.try_get("", "n")?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Samples refreshes, late and expired connections every 2 s for `args.seconds`.
pub(super) async fn measure(
    args: &BenchArgs,
    store: &Store,
    sandbox: &Sandbox,
    n: usize,
    workers: Workers<'_>,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let lifetime = args.token_lifetime_secs;
    let half_margin = margin_secs(lifetime) / 2;
    // Wait for the workers' first refresh (process start-up). The sandbox's statistics count
    // its live grants, a scan: once a second.
    let started = Instant::now();
    let first = loop {
        let refreshes = sandbox.stats().cgm.refreshes;
        if refreshes > 0 {
            break refreshes;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "no refresh within 120 s: see the worker logs"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let t0 = Instant::now();
    let mut result = RefreshOutcome {
        lifetime_secs: lifetime,
        needed_per_sec: n as f64 / lifetime as f64,
        ..RefreshOutcome::default()
    };
    let mut last_kill = Instant::now();
    while t0.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(every) = args.kill_every_secs
            && last_kill.elapsed() >= Duration::from_secs(every)
            && !workers.children.is_empty()
        {
            let victim = result.kills as usize % workers.children.len();
            let mut child = workers.children.remove(victim);
            let _ = child.kill();
            let _ = child.wait();
            workers.children.push(super::spawn_worker(
                workers.exe,
                workers.config,
                workers.dir,
            )?);
            result.kills += 1;
            last_kill = Instant::now();
        }
        let late = format!("token_expires_at < now() + interval '{half_margin} seconds'");
        let late = count(store, &late).await?;
        let expired = count(store, "token_expires_at < now()").await?;
        result.max_late = result.max_late.max(late);
        result.max_expired = result.max_expired.max(expired);
    }
    if result.kills > 0 {
        // Let the last kills' stale refreshes be repaired (10 s) and retried.
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    result.outcome_unknown = count_where(store, "refresh_outcome_unknown_at IS NOT NULL").await?;
    result.reuse_revoked = count_where(
        store,
        "state = 'revoked' AND last_error_code = 'refresh_token_reuse_suspected'",
    )
    .await?;
    result.refreshes = sandbox.stats().cgm.refreshes - first;
    result.achieved_per_sec = result.refreshes as f64 / t0.elapsed().as_secs_f64();
    outcome.refresh = Some(result);
    Ok(())
}
