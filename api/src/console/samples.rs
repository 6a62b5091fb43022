//! The console's series "over time" (docs/console.md#console): a bounded in-process ring
//! buffer of fleet summaries, one a minute for the last 24 hours, kept by the serving process
//! from its start. They are this process's samples only: a restart begins them again, and the
//! pages say so.

use std::{
    collections::VecDeque,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use chrono::{DateTime, Utc};
use engine::{state::State, store::OpsSummary};
use workflows::Workflows;

/// How often the summary is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(60);
/// Samples kept: 24 hours at one a minute.
pub const MAX_SAMPLES: usize = 24 * 60;

/// The figures of one summary the charts draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: DateTime<Utc>,
    /// Connections per state, in [`State::ALL`] order.
    pub by_state: [u64; 6],
    pub due_now: u64,
    pub overdue: u64,
    /// How long the transfer due longest has been due (the scheduling lag), in seconds.
    pub lag_secs: u64,
    pub in_flight: u64,
    pub stuck: u64,
}

impl Sample {
    pub fn of(summary: &OpsSummary) -> Self {
        let mut by_state = [0; 6];
        for count in &summary.by_partner_state {
            if let Some(i) = State::ALL.iter().position(|s| *s == count.state) {
                by_state[i] += count.count;
            }
        }
        Self {
            at: summary.at,
            by_state,
            due_now: summary.due_now,
            overdue: summary.overdue,
            lag_secs: summary.oldest_due.map_or(0, |d| d.as_secs()),
            in_flight: summary.in_flight,
            stuck: summary.stuck_connections,
        }
    }
}

/// The ring buffer, shared by the sampler and the pages.
#[derive(Debug, Clone, Default)]
pub struct ConsoleSamples(Arc<Mutex<VecDeque<Sample>>>);

impl ConsoleSamples {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sample, dropping the oldest beyond [`MAX_SAMPLES`].
    pub fn push(&self, sample: Sample) {
        let mut samples = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub fn snapshot(&self) -> Vec<Sample> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// Samples the fleet's summary every [`SAMPLE_INTERVAL`] (the first at once) until `stop`
    /// completes. A failed read is logged and leaves a gap.
    pub async fn run(self, workflows: Workflows, stop: impl Future<Output = ()> + Send) {
        let sampling = async {
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let settings = workflows.settings().stuck();
            loop {
                tick.tick().await;
                let store = workflows.store();
                match store.ops_summary(store.clock().now(), &settings).await {
                    Ok(summary) => self.push(Sample::of(&summary)),
                    Err(err) => {
                        tracing::warn!(error = %err, "sampling the console's summary failed")
                    }
                }
            }
        };
        tokio::select! {
            () = sampling => {}
            () = stop => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(minute: i64) -> Sample {
        Sample {
            at: DateTime::from_timestamp(minute * 60, 0).unwrap(),
            by_state: [0; 6],
            due_now: 0,
            overdue: 0,
            lag_secs: 0,
            in_flight: 0,
            stuck: 0,
        }
    }

    #[test]
    fn the_ring_keeps_the_last_day() {
        let samples = ConsoleSamples::new();
        for minute in 0..(MAX_SAMPLES as i64 + 10) {
            samples.push(sample(minute));
        }
        let kept = samples.snapshot();
        assert_eq!(kept.len(), MAX_SAMPLES);
        assert_eq!(kept[0], sample(10));
        assert_eq!(kept.last().copied(), Some(sample(MAX_SAMPLES as i64 + 9)));
    }
}
