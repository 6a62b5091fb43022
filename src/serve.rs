//! Starting the service: the store (migrated), the partners (the built-in sandbox when none are
//! configured), the HTTP API with the sandbox mounted beside it, and the background workers.
//! `Application` is what tests start in-process, on port 0, exactly as `tributary serve` does.

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use api::{
    ApiSettings,
    auth::{JwtKeys, Role},
};
use engine::{
    Store,
    jobs::{JobQueue, QueueSettings},
    store::StoreOptions,
};
use poem::{EndpointExt as _, Route, Server, listener::TcpAcceptor};
use sandbox::{Flavor, Sandbox, SandboxConfig};
use tokio::net::TcpListener;
use url::Url;
use workflows::{
    Partners, Settings, TransferSettings, Workers, Workflows,
    partner::{ClientAuth, PartnerConfig, PartnerKind},
};

use crate::config::Config;

/// A bound, ready-to-run service.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    public_url: Url,
    workflows: Workflows,
    sandbox: Option<Sandbox>,
    jwt: JwtKeys,
    routes: Route,
    queue: JobQueue,
    workers: bool,
    dispatch: bool,
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
        let keyring = config.crypto.keyring()?;
        let jwt = config.auth.jwt_keys()?;
        let store = Store::open_and_migrate(
            &config.database.url,
            &StoreOptions {
                max_connections: config.database.max_connections,
                busy_timeout: Duration::from_millis(config.database.busy_timeout_ms),
            },
            keyring,
        )
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                redact_url(&config.database.url)
            )
        })?
        .with_clock(clock);

        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let addr = listener.local_addr()?;
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
        if partner_configs.is_empty() {
            match &sandbox {
                Some(sandbox) => {
                    partner_configs.extend(sandbox_partners(sandbox, &base, &config.sandbox));
                }
                None => tracing::warn!("no partners are configured: connections cannot be made"),
            }
        }
        let partners = Partners::from_config(partner_configs).map_err(|(name, err)| {
            anyhow::anyhow!("invalid configuration: partners.{name}: {err}")
        })?;
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
        let routes = routes.nest("/", api);

        Ok(Self {
            listener,
            addr,
            public_url,
            workflows,
            sandbox,
            jwt,
            routes,
            queue,
            workers: config.workers.enabled,
            dispatch: true,
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

    /// The start-up banner: where things are and a ready operator token.
    pub fn banner(&self) -> String {
        let base = self.base_url();
        // Never longer than the service accepts (`auth.max_token_lifetime_secs`).
        let ttl = Duration::from_secs(24 * 3600).min(self.jwt.max_lifetime());
        let token = self.jwt.mint(Role::Ops, "operator", ttl);
        let lifetime = match ttl.as_secs() {
            secs if secs % 3600 == 0 => format!("{} h", secs / 3600),
            secs => format!("{secs} s"),
        };
        let mut out = format!(
            "\n  Tributary is listening on {base}\n\n  API docs (Swagger UI)  {base}/docs\n  OpenAPI document       {base}/openapi.json\n  Health / readiness     {base}/healthz  {base}/readyz\n"
        );
        if self.sandbox.is_some() {
            out.push_str(&format!(
                "  Sandbox partner        {base}/sandbox/  (partners sandbox-cgm, sandbox-pump)\n"
            ));
        }
        let partners: Vec<_> = self
            .workflows
            .partners()
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        out.push_str(&format!(
            "  Partners               {}\n",
            partners.join(", ")
        ));
        out.push_str(&format!(
            "\n  Operator token ({lifetime}; mint others with `tributary token --role user --subject <id>`):\n    export TOKEN={token}\n    curl -H \"Authorization: Bearer $TOKEN\" {base}/v1/partners\n"
        ));
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
        let acceptor = TcpAcceptor::from_tokio(self.listener)?;
        let served = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                // Outside our router too: it would answer a path that is not UTF-8 in plain text.
                self.routes.with(api::LossyPaths).with(api::AccessLog),
                shutdown,
                Some(Duration::from_secs(10)),
            )
            .await;
        if let Some(workers) = workers {
            workers.shutdown().await;
        }
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
    let poll = Duration::from_millis(config.workers.poll_interval_ms.max(10));
    let queue = JobQueue::setup(
        &store,
        QueueSettings {
            poll_interval: poll,
            batch_size: config.workers.batch_size.max(1),
            concurrency: config.workers.concurrency.max(1),
            ..QueueSettings::default()
        },
    )
    .await
    .context("cannot set up the job queue")?;
    let workflows = Workflows::new(
        store,
        partners,
        Settings {
            state_ttl: Duration::from_secs(config.oauth.state_ttl_secs),
            transfer: TransferSettings {
                poll_interval: poll,
                dispatch_batch: config.workers.dispatch_batch.max(1),
                dispatch_lease: Duration::from_secs(config.workers.dispatch_lease_secs),
                fetch_lease: Duration::from_secs(config.workers.fetch_lease_secs),
                max_run: Duration::from_secs(config.workers.max_run_secs),
                ..TransferSettings::default()
            },
            ..Settings::default()
        },
    );
    Ok((workflows, queue))
}

/// The two partners the built-in sandbox simulates, configured against it.
fn sandbox_partners(
    sandbox: &Sandbox,
    base: &str,
    settings: &crate::config::SandboxSettings,
) -> Vec<(String, PartnerConfig)> {
    let partner = |flavor: Flavor, name: &str, display: &str| {
        let urls = sandbox.urls(flavor);
        let client = sandbox
            .config()
            .clients
            .iter()
            .find(|c| c.flavor == flavor)
            .expect("the sandbox registers a client per flavor");
        PartnerConfig {
            display_name: display.to_owned(),
            kind: match flavor {
                Flavor::Cgm => PartnerKind::Dexcom,
                Flavor::Pump => PartnerKind::Pump,
            },
            client_id: client.client_id.clone(),
            client_secret: client.client_secret.clone().into(),
            client_auth: match client.auth_method {
                sandbox::ClientAuthMethod::Basic => ClientAuth::ClientSecretBasic,
                sandbox::ClientAuthMethod::Post => ClientAuth::ClientSecretPost,
            },
            authorize_url: urls.authorize,
            token_url: urls.token,
            revoke_url: Some(urls.revoke),
            redirect_url: Url::parse(&format!("{base}/v1/oauth/{name}/callback"))
                .expect("valid URL"),
            require_issuer: urls.issuer.is_some(),
            issuer: urls.issuer,
            scopes: match flavor {
                Flavor::Cgm => vec![sandbox::OFFLINE_ACCESS.to_owned()],
                Flavor::Pump => vec![
                    sandbox::PUMP_READ_SCOPE.to_owned(),
                    sandbox::OFFLINE_ACCESS.to_owned(),
                ],
            },
            api_base_url: urls.api_base,
            request_timeout_secs: settings.request_timeout_secs,
            max_window_days: settings.max_window_days,
            max_records_per_page: 500,
            requests_per_second: 50.0,
            max_pages_per_fetch: 100,
            sync: match flavor {
                // Dexcom's interval and nightly blackout, as the partner guide describes.
                Flavor::Cgm => engine::schedule::SyncPolicy::dexcom(),
                Flavor::Pump => engine::schedule::SyncPolicy::default(),
            },
            transfer: workflows::fetch::TransferConfig::default(),
        }
    };
    vec![
        (
            sandbox::DEFAULT_CGM_PARTNER_NAME.to_owned(),
            partner(
                Flavor::Cgm,
                sandbox::DEFAULT_CGM_PARTNER_NAME,
                "Sandbox CGM (Dexcom-shaped)",
            ),
        ),
        (
            sandbox::DEFAULT_PUMP_PARTNER_NAME.to_owned(),
            partner(
                Flavor::Pump,
                sandbox::DEFAULT_PUMP_PARTNER_NAME,
                "Sandbox insulin pump",
            ),
        ),
    ]
}

fn redact_url(url: &str) -> String {
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
    let store = Store::open_and_migrate(
        &config.database.url,
        &StoreOptions {
            max_connections: config.database.max_connections,
            busy_timeout: Duration::from_millis(config.database.busy_timeout_ms),
        },
        config.crypto.keyring()?,
    )
    .await
    .with_context(|| {
        format!(
            "cannot open the database {}",
            redact_url(&config.database.url)
        )
    })?;
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
    let partners = Partners::from_config(partner_configs)
        .map_err(|(name, err)| anyhow::anyhow!("invalid configuration: partners.{name}: {err}"))?;
    let (workflows, queue) = components(&config, store, partners).await?;
    eprintln!("worker {} started", queue.worker_name());
    let workers = Workers::start(workflows.clone(), queue, true);
    shutdown_signal().await;
    workers.shutdown().await;
    workflows.store().clone().close().await;
    Ok(())
}

/// `tributary migrate`.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = Store::open(
        &config.database.url,
        &StoreOptions::default(),
        config.crypto.keyring()?,
    )
    .await
    .with_context(|| {
        format!(
            "cannot open the database {}",
            redact_url(&config.database.url)
        )
    })?;
    store.migrate().await.context("migration failed")?;
    eprintln!("migrations applied to {}", redact_url(&config.database.url));
    Ok(())
}

/// `tributary sandbox`: the simulated partner on its own.
pub async fn sandbox(listen: SocketAddr, auto_consent_user: Option<String>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let mut config = SandboxConfig::new(
        Url::parse(&format!("http://{addr}")).expect("socket address URL"),
        &Url::parse(sandbox::config::DEFAULT_APP_BASE_URL).expect("constant URL"),
    );
    config.auto_consent_user = auto_consent_user;
    let sb = Sandbox::new(config);
    eprintln!(
        "\n  Sandbox partner listening on http://{addr}/ (index of URLs there)\n  Clients redirect to {}\n  Admin API: http://{addr}/admin/faults, /admin/clock, /admin/stats\n",
        sandbox::config::DEFAULT_APP_BASE_URL
    );
    sandbox::serve(sb, listener, shutdown_signal())
        .await
        .context("sandbox server failed")
}
