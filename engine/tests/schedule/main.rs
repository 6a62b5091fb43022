//! Next-sync times: intervals, blackouts on real dates (including DST changes in
//! America/Los_Angeles and Europe/London), backoff, and the configuration shape. Every instant is
//! fixed and every random source seeded.
//!
//! # Layout
//! - `main.rs`: shared helpers.
//! - `windows.rs`: which blackout window contains an instant: daily windows across DST changes
//!   and midnight, cron windows.
//! - `next_sync.rs`: pushing out of blackouts, the next sync and delays, and properties over a
//!   whole year.
//! - `backoff.rs`: jittered exponential backoff.
//! - `config.rs`: validation and the TOML shape.

mod backoff;
mod config;
mod next_sync;
mod windows;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use engine::schedule::{Blackout, SyncPolicy};

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn window(from: &str, to: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    Some((utc(from), utc(to)))
}

fn policy(blackouts: Vec<Blackout>, spread_secs: u64) -> SyncPolicy {
    SyncPolicy {
        blackouts,
        blackout_spread_secs: spread_secs,
        ..SyncPolicy::default()
    }
}

fn daily(start: &str, end: &str, zone: &str) -> Blackout {
    Blackout::daily(start, end, zone).unwrap()
}

fn cron(expression: &str, minutes: u64, zone: &str) -> Blackout {
    Blackout::cron(expression, Duration::from_secs(minutes * 60), zone).unwrap()
}

fn secs(n: u64) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(n).unwrap())
}
