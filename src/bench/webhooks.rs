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

use super::{Outcome, report::opt};

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
        out.push_str(&ab_report(outcomes));
    }
    out
}

/// Per configuration, round k's run without webhooks beside round k's run with them.
fn ab_report(outcomes: &[Outcome]) -> String {
    let mut configs: Vec<(&str, usize, usize)> = Vec::new();
    for o in outcomes {
        let key = (o.backend, o.n, o.processes);
        if !configs.contains(&key) {
            configs.push(key);
        }
    }
    let mut rounds = String::from(
        "\nA/B, alternating in one process run (without, then with, each round):\n\n\
         | backend | N | procs | round | without cycles/s | with cycles/s | with ÷ without | events accepted | pending at end |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut summary = String::from(
        "\n| backend | N | procs | rounds | mean without | mean with | mean ratio (min–max) | without spread | with spread |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (backend, n, processes) in configs {
        let runs: Vec<_> = outcomes
            .iter()
            .filter(|o| (o.backend, o.n, o.processes) == (backend, n, processes))
            .collect();
        let without: Vec<f64> = runs
            .iter()
            .filter(|o| o.webhooks.is_none())
            .map(|o| o.cycles_per_sec)
            .collect();
        let with: Vec<&Outcome> = runs
            .iter()
            .copied()
            .filter(|o| o.webhooks.is_some())
            .collect();
        let mut ratios = Vec::new();
        for (k, (a, b)) in without.iter().zip(&with).enumerate() {
            let ratio = b.cycles_per_sec / a;
            ratios.push(ratio);
            let h = b.webhooks.as_ref().map(|h| (h.accepted, h.pending_end));
            rounds.push_str(&format!(
                "| {backend} | {n} | {processes} | {} | {a:.0} | {:.0} | {ratio:.3} | {} | {} |\n",
                k + 1,
                b.cycles_per_sec,
                opt(h.map(|h| h.0 as f64), 0),
                opt(h.map(|h| h.1 as f64), 0),
            ));
        }
        let with: Vec<f64> = with.iter().map(|o| o.cycles_per_sec).collect();
        summary.push_str(&format!(
            "| {backend} | {n} | {processes} | {} | {} | {} | {} ({}–{}) | {} | {} |\n",
            ratios.len(),
            opt(mean(&without), 0),
            opt(mean(&with), 0),
            opt(mean(&ratios), 3),
            opt(ratios.iter().copied().reduce(f64::min), 3),
            opt(ratios.iter().copied().reduce(f64::max), 3),
            spread(&without),
            spread(&with),
        ));
    }
    rounds + &summary
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// `±x %`: half the range over the mean.
fn spread(values: &[f64]) -> String {
    let (Some(lo), Some(hi), Some(m)) = (
        values.iter().copied().reduce(f64::min),
        values.iter().copied().reduce(f64::max),
        mean(values),
    ) else {
        return "—".to_owned();
    };
    format!("±{:.1} %", (hi - lo) / 2.0 / m * 100.0)
}
