//! Starting the service: the store (migrated), the partners (the built-in sandbox when none are
//! configured), the HTTP API with the sandbox mounted beside it, and the background workers.
//! `Application` is what tests start in-process, on port 0, exactly as `tributary serve` does.
//!
//! # Layout
//! - `serve.rs`: [`Application`], and the `serve`, `worker` and `migrate` commands.
//! - `serve/builtin_sandbox.rs`: the partners configured against the built-in sandbox, and
//!   `tributary sandbox`.
//! - `serve/metrics.rs`: the Prometheus endpoint (`[metrics] listen`) and its gauge sampler.

mod builtin_sandbox;
mod metrics;

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use api::{
    ApiSettings,
    auth::{JwtKeys, Role},
};
use engine::{
    Store,
    jobs::{JobQueue, QueueSettings},
    store::{StoreError, StoreOptions},
};
use poem::{EndpointExt as _, Route, Server, listener::TcpAcceptor};
use sea_orm::DbErr;
use tokio::net::TcpListener;
use url::Url;
use workflows::{
    Partners, Settings, TransferSettings, Workers, Workflows, adapters::ResponseBudget,
    partner::PartnerConfig,
};

use sandbox::{Sandbox, SandboxConfig};

pub use self::builtin_sandbox::standalone as standalone_sandbox;
use self::{builtin_sandbox::sandbox_partners, metrics::MetricsEndpoint};
use crate::config::{Config, ConfigError, WorkersConfig};

/// A bound, ready-to-run service.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    public_url: Url,
    workflows: Workflows,
    sandbox: Option<Sandbox>,
    /// The partners were configured against the mounted sandbox (none were configured).
    sandbox_partners: bool,
    jwt: JwtKeys,
    /// The JWT secret is a development one (generated into the secrets file), so the banner may
    /// print a ready token: anyone who can read that file can mint one anyway.
    dev_jwt: bool,
    routes: Route,
    queue: JobQueue,
    workers: bool,
    dispatch: bool,
    /// The metrics listener, when `[metrics] listen` is set.
    metrics: Option<MetricsEndpoint>,
    /// The ops console's summaries over time, sampled while the server runs.
    console_samples: api::console::ConsoleSamples,
}

