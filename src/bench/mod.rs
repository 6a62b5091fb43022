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

mod floor;
/// The hostile partner as a configured partner (also used by the integration tests).
pub mod hostile;
/// `tributary bench-memory`.
pub mod memory;
/// Bulk seeding of active connections with sandbox grants (also used by the multi-process
/// integration test, `tests/processes.rs`).
pub mod seed;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    str::FromStr as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use clap::{Args, ValueEnum};
use engine::{Store, crypto::Keyring, jobs::QueueSettings, store::StoreOptions};
use rand::RngCore as _;
use sandbox::{Flavor, Sandbox, SandboxConfig};
use url::Url;

use self::seed::Group;

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    Postgres,
    Sqlite,
}

impl BackendArg {
    fn name(self) -> &'static str {
        match self {
            BackendArg::Postgres => "PostgreSQL",
            BackendArg::Sqlite => "SQLite",
        }
    }
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

    let mut outcomes = Vec::new();
    for backend in &args.backend {
        for &n in &args.connections {
            for (k, &processes) in args.processes.iter().enumerate() {
                let floors = !args.no_floors && k == 0;
                eprintln!(
                    "bench: {} N={n} processes={processes}{}",
                    backend.name(),
                    if floors { " (+ floors)" } else { "" }
                );
                let outcome = run_one(
                    &args,
                    *backend,
                    n,
                    processes,
                    floors,
                    work.path(),
                    &exe,
                    &sandbox,
                    frozen,
                )
                .await
                .with_context(|| format!("{} N={n} processes={processes}", backend.name()))?;
                eprintln!("bench: {outcome:?}");
                outcomes.push(outcome);
            }
        }
    }
    let _ = stop_tx.send(());
    let _ = sandbox_task.await;

    println!("{}", report(&args, &outcomes));
    if args.keep {
        let kept = work.keep();
        eprintln!("bench: kept {}", kept.display());
    }
    Ok(())
}

/// A fresh database for one configuration, dropped on [`BenchDb::drop_db`].
struct BenchDb {
    url: String,
    admin: Option<(String, String)>,
}

impl BenchDb {
    async fn create(backend: BackendArg, admin_url: &str, dir: &Path) -> anyhow::Result<Self> {
        let tag = &uuid_suffix();
        match backend {
            BackendArg::Sqlite => Ok(Self {
                url: format!("sqlite://{}", dir.join(format!("bench-{tag}.db")).display()),
                admin: None,
            }),
            BackendArg::Postgres => {
                use sqlx::{Connection as _, Executor as _};
                let name = format!("tributary_bench_{tag}");
                let mut conn = sqlx::PgConnection::connect(admin_url)
                    .await
                    .context("cannot connect to the PostgreSQL server")?;
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await?;
                let mut url = Url::parse(admin_url)?;
                url.set_path(&format!("/{name}"));
                Ok(Self {
                    url: url.to_string(),
                    admin: Some((admin_url.to_owned(), name)),
                })
            }
        }
    }

    async fn drop_db(&self) {
        use sqlx::{Connection as _, Executor as _};
        if let Some((admin, name)) = &self.admin
            && let Ok(mut conn) = sqlx::PgConnection::connect(admin).await
        {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await;
        }
    }
}

