//! Every metric Tributary exports, by name, and the one function that emits each
//! (docs/operations.md#metrics lists them for operators).
//!
//! The functions go through the `metrics` facade: they cost next to nothing until a process
//! installs a recorder (the server does when `[metrics] listen` is set), and each is called
//! from the one place its event happens:
//!
//! | metric | emitted by |
//! |---|---|
//! | [`TRANSITIONS`] | the store, after it committed a transition |
//! | [`STEP_RUNS`], [`STEP_DURATION`] | the store, once a step run's end is committed ([`step_run`]) |
//! | [`PARTNER_RESPONSES`] | the partner clients (data API and OAuth), per answer |
//! | [`RECORDS_STORED`], [`RECORDS_SKIPPED`] | the fetch step, per committed window |
//! | [`BREAKER_TRANSITIONS`] | the store, after it committed a breaker's transition ([`breaker_transition`]) |
//! | the gauges ([`CONNECTIONS`] …, [`gauges`]) | the server's sampler, from one summary of the fleet |
//!
//! Counters and the histogram are the process's own (each process counts what it did; sum
//! them over processes). Gauges describe the database, so every process that samples reports
//! the same values (take `max` over processes, not `sum`).
//!
//! Labels never carry a connection, user or token: only partner names, states, events, steps,
//! outcomes, stuck reasons and HTTP statuses, so the number of series stays small and no personal datum
//! leaves the process this way.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::state::{EventKind, State};
use crate::store::{BreakerState, ChunkStats, OpsSummary, Step};

/// Counter: transitions committed, labelled `event`, `from` (`none` for a new connection)
/// and `to`. Journal-only events (`note`, `delivery_recorded`, …) count too, with `from` = `to`.
pub const TRANSITIONS: &str = "tributary_transitions_total";
/// Counter: step runs ended, labelled `step` (`fetch`, `refresh`, `revoke`, `deliver`) and
/// `outcome` (the step run's outcome, docs/operations.md#step-runs).
pub const STEP_RUNS: &str = "tributary_step_runs_total";
/// Histogram: how long step runs took, in seconds, labelled `step`; buckets
/// [`STEP_DURATION_BUCKETS`].
pub const STEP_DURATION: &str = "tributary_step_duration_seconds";
/// Counter: partner answers, labelled `partner`, `api` (`data` or `oauth`) and `status` (the
/// HTTP status, or `timeout` / `transport` when no answer came).
pub const PARTNER_RESPONSES: &str = "tributary_partner_responses_total";
/// Counter: partner records written by committed windows, labelled `partner` and `change`
/// (`inserted` or `updated`; a record re-read unchanged is not counted).
pub const RECORDS_STORED: &str = "tributary_records_stored_total";
/// Counter: partner records skipped for the first time (unreadable or unmappable), labelled
/// `partner`.
pub const RECORDS_SKIPPED: &str = "tributary_records_skipped_total";

/// Counter: circuit-breaker transitions committed by this process, labelled `partner` and
/// `to` (`open`, `half_open`, `closed`; docs/operations.md#partner-incidents).
pub const BREAKER_TRANSITIONS: &str = "tributary_partner_breaker_transitions_total";