impl Application {
    /// Opens and migrates the database, binds the listener (port 0 picks a free port) and wires
    /// partners, API and sandbox. Nothing runs until [`Application::run_until_stopped`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, std::sync::Arc::new(engine::clock::SystemClock)).await
    }

    /// [`Application::build`] with an injected clock (tests move time instead of sleeping).
    pub async fn build_with_clock(
        config: Config,
        clock: engine::clock::SharedClock,
    ) -> anyhow::Result<Self> {
        config.check()?;
        let jwt = config.auth.jwt_keys()?;
        let store = open_store(&config).await?.with_clock(clock);

        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        let metrics = MetricsEndpoint::bind(&config.metrics).await?;
        let public_url = match &config.server.public_url {
            // Port 0 means "pick one": the URL must name the port actually bound.
            Some(url) if config.server.listen.port() != 0 => url.clone(),
            _ => Url::parse(&format!("http://{addr}/")).expect("socket address URL"),
        };
        let base = public_url.as_str().trim_end_matches('/').to_owned();

        let sandbox = config.sandbox.enabled.then(|| {
            let mut sandbox_config = SandboxConfig::new(
                Url::parse(&format!("{base}/sandbox")).expect("valid URL"),
                &public_url,
            );
            sandbox_config.auto_consent_user = config.sandbox.auto_consent_user.clone();
            Sandbox::new(sandbox_config)
        });

        let mut partner_configs = config.partners.clone();
        let sandbox_partners_used = partner_configs.is_empty() && sandbox.is_some();
        if let Some(sandbox) = sandbox.as_ref().filter(|_| sandbox_partners_used) {
            partner_configs.extend(sandbox_partners(sandbox, &base, &config.sandbox));
        } else if partner_configs.is_empty() {
            tracing::warn!("no partners are configured: connections cannot be made");
        }
        let partners = partners(partner_configs, &config.workers)?;
        let (workflows, queue) = components(&config, store, partners).await?;

        let mut routes = Route::new();
        if let Some(sandbox) = &sandbox {
            routes = routes.nest("/sandbox", sandbox.endpoint());
        }
        let api = api::routes(
            workflows.clone(),
            jwt.clone(),
            ApiSettings {
                return_url: config.server.return_url.clone(),
                max_body_bytes: config.server.max_body_bytes,
                server_url: base.clone(),
            },
        );
        // The ops console (docs/console.md#console), beside the API.
        let console_samples = api::console::ConsoleSamples::new();
        let console = api::console::routes(
            workflows.clone(),
            jwt.clone(),
            api::console::ConsoleSettings {
                public_url: public_url.clone(),
                max_body_bytes: config.server.max_body_bytes,
            },
            console_samples.clone(),
        );
        let routes = routes.nest(api::console::BASE, console).nest("/", api);

        Ok(Self {
            listener,
            addr,
            public_url,
            workflows,
            sandbox,
            sandbox_partners: sandbox_partners_used,
            dev_jwt: config
                .dev_secrets_in_use
                .as_ref()
                .is_some_and(|in_use| in_use.jwt_secret),
            jwt,
            routes,
            queue,
            workers: config.workers.enabled,
            dispatch: true,
            metrics,
            console_samples,
        })
    }

    /// Keeps the workers (maintenance, revocations) but does not dispatch transfers: tests
    /// that drive transfers step by step use it.
    pub fn without_dispatch(mut self) -> Self {
        self.dispatch = false;
        self
    }

    pub fn queue(&self) -> &JobQueue {
        &self.queue
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where `GET /metrics` is served, when `[metrics] listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::addr)
    }

    /// The base URL browsers and partners use, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_owned()
    }

    pub fn workflows(&self) -> &Workflows {
        &self.workflows
    }

    pub fn sandbox(&self) -> Option<&Sandbox> {
        self.sandbox.as_ref()
    }

    pub fn jwt(&self) -> &JwtKeys {
        &self.jwt
    }

    /// The start-up banner: where things are and, when the JWT secret is a development one, a
    /// ready operator token (never under a configured secret: see
    /// docs/configuration.md#production-like-configuration).
    pub fn banner(&self) -> String {
        let base = self.base_url();
        let mut out = format!(
            "\n  Tributary is listening on {base}\n\n  API docs (Swagger UI)  {base}/docs\n  OpenAPI document       {base}/openapi.json\n  Health / readiness     {base}/healthz  {base}/readyz\n  Ops console            {base}/ops\n"
        );
        if self.sandbox.is_some() {
            let note = if self.sandbox_partners {
                format!(
                    "  (partners {}, {})",
                    sandbox::DEFAULT_CGM_PARTNER_NAME,
                    sandbox::DEFAULT_PUMP_PARTNER_NAME
                )
            } else {
                "  (not used: partners are configured)".to_owned()
            };
            out.push_str(&format!("  Sandbox partner        {base}/sandbox/{note}\n"));
        }
        let partners: Vec<_> = self
            .workflows
            .partners()
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        let partners = if partners.is_empty() {
            "none configured".to_owned()
        } else {
            partners.join(", ")
        };
        out.push_str(&format!("  Partners               {partners}\n"));
        if let Some(addr) = self.metrics_addr() {
            out.push_str(&format!("  Metrics (Prometheus)   http://{addr}/metrics\n"));
        }
        if self.dev_jwt {
            // Never longer than the service accepts (`auth.max_token_lifetime_secs`).
            let ttl = Duration::from_secs(24 * 3600).min(self.jwt.max_lifetime());
            let token = self.jwt.mint(Role::Ops, "operator", ttl);
            let lifetime = match ttl.as_secs() {
                secs if secs % 3600 == 0 => format!("{} h", secs / 3600),
                secs => format!("{secs} s"),
            };
            out.push_str(&format!(
                "\n  Operator token ({lifetime}; mint others with `tributary token --role user --subject <id>`):\n    export TOKEN={token}\n    curl -H \"Authorization: Bearer $TOKEN\" {base}/v1/partners\n"
            ));
        } else {
            out.push_str(
                "\n  Bearer tokens are signed with the configured auth.jwt_secret; none is printed.\n",
            );
        }
        out
    }

    /// Serves HTTP and runs the background workers until `shutdown` completes, then drains
    /// in-flight requests (up to 10 s) and stops the workers.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let workers = self
            .workers
            .then(|| Workers::start(self.workflows.clone(), self.queue.clone(), self.dispatch));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let console_stopped = {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let console_sampler = tokio::spawn(
            self.console_samples
                .clone()
                .run(self.workflows.clone(), console_stopped),
        );
        let metrics = MetricsEndpoint::spawn(self.metrics, &self.workflows, stopped);
        let acceptor = TcpAcceptor::from_tokio(self.listener)?;
        let served = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                // Outside our router too: it would answer a path that is not UTF-8 in plain text.
                self.routes.with(api::LossyPaths).with(api::AccessLog),
                async move {
                    shutdown.await;
                    let _ = stop.send(true);
                },
                Some(Duration::from_secs(10)),
            )
            .await;
        if let Some(workers) = workers {
            workers.shutdown().await;
        }
        metrics.join().await;
        let _ = console_sampler.await;
        self.workflows.store().clone().close().await;
        served.context("HTTP server failed")
    }
}

/// The job queue and the workflows over one store.
async fn components(
    config: &Config,
    store: Store,
    partners: Partners,
) -> anyhow::Result<(Workflows, JobQueue)> {
    let workers = &config.workers;
    let poll = Duration::from_millis(workers.poll_interval_ms);
    let queue = JobQueue::setup(
        &store,
        QueueSettings {
            poll_interval: poll,
            batch_size: workers.batch_size,
            concurrency: workers.concurrency,
            ..QueueSettings::default()
        },
    )
    .await
    .context("cannot set up the job queue")?;
    let workflows = Workflows::new(store, partners, workflow_settings(config)?);
    Ok((workflows, queue))
}

/// The workflows' settings from the configuration (the server's, and the `ops` commands' view
/// of the same bounds). Must run inside a Tokio runtime (it builds the mail transport).
pub(crate) fn workflow_settings(config: &Config) -> anyhow::Result<Settings> {
    let workers = &config.workers;
    let (delivery, invitations) = crate::config::delivery(config)?;
    Ok(Settings {
        delivery,
        invitations,
        state_ttl: Duration::from_secs(config.oauth.state_ttl_secs),
        stale_refresh_after: Duration::from_secs(workers.stale_refresh_secs),
        transfer: TransferSettings {
            poll_interval: Duration::from_millis(workers.poll_interval_ms),
            dispatch_batch: workers.dispatch_batch,
            dispatch_lease: Duration::from_secs(workers.dispatch_lease_secs),
            fetch_lease: Duration::from_secs(workers.fetch_lease_secs),
            max_run: Duration::from_secs(workers.max_run_secs),
            ..TransferSettings::default()
        },
        runs: engine::store::RunRetention {
            keep_for: Duration::from_secs(workers.run_retention_days * 86_400),
            max_rows: workers.run_max_rows,
        },
        resume_spread: Duration::from_secs(workers.resume_spread_secs),
        bulk: workflows::BulkLimits {
            max_connections: workers.bulk_max_connections,
            ttl: Duration::from_secs(workers.bulk_plan_ttl_secs),
        },
        ..Settings::default()
    })
}

/// The partner clients; a partner the client refuses is a configuration error (exit 2).
fn partners(
    configs: impl IntoIterator<Item = (String, PartnerConfig)>,
    workers: &WorkersConfig,
) -> anyhow::Result<Partners> {
    let partners = Partners::from_config(configs).map_err(|(name, err)| {
        anyhow::Error::from(ConfigError::invalid(
            format!("partners.{name}"),
            err.to_string(),
        ))
    })?;
    Ok(partners.with_response_budget(ResponseBudget::new(workers.response_memory_bytes)))
}

/// Opens and migrates the store, saying first what it connects to (without the password).
async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = open_unmigrated(config).await?;
    store
        .migrate()
        .await
        .map_err(|e| anyhow::anyhow!("migration failed: {}", cause(e)))?;
    Ok(store)
}

async fn open_unmigrated(config: &Config) -> anyhow::Result<Store> {
    tracing::info!("opening the database {}", redact_url(&config.database.url));
    open_configured(config, config.database.max_connections).await
}

/// The configuration's store, not migrated, with a pool of at most `max_connections`: the one
/// place the database settings become [`StoreOptions`] (the service and the `ops` tools).
pub(crate) async fn open_configured(
    config: &Config,
    max_connections: u32,
) -> anyhow::Result<Store> {
    let db = &config.database;
    let options = StoreOptions {
        max_connections,
        busy_timeout: Duration::from_millis(db.busy_timeout_ms),
        connect_timeout: Duration::from_secs(db.connect_timeout_secs),
    };
    Store::open(&db.url, &options, config.crypto.keyring()?)
        .await
        .map(|store| store.with_step_runs(config.workers.record_step_runs))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open the database {}: {}",
                redact_url(&db.url),
                cause(e)
            )
        })
}

/// A store error's message once: its `Display` already contains its source, so printing the
/// chain as well would repeat the cause.
fn cause(error: StoreError) -> String {
    match error {
        StoreError::Db(DbErr::Custom(message)) => message,
        other => other.to_string(),
    }
}

/// The URL with its password, if any, replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested; draining");
}

/// `tributary serve`.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    eprintln!("{}", app.banner());
    app.run_until_stopped(shutdown_signal()).await
}

/// `tributary worker`: transfers and maintenance without the HTTP API. Partners are configured
/// as for `serve` (the sandbox partners point at the `serve` process's `/sandbox`).
pub async fn worker(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let public_url = config
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| config.server.derived_public_url());
    let base = public_url.as_str().trim_end_matches('/').to_owned();
    let mut partner_configs = config.partners.clone();
    if partner_configs.is_empty() && config.sandbox.enabled {
        let sandbox = Sandbox::new(SandboxConfig::new(
            Url::parse(&format!("{base}/sandbox")).expect("valid URL"),
            &public_url,
        ));
        partner_configs.extend(sandbox_partners(&sandbox, &base, &config.sandbox));
    }
    let partners = partners(partner_configs, &config.workers)?;
    let (workflows, queue) = components(&config, store, partners).await?;
    let metrics = MetricsEndpoint::bind(&config.metrics).await?;
    if let Some(metrics) = &metrics {
        eprintln!("metrics at http://{}/metrics", metrics.addr());
    }
    eprintln!("worker {} started", queue.worker_name());
    let workers = Workers::start(workflows.clone(), queue, true);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics = MetricsEndpoint::spawn(metrics, &workflows, stopped);
    shutdown_signal().await;
    let _ = stop.send(true);
    workers.shutdown().await;
    metrics.join().await;
    workflows.store().clone().close().await;
    Ok(())
}

/// `tributary migrate`.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    eprintln!("migrations applied to {}", redact_url(&config.database.url));
    store.close().await;
    Ok(())
}
