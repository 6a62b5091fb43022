//! `tributary bench --webhooks` and `--ab-webhooks`: the outbox's cost to transfers.
//!
//! With webhooks, the bench process runs a webhook receiver (`sandbox::webhooks`, verifying
//! every delivery's signature) and every worker's configuration names it as `[webhooks.bench]`,
//! so each transfer run that stores new records queues one `connection.data_synced` event in the
//! outbox and a `deliver` job sends it. In the bench every cycle stores new records (one hour of
//! EGVs), so every cycle queues an event: the outbox's worst case. Before the workers stop, the
//! bench waits for the outbox to drain, then counts what the receiver accepted and what is still
//! pending, so a run shows the events were produced and delivered, not only that nothing slowed.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use engine::Store;
use sandbox::webhooks::WebhookReceiver;
use workflows::deliver::signature::WebhookSecret;

use super::Outcome;

/// How long the bench waits for the outbox to drain after the measured phases.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The bench's webhook endpoint: a receiver in this process, one per configuration run.
pub(super) struct BenchHooks {
    receiver: WebhookReceiver,
    secret: String,
}

/// What a run with webhooks queued and delivered.
#[derive(Debug, Default, Clone)]
pub(super) struct HookOutcome {
    /// Outbox rows pending right after the throughput interval (delivery behind the transfers).
    pub pending_after_measure: u64,
    /// Pending after the lag phase, before the drain.
    pub pending_before_drain: u64,
    /// How long the outbox took to drain (capped at [`DRAIN_TIMEOUT`]).
    pub drain_secs: f64,
    /// Outbox rows written by the run (all statuses).
    pub queued: u64,
    pub sent: u64,
    /// Still pending when the workers were stopped.
    pub pending_end: u64,
    pub abandoned: u64,
    /// Distinct events the receiver accepted (valid signature, answered 204).
    pub accepted: usize,
    /// Deliveries the receiver refused (bad signature or stale timestamp).
    pub refused: usize,
}

impl BenchHooks {
    pub(super) async fn start() -> anyhow::Result<Self> {
        let (_, secret) = WebhookSecret::generate();
        let receiver = WebhookReceiver::start(&secret)
            .await
            .context("cannot start the webhook receiver")?;
        Ok(Self { receiver, secret })
    }

    /// The `[webhooks.bench]` table of the worker configuration.
    pub(super) fn toml(&self) -> String {
        format!(
            "\n[webhooks.bench]\nurl = \"{}\"\nsecret = \"{}\"\n",
            self.receiver.url(),
            self.secret
        )
    }

    /// Waits until no outbox row is pending (or [`DRAIN_TIMEOUT`]); the workers still run.
    pub(super) async fn drain(
        &self,
        store: &Store,
        outcome: &mut HookOutcome,
    ) -> anyhow::Result<()> {
        outcome.pending_before_drain = count(store, Some("pending")).await?;
        let started = Instant::now();
        while count(store, Some("pending")).await? > 0 && started.elapsed() < DRAIN_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        outcome.drain_secs = started.elapsed().as_secs_f64();
        Ok(())
    }

    /// The outbox's and the receiver's counts, after the workers stopped.
    pub(super) async fn finish(
        &self,
        store: &Store,
        outcome: &mut HookOutcome,
    ) -> anyhow::Result<()> {
        outcome.queued = count(store, None).await?;
        outcome.sent = count(store, Some("sent")).await?;
        outcome.pending_end = count(store, Some("pending")).await?;
        outcome.abandoned = count(store, Some("abandoned")).await?;
        outcome.accepted = self.receiver.events().len();
        outcome.refused = self
            .receiver
            .deliveries()
            .iter()
            .filter(|d| !d.signature_valid)
            .count();
        Ok(())
    }
}

/// Outbox rows with `status` (all rows for `None`).
pub(super) async fn count(store: &Store, status: Option<&str>) -> anyhow::Result<u64> {
    use engine::store::entities::outbox;
    use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
    let mut query = outbox::Entity::find();
    if let Some(status) = status {
        query = query.filter(outbox::Column::Status.eq(status));
    }
    Ok(query.count(store.db()).await?)
}

/// The webhook rows of a run as Markdown, and with `--ab-webhooks` the rounds side by side.
pub(super) fn report(outcomes: &[Outcome], ab: bool) -> String {
    let mut out = String::new();
    let hooked: Vec<_> = outcomes
        .iter()
        .filter_map(|o| Some((o, o.webhooks.as_ref()?)))
        .collect();
    if hooked.is_empty() {
        return out;
    }
    out.push_str(
        "\nwebhooks (one `[webhooks.bench]` endpoint; outbox counted after a drain, workers still running):\n\n\
         | backend | N | procs | cycles/s | events queued | accepted | refused | pending after measuring | pending before drain | drain s | sent | pending at end | abandoned |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (o, h) in &hooked {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} |\n",
            o.backend,
            o.n,
            o.processes,
            o.cycles_per_sec,
            h.queued,
            h.accepted,
            h.refused,
            h.pending_after_measure,
            h.pending_before_drain,
            h.drain_secs,
            h.sent,
            h.pending_end,
            h.abandoned
        ));
    }
    if ab {
        out.push_str(&super::ab::report(outcomes, "webhooks", |o| {
            o.webhooks.is_some()
        }));
    }
    out
}
