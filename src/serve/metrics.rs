//! The Prometheus endpoint (docs/operations.md#metrics): `GET /metrics` on a listener of its
//! own (`[metrics] listen`), unauthenticated, and absent unless configured.
//!
//! What a scrape answers has two parts:
//! - the process's counters and histogram, which the engine and the workflows emit through the
//!   `metrics` facade where their events happen (`engine::metrics`), into one recorder
//!   installed for the whole process the first time an endpoint is bound;
//! - the gauges, which describe the database: every `metrics.sample_interval_secs` one
//!   summary of the fleet (`Store::ops_summary`, the operators' summary) is read and rendered
//!   into text through a recorder of the sample's own, which the scrape appends. A scrape never
//!   queries the database, and two applications in one process (tests) never mix their gauges.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poem::{
    EndpointExt as _, Response, Route, Server, get, handler, listener::TcpAcceptor, web::Data,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use workflows::Workflows;

use crate::config::MetricsConfig;

/// The Prometheus text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A bound metrics listener, ready to serve.
pub(crate) struct MetricsEndpoint {
    listener: TcpListener,
    addr: SocketAddr,
    interval: Duration,
}

impl MetricsEndpoint {
    /// Binds `[metrics] listen` and installs the process's recorder; `None` when unset.
    pub(crate) async fn bind(config: &MetricsConfig) -> anyhow::Result<Option<Self>> {
        let Some(listen) = config.listen else {
            return Ok(None);
        };
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (metrics.listen)"))?;
        let addr = listener.local_addr()?;
        process_recorder();
        Ok(Some(Self {
            listener,
            addr,
            interval: Duration::from_secs(config.sample_interval_secs),
        }))
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs the endpoint, if any, in a task of its own until `stopped` turns true (or its
    /// sender is dropped).
    pub(crate) fn spawn(
        endpoint: Option<Self>,
        workflows: &Workflows,
        mut stopped: watch::Receiver<bool>,
    ) -> MetricsTask {
        let workflows = workflows.clone();
        MetricsTask(endpoint.map(|endpoint| {
            tokio::spawn(endpoint.run(workflows, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        }))
    }

    /// Samples the gauges and serves scrapes until `stop` completes.
    async fn run(
        self,
        workflows: Workflows,
        stop: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let gauges = Arc::new(RwLock::new(String::new()));
        let sampler = tokio::spawn(sample(workflows, self.interval, gauges.clone()));
        let routes = Route::new()
            .at("/metrics", get(scrape))
            .data(Scrape { gauges });
        let acceptor = TcpAcceptor::from_tokio(self.listener)?;
        let served = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(routes, stop, Some(Duration::from_secs(2)))
            .await;
        sampler.abort();
        served.context("metrics server failed")
    }
}

/// A running endpoint (or none).
pub(crate) struct MetricsTask(Option<JoinHandle<anyhow::Result<()>>>);

impl MetricsTask {
    /// Waits for the endpoint to stop, logging how it failed if it did.
    pub(crate) async fn join(self) {
        if let Some(task) = self.0 {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "the metrics endpoint failed"),
                Err(e) => tracing::error!(error = %e, "the metrics endpoint panicked"),
            }
        }
    }
}

/// The recorder of the process's counters and histogram, installed as the facade's global
/// recorder once. Another recorder installed first (an embedding program's) keeps the events;
/// this endpoint then serves the gauges only.
fn process_recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(engine::metrics::STEP_DURATION.to_owned()),
                &engine::metrics::STEP_DURATION_BUCKETS,
            )
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        match metrics::set_global_recorder(recorder) {
            Ok(()) => engine::metrics::describe(),
            Err(_) => tracing::warn!(
                "another metrics recorder is installed: /metrics serves the gauges only"
            ),
        }
        handle
    })
}

#[derive(Clone)]
struct Scrape {
    /// The last sample's gauges, as Prometheus text.
    gauges: Arc<RwLock<String>>,
}

#[handler]
fn scrape(Data(scrape): Data<&Scrape>) -> Response {
    let mut body = process_recorder().render();
    body.push_str(
        &scrape
            .gauges
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    Response::builder().content_type(CONTENT_TYPE).body(body)
}

/// Reads the fleet's summary every `interval` (the first at once) and renders its gauges. A
/// failed read keeps the previous sample (its timestamp gauge says how old it is). Also keeps
/// the process recorder's histogram buckets drained.
async fn sample(workflows: Workflows, interval: Duration, gauges: Arc<RwLock<String>>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let settings = workflows.settings().stuck();
    loop {
        tick.tick().await;
        process_recorder().run_upkeep();
        let store = workflows.store();
        match store.ops_summary(store.clock().now(), &settings).await {
            Ok(summary) => {
                let recorder = PrometheusBuilder::new().build_recorder();
                metrics::with_local_recorder(&recorder, || {
                    engine::metrics::describe();
                    engine::metrics::gauges(&summary);
                });
                let text = recorder.handle().render();
                *gauges
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = text;
            }
            Err(err) => tracing::warn!(error = %err, "sampling the metrics' gauges failed"),
        }
    }
}