fn uuid_suffix() -> String {
    let mut bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut bytes);
    hex_lower(&bytes)
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    args: &BenchArgs,
    backend: BackendArg,
    n: usize,
    processes: usize,
    floors: bool,
    dir: &Path,
    exe: &Path,
    sandbox: &Sandbox,
    frozen: DateTime<Utc>,
) -> anyhow::Result<Outcome> {
    let db = BenchDb::create(backend, &args.database_url, dir).await?;
    let result = run_in(
        args, backend, n, processes, floors, dir, exe, sandbox, frozen, &db,
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
    floors: bool,
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
    eprintln!(
        "bench:   seeded {} connections in {:.1}s",
        n + lag_n + 64,
        seeding.elapsed().as_secs_f64()
    );

    if floors {
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
    let config = write_worker_config(args, dir, &db.url, &key, sandbox)?;
    let mut children = Vec::new();
    for p in 0..processes {
        let log = std::fs::File::create(dir.join(format!("worker-{}-{p}.log", uuid_suffix())))?;
        let child = Command::new(exe)
            .arg("--config")
            .arg(&config)
            .arg("worker")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start a worker process")?;
        children.push(child);
    }
    let measured = measure(args, &store, n, &mut outcome).await;
    let lag = match &measured {
        Ok(()) => lag_phase(args, &store, &lag_ids, &mut outcome).await,
        Err(_) => Ok(()),
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
    store.close().await;
    Ok(outcome)
}

/// Makes the throughput backlog due and counts completions once per second.
async fn measure(
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
    let secs = last.0.duration_since(t0).as_secs_f64();
    outcome.measured_secs = secs;
    outcome.cycles_per_sec = (last.1 - first) as f64 / secs.max(0.001);
    Ok(())
}

/// Parks the rest of the backlog, then offers `lag_load × cycles/s` due connections at evenly
/// spaced due times and reads due → finished for each.
async fn lag_phase(
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

/// The configuration every worker process loads: the bench database, the bench keyring, the
/// sandbox CGM partner at the bench's sandbox with overlap 0 and no client-side rate limit.
fn write_worker_config(
    args: &BenchArgs,
    dir: &Path,
    url: &str,
    key: &[u8; 32],
    sandbox: &Sandbox,
) -> anyhow::Result<PathBuf> {
    let toml = worker_config_toml(
        url,
        key,
        sandbox,
        &WorkerToml {
            partner: PARTNER,
            database: &format!("max_connections = {}\nbusy_timeout_ms = 30000", args.pool),
            workers: &format!(
                "concurrency = {}\nbatch_size = {}\npoll_interval_ms = {}\ndispatch_batch = 500",
                args.concurrency, args.batch_size, args.poll_ms
            ),
            log_filter: "warn,sqlx=error",
            partner_settings: "requests_per_second = 1000000.0\ntransfer.overlap_secs = 0",
        },
    )?;
    let path = dir.join(format!("worker-{}.toml", uuid_suffix()));
    let mut file = std::fs::File::create(&path)?;
    file.write_all(toml.as_bytes())?;
    Ok(path)
}

/// What differs between the worker configurations [`worker_config_toml`] writes: extra keys
/// (TOML lines) of `[database]`, `[workers]` and the partner's table, and the log filter.
#[derive(Debug, Clone, Copy)]
pub struct WorkerToml<'a> {
    /// The partner's name (its table is `[partners.<partner>]`).
    pub partner: &'a str,
    pub database: &'a str,
    pub workers: &'a str,
    pub log_filter: &'a str,
    pub partner_settings: &'a str,
}

/// A `tributary worker` configuration against database `url` and an in-process sandbox's CGM
/// partner: no dev secrets, a fresh JWT secret, the keyring `k1 = key`, the sandbox not
/// mounted (the bench and `tests/processes.rs` start workers with it).
pub fn worker_config_toml(
    url: &str,
    key: &[u8; 32],
    sandbox: &Sandbox,
    extra: &WorkerToml<'_>,
) -> anyhow::Result<String> {
    let urls = sandbox.urls(Flavor::Cgm);
    let client = sandbox
        .config()
        .clients
        .iter()
        .find(|c| c.flavor == Flavor::Cgm)
        .context("the sandbox has a CGM client")?;
    let auth = match client.auth_method {
        sandbox::ClientAuthMethod::Basic => "client_secret_basic",
        sandbox::ClientAuthMethod::Post => "client_secret_post",
    };
    let mut jwt = [0u8; 32];
    rand::rng().fill_bytes(&mut jwt);
    let b64 = base64::engine::general_purpose::STANDARD;
    let WorkerToml {
        partner,
        database,
        workers,
        log_filter,
        partner_settings,
    } = extra;
    Ok(format!(
        r#"dev_secrets = false

[database]
url = "{url}"
{database}

[auth]
jwt_secret = "{jwt}"

[crypto]
active_key_id = "k1"
[crypto.keys]
k1 = "{key}"

[sandbox]
enabled = false

[workers]
{workers}

[log]
filter = "{log_filter}"

[partners.{partner}]
display_name = "Sandbox CGM"
kind = "dexcom"
client_id = "{client_id}"
client_secret = "{client_secret}"
client_auth = "{auth}"
authorize_url = "{authorize}"
token_url = "{token}"
revoke_url = "{revoke}"
redirect_url = "http://127.0.0.1:1/v1/oauth/{partner}/callback"
scopes = ["offline_access"]
api_base_url = "{api}"
{partner_settings}
"#,
        jwt = b64.encode(jwt),
        key = b64.encode(key),
        client_id = client.client_id,
        client_secret = client.client_secret,
        authorize = urls.authorize,
        token = urls.token,
        revoke = urls.revoke,
        api = urls.api_base,
    ))
}

/// Peak resident set size of a process, from `/proc/<pid>/status` (`VmHWM`), in MiB.
fn vm_hwm_mib(pid: u32) -> f64 {
    proc_status_mib(&pid.to_string(), "VmHWM:")
}

/// A memory field of `/proc/<pid>/status` (`pid` may be `self`), in MiB; NaN when unreadable.
fn proc_status_mib(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| f64::from_str(kb).ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// SIGTERM (graceful), then SIGKILL after 5 s.
async fn stop_children(children: Vec<Child>) {
    for child in &children {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for mut child in children {
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
}

/// The results as Markdown (pasted into BENCHMARKS.md).
fn report(args: &BenchArgs, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "settings: seconds={} warmup={} lag_seconds={} lag_load={} concurrency={} batch_size={} pool={} poll_ms={}\n\n",
        args.seconds, args.warmup, args.lag_seconds, args.lag_load, args.concurrency,
        args.batch_size, args.pool, args.poll_ms
    ));
    out.push_str("| backend | N | procs | cycles/s | measured s | records/cycle | errors | lag load /s | lag p50 ms | lag p99 ms | lag max ms | unfinished | peak RSS MiB per worker |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for o in outcomes {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0}{} | {:.1} | {:.1} | {} | {:.0} | {} | {} | {} | {}/{} | {} |\n",
            o.backend,
            o.n,
            o.processes,
            o.cycles_per_sec,
            if o.backlog_ran_out {
                " (backlog ran out)"
            } else {
                ""
            },
            o.measured_secs,
            o.records_per_cycle,
            o.errors,
            o.lag_rate,
            opt(o.lag_p50_ms, 0),
            opt(o.lag_p99_ms, 0),
            opt(o.lag_max_ms, 0),
            o.lag_unfinished,
            o.lag_count,
            o.rss_mib
                .iter()
                .map(|m| format!("{m:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push_str("\nfloors (same database, before the workers start):\n\n");
    out.push_str("| backend | N | raw SQL 1 loop /s | raw SQL C loops /s | apalis no-op jobs/s |\n|---|---:|---:|---:|---:|\n");
    for o in outcomes.iter().filter(|o| o.floor_sql_1.is_some()) {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            o.backend,
            o.n,
            opt(o.floor_sql_1, 0),
            opt(o.floor_sql_c, 0),
            opt(o.floor_apalis, 0)
        ));
    }
    out.push_str(
        "\nratios (cycles/s ÷ floor, same backend and N, floors from that N's first run):\n\n",
    );
    out.push_str(
        "| backend | N | procs | ÷ raw SQL C loops | ÷ apalis no-op |\n|---|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        if let Some(f) = outcomes
            .iter()
            .find(|f| f.backend == o.backend && f.n == o.n && f.floor_sql_1.is_some())
        {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                o.backend,
                o.n,
                o.processes,
                opt(f.floor_sql_c.map(|x| o.cycles_per_sec / x), 2),
                opt(f.floor_apalis.map(|x| o.cycles_per_sec / x), 2)
            ));
        }
    }
    out
}