/// Gauge: a partner's circuit breaker, labelled `partner`: 0 closed, 1 open, 2 half-open
/// (every partner that has connections or a breaker).
pub const BREAKER_STATE: &str = "tributary_partner_breaker_state";
/// Gauge: connections, labelled `partner` and `state` (every state of a partner that has
/// connections is reported, zeros included).
pub const CONNECTIONS: &str = "tributary_connections";
/// Gauge: paused connections.
pub const PAUSED: &str = "tributary_connections_paused";
/// Gauge: connections that may transfer, not paused, whose next transfer is due now.
pub const TRANSFERS_DUE: &str = "tributary_transfers_due";
/// Gauge: of those, the ones due for longer than the overdue threshold
/// (docs/operations.md#stuck-thresholds).
pub const TRANSFERS_OVERDUE: &str = "tributary_transfers_overdue";
/// Gauge: scheduling lag, in seconds: how long the transfer due longest has been due (0 when
/// none is due).
pub const SCHEDULING_LAG: &str = "tributary_scheduling_lag_seconds";
/// Gauge: transfers started and holding a live lease, over all processes.
pub const TRANSFERS_IN_FLIGHT: &str = "tributary_transfers_in_flight";
/// Gauge: transfers claimed by a dispatcher and not started yet.
pub const TRANSFERS_CLAIMED: &str = "tributary_transfers_claimed";
/// Gauge: jobs waiting or running in the queue, labelled `step`.
pub const QUEUE_DEPTH: &str = "tributary_queue_depth";
/// Gauge: connections stuck for a reason, labelled `reason` (docs/operations.md#stuck).
pub const STUCK: &str = "tributary_connections_stuck";
/// Gauge: connections stuck for at least one reason.
pub const STUCK_ANY: &str = "tributary_connections_stuck_any";
/// Gauge: Unix time, in seconds, of the sample the gauges above come from.
pub const SAMPLED_AT: &str = "tributary_gauges_sampled_timestamp_seconds";

/// Upper bounds, in seconds, of [`STEP_DURATION`]'s buckets: from a quick refresh (tens of
/// milliseconds) to a backfill that runs until it yields (`workers.max_run_secs`, 120 s by
/// default).
pub const STEP_DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Registers every metric's help text (the `# HELP` lines) with the current recorder.
pub fn describe() {
    describe_counter!(TRANSITIONS, "Connection transitions committed");
    describe_counter!(STEP_RUNS, "Step runs ended, by step and outcome");
    describe_histogram!(STEP_DURATION, Unit::Seconds, "Duration of step runs");
    describe_counter!(PARTNER_RESPONSES, "Partner answers, by API and HTTP status");
    describe_counter!(RECORDS_STORED, "Partner records inserted or updated");
    describe_counter!(
        RECORDS_SKIPPED,
        "Partner records skipped for the first time"
    );
    describe_counter!(
        BREAKER_TRANSITIONS,
        "Partner circuit-breaker transitions, by partner and new state"
    );
    describe_gauge!(
        BREAKER_STATE,
        "Partner circuit breaker: 0 closed, 1 open, 2 half-open"
    );
    describe_gauge!(CONNECTIONS, "Connections by partner and state");
    describe_gauge!(PAUSED, "Paused connections");
    describe_gauge!(TRANSFERS_DUE, "Transfers due now");
    describe_gauge!(
        TRANSFERS_OVERDUE,
        "Transfers due for longer than the overdue threshold"
    );
    describe_gauge!(
        SCHEDULING_LAG,
        Unit::Seconds,
        "How long the transfer due longest has been due"
    );
    describe_gauge!(TRANSFERS_IN_FLIGHT, "Transfers running (live lease)");
    describe_gauge!(
        TRANSFERS_CLAIMED,
        "Transfers claimed by a dispatcher, not started"
    );
    describe_gauge!(QUEUE_DEPTH, "Jobs waiting or running in the queue, by step");
    describe_gauge!(STUCK, "Connections stuck, by reason");
    describe_gauge!(STUCK_ANY, "Connections stuck for at least one reason");
    describe_gauge!(
        SAMPLED_AT,
        Unit::Seconds,
        "When the gauges were sampled (Unix time)"
    );
}

/// A committed transition.
pub fn transition(from: Option<State>, to: State, event: EventKind) {
    counter!(
        TRANSITIONS,
        "event" => event.as_str(),
        "from" => from.map_or("none", State::as_str),
        "to" => to.as_str(),
    )
    .increment(1);
}

