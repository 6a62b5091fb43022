//! `tributary bench`: the benchmark harness (see BENCHMARKS.md for method and results).
//!
//! One run, per backend and per worker-process count: a fresh database; N connections seeded
//! (all due, cursor one hour behind a frozen sandbox clock, overlap 0, so one cycle reads
//! exactly one hour: 12 EGVs); `tributary worker` child processes started against it; completed
//! cycles counted from `last_sync_at` over a measuring interval after warm-up; then a paced
//! phase for scheduling lag; peak RSS (VmHWM) of each worker. Before the workers start, the
//! floors on the same database: the raw-SQL loop writing the same rows, and apalis no-op jobs.
//!
//! **Development only**: it creates and drops its own databases and runs the sandbox in-process.

mod ab;
mod cpu;
mod db;
mod floor;
/// The hostile partner as a configured partner (also used by the integration tests).
pub mod hostile;
/// `tributary bench-memory`.
pub mod memory;
mod ops_queries;
mod refresh;
mod report;
/// Bulk seeding of active connections with sandbox grants (also used by the multi-process
/// integration test, `tests/processes/`).
pub mod seed;
mod transfers;
mod webhooks;
mod workers;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use clap::Args;
use engine::{Store, crypto::Keyring, jobs::QueueSettings, store::StoreOptions};
use rand::RngCore as _;
use sandbox::{Sandbox, SandboxConfig};
use url::Url;

pub use self::db::BackendArg;
pub use self::workers::{WorkerToml, worker_config_toml};
use self::{
    db::BenchDb,
    report::report,
    seed::Group,
    transfers::{lag_phase, measure},
    workers::{proc_status_mib, spawn_worker, stop_children, vm_hwm_mib, write_worker_config},
};

/// Flags of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Backends to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "postgres,sqlite")]
    pub backend: Vec<BackendArg>,
    /// Connections seeded per configuration (comma-separated: each N is a separate run).
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    pub connections: Vec<usize>,
    /// Worker process counts (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub processes: Vec<usize>,
    /// Measuring interval for cycles/s, after warm-up.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Warm-up after the first completed cycle.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Length of the paced lag phase.
    #[arg(long, default_value_t = 15)]
    pub lag_seconds: u64,
    /// Offered load of the lag phase, as a fraction of the measured cycles/s.
    #[arg(long, default_value_t = 0.5)]
    pub lag_load: f64,
    /// PostgreSQL server (an existing database to connect to); the bench creates and drops
    /// its own database there. TLS is off by default: on loopback it would only measure
    /// encryption (sqlx's default `sslmode=prefer` negotiates TLS when the server offers it).
    #[arg(
        long,
        value_name = "URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
    )]
    pub database_url: String,
    /// Handlers per worker process (workers.concurrency, whose default this is).
    #[arg(long, default_value_t = QueueSettings::default().concurrency)]
    pub concurrency: usize,
    /// apalis batch size per worker process (workers.batch_size).
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Pool size per worker process (database.max_connections).
    #[arg(long, default_value_t = 20)]
    pub pool: u32,
    /// Worker and dispatcher poll interval (workers.poll_interval_ms).
    #[arg(long, default_value_t = 100)]
    pub poll_ms: u64,
    /// Skip the floors (raw SQL loop, apalis no-op).
    #[arg(long)]
    pub no_floors: bool,
    /// Keep the working directory (child logs, configs, SQLite files).
    #[arg(long)]
    pub keep: bool,
    /// Measure token refreshes instead of transfers (PostgreSQL; see src/bench/refresh.rs):
    /// the N connections' refreshes spread over one token lifetime, no transfer due.
    #[arg(long)]
    pub refresh: bool,
    /// Access-token lifetime for `--refresh`.
    #[arg(long, default_value_t = 3600)]
    pub token_lifetime_secs: u64,
    /// With `--refresh`: SIGKILL a worker process this often (and start a replacement), to
    /// count refreshes lost between the partner's answer and their commit. Lowers
    /// `workers.stale_refresh_secs` to 10 so the repair happens within the run.
    #[arg(long, value_name = "SECS")]
    pub kill_every_secs: Option<u64>,
    /// Seed connections whose daily late-change re-read is due (Dexcom events over the last 7
    /// days, docs/transfers.md#late-changes), so every measured cycle also does it: the
    /// re-read's cost is the difference to a run without.
    #[arg(long)]
    pub reread_due: bool,
    /// Run a webhook receiver in this process and configure it in every worker
    /// (`[webhooks.bench]`): each cycle then queues and delivers one `connection.data_synced`
    /// event. Reports the events accepted and the outbox rows still pending.
    #[arg(long)]
    pub webhooks: bool,
    /// For each configuration, run it without and with webhooks alternately, `--ab-rounds`
    /// times each, and report the rounds and the mean ratio.
    #[arg(long)]
    pub ab_webhooks: bool,
    /// For each configuration, run it without and with step runs recorded
    /// (`workers.record_step_runs`) alternately, `--ab-rounds` times each: what recording them
    /// costs transfers (docs/operations.md#step-runs).
    #[arg(long, conflicts_with = "ab_webhooks")]
    pub ab_runs: bool,
    /// Rounds of `--ab-webhooks` and `--ab-runs`.
    #[arg(long, default_value_t = 3)]
    pub ab_rounds: usize,
    /// Time the operators' queries (the list's filters, the summary) over N seeded
    /// connections instead of transfers (src/bench/ops_queries.rs).
    #[arg(long)]
    pub ops_queries: bool,
    /// Rounds of each `--ops-queries` query.
    #[arg(long, default_value_t = 20)]
    pub ops_rounds: usize,
}

