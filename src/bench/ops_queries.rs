//! `tributary bench --ops-queries`: the operators' reads at fleet scale (docs/operations.md#stuck):
//! N active connections seeded (sealed tokens, as the transfer bench seeds them), a few of
//! them made stuck, paused, erring or failing by SQL the way the stuck tests make them, then
//! each query of `GET /v1/ops/connections` (every filter, first page and a later page) and
//! the summary run `--ops-rounds` times each; the table gives the median and the slowest in
//! milliseconds. Nothing else runs meanwhile: this measures the queries and their indexes.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use engine::{
    Store,
    crypto::Keyring,
    state::State,
    store::{ConnectionFilter, StoreOptions, StuckFilter, StuckReason, StuckSettings},
};
use rand::RngCore as _;
use sandbox::Sandbox;
use sea_orm::{ConnectionTrait, Statement};

use super::{BackendArg, BenchArgs, PARTNER, db::BenchDb, seed, seed::Group};

/// How many connections each condition is made for.
const MARKED: usize = 200;

/// Timings of one query, in milliseconds.
struct Timed {
    name: String,
    rows: usize,
    median: f64,
    max: f64,
}

fn stats(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() - 1])
}

/// Marks `MARKED` connections (every `stride`-th from `offset`) with `assignments`.
async fn mark(
    store: &Store,
    ids: &[String],
    offset: usize,
    assignments: &str,
) -> anyhow::Result<()> {
    let backend = store.db().get_database_backend();
    let chosen: Vec<&String> = ids
        .iter()
        .skip(offset)
        .step_by(ids.len() / MARKED)
        .take(MARKED)
        .collect();
    for id in chosen {
        store
            .db()
            .execute_raw(Statement::from_sql_and_values(
                backend,
                format!("UPDATE connections SET {assignments} WHERE id = $1"),
                [id.clone().into()],
            ))
            .await?;
    }
    Ok(())
}

pub(super) async fn run(
    args: &BenchArgs,
    backend: BackendArg,
    n: usize,
    dir: &std::path::Path,
    sandbox: &Sandbox,
) -> anyhow::Result<()> {
    let db = BenchDb::create(backend, &args.database_url, dir).await?;
    let result = run_in(args, n, sandbox, &db).await;
    db.drop_db().await;
    let rows = result?;
    println!(
        "\nops queries, {} with {n} connections ({} rounds each)\n\n| query | rows | median ms | max ms |\n|---|---|---|---|",
        backend.name(),
        args.ops_rounds
    );
    for t in rows {
        println!(
            "| {} | {} | {:.1} | {:.1} |",
            t.name, t.rows, t.median, t.max
        );
    }
    Ok(())
}

async fn run_in(
    args: &BenchArgs,
    n: usize,
    sandbox: &Sandbox,
    db: &BenchDb,
) -> anyhow::Result<Vec<Timed>> {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let keyring = Keyring::new("k1", [("k1".to_owned(), key)])?;
    let options = StoreOptions {
        max_connections: 4,
        busy_timeout: Duration::from_secs(30),
        ..StoreOptions::default()
    };
    let store = Store::open_and_migrate(&db.url, &options, keyring.clone()).await?;
    let now = Utc::now();
    let seeding = Instant::now();
    let due_later = Some(now + TimeDelta::hours(1));
    let ids = seed::seed(
        &store,
        &keyring,
        sandbox,
        PARTNER,
        Group::Lag,
        n,
        now,
        due_later,
    )
    .await?;
    eprintln!(
        "bench: seeded {n} connections in {:.0} s",
        seeding.elapsed().as_secs_f64()
    );
    let t = |d: TimeDelta| (now + d).to_rfc3339();
    // Each condition on its own connections, as the stuck tests make them.
    mark(
        &store,
        &ids,
        1,
        &format!("next_sync_at = '{}'", t(-TimeDelta::hours(3))),
    )
    .await?;
    mark(&store, &ids, 2, "paused = TRUE").await?;
    mark(&store, &ids, 3, "last_error_code = 'partner_unavailable'").await?;
    mark(
        &store,
        &ids,
        4,
        &format!(
            "failing_since = '{}', failure_count = 9",
            t(-TimeDelta::hours(20))
        ),
    )
    .await?;
    mark(&store, &ids, 5, "idle_runs = 30").await?;
    mark(
        &store,
        &ids,
        6,
        &format!(
            "sync_lease_until = '{}', sync_lease_token = 'left-behind', next_sync_at = '{}'",
            t(-TimeDelta::hours(1)),
            t(-TimeDelta::hours(2))
        ),
    )
    .await?;
    if let Some(sql) = vacuum(&store) {
        store.db().execute_unprepared(sql).await?;
    }

    let settings = StuckSettings::default();
    let filters: Vec<(&str, ConnectionFilter)> = vec![
        ("no filter", ConnectionFilter::default()),
        (
            "state=active",
            ConnectionFilter {
                state: Some(State::Active),
                ..Default::default()
            },
        ),
        (
            "state=failed (none)",
            ConnectionFilter {
                state: Some(State::Failed),
                ..Default::default()
            },
        ),
        (
            "partner",
            ConnectionFilter {
                partner: Some(engine::ids::PartnerName::parse(PARTNER)?),
                ..Default::default()
            },
        ),
        (
            "user",
            ConnectionFilter {
                user: Some(engine::ids::UserId::parse(&Group::Lag.user(n / 2))?),
                ..Default::default()
            },
        ),
        (
            "paused=true",
            ConnectionFilter {
                paused: Some(true),
                ..Default::default()
            },
        ),
        (
            "error=partner_unavailable",
            ConnectionFilter {
                error: Some("partner_unavailable".to_owned()),
                ..Default::default()
            },
        ),
        (
            "stuck=true",
            ConnectionFilter {
                stuck: Some(StuckFilter::Any),
                ..Default::default()
            },
        ),
    ];
    let mut filters = filters;
    for reason in StuckReason::ALL {
        let name: &'static str = Box::leak(format!("reason={}", reason.as_str()).into_boxed_str());
        filters.push((
            name,
            ConnectionFilter {
                stuck: Some(StuckFilter::Reason(reason)),
                ..Default::default()
            },
        ));
    }
    let mut out = Vec::new();
    for (name, filter) in &filters {
        let mut ms = Vec::new();
        let mut rows = 0;
        let mut after = None;
        for round in 0..args.ops_rounds {
            let started = Instant::now();
            let page = store
                .list_connections(filter, after, 100, Utc::now(), &settings)
                .await?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
            rows = page.connections.len();
            // Every other round reads the next page, so later pages are measured too.
            after = if round % 2 == 0 { page.next } else { None };
        }
        let (median, max) = stats(ms);
        out.push(Timed {
            name: (*name).to_owned(),
            rows,
            median,
            max,
        });
    }
    let mut ms = Vec::new();
    for _ in 0..args.ops_rounds {
        let started = Instant::now();
        store.ops_summary(Utc::now(), &settings).await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let (median, max) = stats(ms);
    out.push(Timed {
        name: "summary".to_owned(),
        rows: 1,
        median,
        max,
    });
    store.close().await;
    Ok(out)
}

/// Fresh statistics after the marking (PostgreSQL's planner would otherwise guess).
fn vacuum(store: &Store) -> Option<&'static str> {
    match store.backend() {
        engine::store::Backend::Postgres => Some("VACUUM ANALYZE connections"),
        engine::store::Backend::Sqlite => Some("ANALYZE"),
    }
}