/// A step run that ended with `outcome` after `duration`.
pub fn step_run(step: Step, outcome: &str, duration: Duration) {
    counter!(STEP_RUNS, "step" => step.as_str(), "outcome" => outcome.to_owned()).increment(1);
    histogram!(STEP_DURATION, "step" => step.as_str()).record(duration.as_secs_f64());
}

/// One partner answer: an HTTP status, or `timeout` / `transport` when none came.
pub fn partner_response(partner: &str, api: &'static str, status: &str) {
    counter!(
        PARTNER_RESPONSES,
        "partner" => partner.to_owned(),
        "api" => api,
        "status" => status.to_owned(),
    )
    .increment(1);
}

/// [`partner_response`] for an HTTP status.
pub fn partner_status(partner: &str, api: &'static str, status: u16) {
    partner_response(partner, api, &status.to_string());
}

/// What one committed window of `partner`'s records wrote.
pub fn records_stored(partner: &str, stats: ChunkStats) {
    for (change, count) in [("inserted", stats.inserted), ("updated", stats.updated)] {
        if count > 0 {
            counter!(RECORDS_STORED, "partner" => partner.to_owned(), "change" => change)
                .increment(count);
        }
    }
    if stats.newly_skipped > 0 {
        counter!(RECORDS_SKIPPED, "partner" => partner.to_owned()).increment(stats.newly_skipped);
    }
}

/// A partner's circuit breaker moved to `to`.
pub fn breaker_transition(partner: &str, to: BreakerState) {
    counter!(BREAKER_TRANSITIONS, "partner" => partner.to_owned(), "to" => to.as_str())
        .increment(1);
}

/// Sets every gauge from one summary of the fleet ([`crate::Store::ops_summary`], one
/// aggregate read), so a scrape never mixes two samples. Each partner that has connections
/// gets a value for every state, 0 where it has none: a state that empties reads 0 rather
/// than keeping its last count.
pub fn gauges(summary: &OpsSummary) {
    gauge!(SAMPLED_AT).set(summary.at.timestamp_millis() as f64 / 1000.0);
    let mut partners: Vec<&str> = summary
        .by_partner_state
        .iter()
        .map(|c| c.partner.as_str())
        .collect();
    partners.dedup();
    let mut breakers: Vec<&str> = partners.clone();
    breakers.extend(summary.breakers.iter().map(|b| b.partner.as_str()));
    breakers.sort_unstable();
    breakers.dedup();
    for partner in breakers {
        let state = summary
            .breakers
            .iter()
            .find(|b| b.partner == partner)
            .map_or(BreakerState::Closed, |b| b.state);
        gauge!(BREAKER_STATE, "partner" => partner.to_owned()).set(state.gauge());
    }
    for partner in partners {
        for state in State::ALL {
            let count: u64 = summary
                .by_partner_state
                .iter()
                .filter(|c| c.partner == partner && c.state == state)
                .map(|c| c.count)
                .sum();
            gauge!(CONNECTIONS, "partner" => partner.to_owned(), "state" => state.as_str())
                .set(count as f64);
        }
    }
    gauge!(PAUSED).set(summary.paused as f64);
    gauge!(TRANSFERS_DUE).set(summary.due_now as f64);
    gauge!(TRANSFERS_OVERDUE).set(summary.overdue as f64);
    let lag = summary.oldest_due.unwrap_or_default();
    gauge!(SCHEDULING_LAG).set(lag.as_secs_f64());
    gauge!(TRANSFERS_IN_FLIGHT).set(summary.in_flight as f64);
    gauge!(TRANSFERS_CLAIMED).set(summary.claimed as f64);
    for depth in &summary.queue {
        gauge!(QUEUE_DEPTH, "step" => depth.step.as_str()).set(depth.pending as f64);
    }
    for &(reason, count) in &summary.stuck {
        gauge!(STUCK, "reason" => reason.as_str()).set(count as f64);
    }
    gauge!(STUCK_ANY).set(summary.stuck_connections as f64);
}