/// One configuration's results.
#[derive(Debug, Default, Clone)]
struct Outcome {
    backend: &'static str,
    n: usize,
    processes: usize,
    cycles_per_sec: f64,
    measured_secs: f64,
    backlog_ran_out: bool,
    records_per_cycle: f64,
    errors: u64,
    lag_rate: f64,
    lag_p50_ms: Option<f64>,
    lag_p99_ms: Option<f64>,
    lag_max_ms: Option<f64>,
    lag_unfinished: usize,
    lag_count: usize,
    rss_mib: Vec<f64>,
    floor_sql_1: Option<f64>,
    floor_sql_c: Option<f64>,
    floor_apalis: Option<f64>,
    refresh: Option<refresh::RefreshOutcome>,
    /// `Some` for a run with webhooks.
    webhooks: Option<webhooks::HookOutcome>,
    /// Whether the workers recorded step runs, and how many they wrote.
    step_runs: bool,
    runs_written: u64,
    /// CPU per completed cycle over the throughput interval, by process group.
    cpu: Option<cpu::CpuPerCycle>,
}

const PARTNER: &str = "sandbox-cgm";

/// `tributary bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let work = tempfile::Builder::new()
        .prefix("tributary-bench-")
        .tempdir()
        .context("cannot create a working directory")?;
    eprintln!("bench: working directory {}", work.path().display());
    let exe = std::env::current_exe().context("cannot find the tributary binary")?;

    // The sandbox partner, in this process, on its own port, clock frozen so that every cycle
    // reads the same published hour: [T - 1h, T] with T between two 5-minute EGV slots.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sandbox_url = Url::parse(&format!("http://{addr}"))?;
    let sandbox = Sandbox::new(SandboxConfig::new(
        sandbox_url.clone(),
        &Url::parse("http://127.0.0.1:1")?,
    ));
    let frozen = Utc::now().duration_trunc(TimeDelta::minutes(5))? - TimeDelta::seconds(150);
    sandbox.set_now(Some(frozen));
    let served = sandbox.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sandbox_task = tokio::spawn(async move {
        let _ = sandbox::serve(served, listener, async move {
            let _ = stop_rx.await;
        })
        .await;
    });

    if args.ops_queries {
        for backend in &args.backend {
            for &n in &args.connections {
                ops_queries::run(&args, *backend, n, work.path(), &sandbox).await?;
            }
        }
        let _ = stop_tx.send(());
        let _ = sandbox_task.await;
        return Ok(());
    }
    let mut outcomes = Vec::new();
    for backend in &args.backend {
        for &n in &args.connections {
            for (k, &processes) in args.processes.iter().enumerate() {
                // With `--ab-webhooks` or `--ab-runs`: without, with, without, with, …
                // (webhooks, step runs) of each run.
                let plan = if args.ab_webhooks {
                    [(false, true), (true, true)].repeat(args.ab_rounds)
                } else if args.ab_runs {
                    [(args.webhooks, false), (args.webhooks, true)].repeat(args.ab_rounds)
                } else {
                    vec![(args.webhooks, true)]
                };
                for (i, &(hooks, runs)) in plan.iter().enumerate() {
                    let floors = !args.no_floors && k == 0 && i == 0;
                    eprintln!(
                        "bench: {} N={n} processes={processes}{}{}{}",
                        backend.name(),
                        if hooks { " webhooks" } else { "" },
                        if runs { "" } else { " no-step-runs" },
                        if floors { " (+ floors)" } else { "" }
                    );
                    let outcome = run_one(
                        &args,
                        *backend,
                        n,
                        processes,
                        (floors, hooks, runs),
                        work.path(),
                        &exe,
                        &sandbox,
                        frozen,
                    )
                    .await
                    .with_context(|| format!("{} N={n} processes={processes}", backend.name()))?;
                    eprintln!("bench: {outcome:?}");
                    if args.ab_webhooks || args.ab_runs {
                        let with = if args.ab_runs { runs } else { hooks };
                        eprintln!(
                            "bench:   round {} {}: {:.0} cycles/s",
                            i / 2 + 1,
                            if with { "with" } else { "without" },
                            outcome.cycles_per_sec
                        );
                    }
                    outcomes.push(outcome);
                }
            }
        }
    }
    let _ = stop_tx.send(());
    let _ = sandbox_task.await;

    println!("{}", report(&args, &outcomes));
    print!("{}", webhooks::report(&outcomes, args.ab_webhooks));
    if args.ab_runs {
        print!("{}", ab::report(&outcomes, "step runs", |o| o.step_runs));
    }
    if args.keep {
        let kept = work.keep();
        eprintln!("bench: kept {}", kept.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    args: &BenchArgs,
    backend: BackendArg,
    n: usize,
    processes: usize,
    (floors, hooks, runs): (bool, bool, bool),
    dir: &Path,
    exe: &Path,
    sandbox: &Sandbox,
    frozen: DateTime<Utc>,
) -> anyhow::Result<Outcome> {
    let hooks = if hooks {
        Some(webhooks::BenchHooks::start().await?)
    } else {
        None
    };
    let db = BenchDb::create(backend, &args.database_url, dir).await?;
    let result = run_in(
        args,
        backend,
        n,
        processes,
        (floors, hooks.as_ref(), runs),
        dir,
        exe,
        sandbox,
        frozen,
        &db,
    )
    .await;
    db.drop_db().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_in(
    args: &BenchArgs,
    backend: BackendArg,
    n: usize,
    processes: usize,
    (floors, hooks, runs): (bool, Option<&webhooks::BenchHooks>, bool),
    dir: &Path,
    exe: &Path,
    sandbox: &Sandbox,
    frozen: DateTime<Utc>,
    db: &BenchDb,
) -> anyhow::Result<Outcome> {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let keyring = Keyring::new("k1", [("k1".to_owned(), key)])?;
    let store = Store::open_and_migrate(
        &db.url,
        &StoreOptions {
            max_connections: 20,
            busy_timeout: Duration::from_secs(30),
            ..StoreOptions::default()
        },
        keyring.clone(),
    )
    .await?;
    let mut outcome = Outcome {
        backend: backend.name(),
        n,
        processes,
        step_runs: runs,
        ..Outcome::default()
    };
    let settings = QueueSettings {
        poll_interval: Duration::from_millis(args.poll_ms),
        batch_size: args.batch_size,
        concurrency: args.concurrency,
        ..QueueSettings::default()
    };

    let through = frozen - TimeDelta::hours(1);
    let seeding = Instant::now();
    let floor_rows = seed::seed(
        &store,
        &keyring,
        sandbox,
        PARTNER,
        Group::Floor,
        64,
        through,
        None,
    )
    .await?;
    let lag_n = (n / 5).max(1000);
    let lag_ids = seed::seed(
        &store,
        &keyring,
        sandbox,
        PARTNER,
        Group::Lag,
        lag_n,
        through,
        None,
    )
    .await?;
    // Not due until the workers run (their start-up is not measured).
    let _ = seed::seed(
        &store,
        &keyring,
        sandbox,
        PARTNER,
        Group::Throughput,
        n,
        through,
        Some(Utc::now() + TimeDelta::days(1)),
    )
    .await?;
    if args.reread_due {
        use engine::store::entities::connection;
        use sea_orm::{ActiveValue::Set, EntityTrait as _};
        connection::Entity::update_many()
            .set(connection::ActiveModel {
                reread_at: Set(None),
                contact_ciphertext: Set(None),
                contact_key_id: Set(None),
                idle_runs: Set(0),
                ..Default::default()
            })
            .exec(store.db())
            .await?;
    }
    eprintln!(
        "bench:   seeded {} connections in {:.1}s",
        n + lag_n + 64,
        seeding.elapsed().as_secs_f64()
    );

    if args.refresh {
        refresh::spread(&store, sandbox, args.token_lifetime_secs).await?;
    }
    if floors && !args.refresh {
        let rows: Vec<(String, String)> = floor_rows
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), Group::Floor.user(i)))
            .collect();
        let d = Duration::from_secs(5);
        outcome.floor_sql_1 = Some(floor::raw_sql(&store, &rows, 1, d).await?);
        outcome.floor_sql_c = Some(floor::raw_sql(&store, &rows, args.concurrency, d).await?);
        outcome.floor_apalis = Some(
            floor::apalis_noop(&store, settings.clone(), 20_000, Duration::from_secs(20)).await?,
        );
        eprintln!(
            "bench:   floors: raw SQL {:.0}/s (1 loop), {:.0}/s ({} loops); apalis no-op {:.0} jobs/s",
            outcome.floor_sql_1.unwrap_or_default(),
            outcome.floor_sql_c.unwrap_or_default(),
            args.concurrency,
            outcome.floor_apalis.unwrap_or_default()
        );
    } else {
        // The workers set up apalis's tables; do it once here so they do not race.
        engine::jobs::JobQueue::setup(&store, settings.clone()).await?;
    }
    let records_before = seed::record_count(&store).await?;

    // Worker processes.
    let config = write_worker_config(args, dir, &db.url, &key, sandbox, (hooks, runs))?;
    let mut children = Vec::new();
    for _ in 0..processes {
        children.push(spawn_worker(exe, &config, dir)?);
    }
    let (measured, lag) = if args.refresh {
        let workers = refresh::Workers {
            children: &mut children,
            exe,
            config: &config,
            dir,
        };
        let measured = refresh::measure(args, &store, sandbox, n, workers, &mut outcome).await;
        (measured, Ok(()))
    } else {
        let mut measured = measure(args, &store, n, &mut outcome).await;
        let mut hooked = webhooks::HookOutcome::default();
        if let (Some(_), Ok(())) = (hooks, &measured) {
            match webhooks::count(&store, Some("pending")).await {
                Ok(pending) => hooked.pending_after_measure = pending,
                Err(err) => measured = Err(err),
            }
        }
        let mut lag = match &measured {
            Ok(()) => lag_phase(args, &store, &lag_ids, &mut outcome).await,
            Err(_) => Ok(()),
        };
        if let (Some(hooks), Ok(()), Ok(())) = (hooks, &measured, &lag) {
            lag = hooks.drain(&store, &mut hooked).await;
        }
        outcome.webhooks = hooks.map(|_| hooked);
        (measured, lag)
    };
    outcome.rss_mib = children.iter().map(|c| vm_hwm_mib(c.id())).collect();
    stop_children(children).await;
    measured?;
    lag?;
    let records = seed::record_count(&store)
        .await?
        .saturating_sub(records_before);
    let (done, errors) = seed::progress(&store).await?;
    let lag_done = outcome.lag_count - outcome.lag_unfinished;
    outcome.records_per_cycle = records as f64 / (done as usize + lag_done).max(1) as f64;
    outcome.errors = errors;
    outcome.runs_written = seed::run_count(&store).await?;
    if let (Some(hooks), Some(hooked)) = (hooks, outcome.webhooks.as_mut()) {
        hooks.finish(&store, hooked).await?;
    }
    store.close().await;
    Ok(outcome)
}
