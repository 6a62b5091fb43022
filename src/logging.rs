//! Logging (docs/operations.md#logs): to stderr, filtered by `log.filter`, as text or, with
//! `log.json = true`, one JSON object per line.
//!
//! A JSON line carries its event's fields under `fields`, the innermost span's fields under
//! `span` and every open span's under `spans`, outermost first. Every step runs inside a
//! `step` span naming its `connection` and `step` (the job worker opens it), so each line a
//! step logs says which connection and step it belongs to.

use tracing::Subscriber;
use tracing_subscriber::{
    EnvFilter, Layer, fmt::MakeWriter, layer::SubscriberExt as _, registry::LookupSpan,
    util::SubscriberInitExt as _,
};

use crate::config::{ConfigError, LogConfig};

/// The JSON format of `log.json = true`, writing to `writer`.
pub fn json_layer<S, W>(writer: W) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_ansi(false)
        .with_writer(writer)
}

/// Installs the process's logger from `log` (once; a second call fails).
pub(crate) fn init(log: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&log.filter)
        .map_err(|e| ConfigError::invalid("log.filter", e.to_string()))?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = if log.json {
        registry.with(json_layer(std::io::stderr)).try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    result.map_err(|e| anyhow::anyhow!("cannot initialize logging: {e}"))
}
