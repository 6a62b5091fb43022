//! The accepted range of every numeric key. Each number here ends up in time arithmetic
//! (`now ± value`, sleeps, timeouts) or sizes something (pools, batches, bodies); a value outside
//! its range is refused at start with the key named, so no later computation can overflow or
//! panic. docs/configuration.md#bounds lists the same table for readers; a test keeps the two
//! in step.
//!
//! `[partners.<name>.sync]` is bounded by `engine::schedule::SyncPolicy::validate` (intervals of
//! at most 30 days, a spread of at most a day), checked here on the resolved policy.

use engine::jobs::QueueSettings;

use super::{Config, ConfigError};

/// Longest duration in seconds any `*_secs` key accepts (unless its own bound is smaller): ten
/// years, far inside chrono's range (about ±262,000 years around now), so `now ± value` and
/// sums of a few such values cannot overflow.
pub const MAX_SECS: u64 = 10 * 365 * 86_400;

/// Longest span in days any `*_days` key accepts: ten years, for the same reason.
pub const MAX_DAYS: u64 = 3_650;

/// Longest timeout in seconds any `*_timeout_secs` key accepts: an hour. A request or
/// connection attempt waiting longer is a hang, not a slow answer.
pub const MAX_TIMEOUT_SECS: u64 = 3_600;

/// Most requests per second a partner's rate limiter accepts.
const MAX_REQUESTS_PER_SECOND: f64 = 1e9;

/// One numeric key's value and its inclusive range.
struct Bound {
    key: String,
    value: u64,
    min: u64,
    max: u64,
}

fn bound(key: impl Into<String>, value: impl TryInto<u64>, min: u64, max: u64) -> Bound {
    Bound {
        key: key.into(),
        // Every integer type in the configuration is unsigned and at most 64 bits wide.
        value: value.try_into().unwrap_or(u64::MAX),
        min,
        max,
    }
}

/// The bounds of every numeric key of `config`, in the order they are checked.
fn bounds(config: &Config) -> Vec<Bound> {
    let (server, db, workers) = (&config.server, &config.database, &config.workers);
    let mut out = vec![
        bound("server.max_body_bytes", server.max_body_bytes, 1, 16 << 20),
        bound("database.max_connections", db.max_connections, 1, 1_000),
        bound("database.busy_timeout_ms", db.busy_timeout_ms, 0, 3_600_000),
        bound(
            "database.connect_timeout_secs",
            db.connect_timeout_secs,
            1,
            300,
        ),
        bound(
            "oauth.state_ttl_secs",
            config.oauth.state_ttl_secs,
            1,
            86_400,
        ),
        bound(
            "sandbox.max_window_days",
            config.sandbox.max_window_days,
            1,
            MAX_DAYS,
        ),
        bound(
            "sandbox.request_timeout_secs",
            config.sandbox.request_timeout_secs,
            1,
            MAX_TIMEOUT_SECS,
        ),
        bound("workers.concurrency", workers.concurrency, 1, 10_000),
        bound(
            "workers.response_memory_bytes",
            workers.response_memory_bytes,
            1 << 20,
            1 << 40,
        ),
        bound("workers.batch_size", workers.batch_size, 1, 10_000),
        bound(
            "workers.poll_interval_ms",
            workers.poll_interval_ms,
            10,
            60_000,
        ),
        bound("workers.dispatch_batch", workers.dispatch_batch, 1, 100_000),
        bound(
            "workers.dispatch_lease_secs",
            workers.dispatch_lease_secs,
            1,
            MAX_SECS,
        ),
        bound(
            "workers.fetch_lease_secs",
            workers.fetch_lease_secs,
            1,
            MAX_SECS,
        ),
        // 0: a transfer yields after every window (a long backfill then shares the workers
        // most evenly).
        bound("workers.max_run_secs", workers.max_run_secs, 0, MAX_SECS),
        bound(
            "workers.stale_refresh_secs",
            workers.stale_refresh_secs,
            1,
            MAX_SECS,
        ),
        bound(
            "workers.run_retention_days",
            workers.run_retention_days,
            1,
            3650,
        ),
        bound(
            "workers.run_max_rows",
            workers.run_max_rows,
            1000,
            10_000_000_000,
        ),
        // 0: everything freed is due at once.
        bound(
            "workers.resume_spread_secs",
            workers.resume_spread_secs,
            0,
            86_400,
        ),
        bound(
            "workers.bulk_max_connections",
            workers.bulk_max_connections,
            1,
            1_000_000,
        ),
        // At least a minute to read the dry run; at most a day, so stale plans go.
        bound(
            "workers.bulk_plan_ttl_secs",
            workers.bulk_plan_ttl_secs,
            60,
            86_400,
        ),
        bound(
            "metrics.sample_interval_secs",
            config.metrics.sample_interval_secs,
            1,
            3_600,
        ),
        bound("email.port", config.email.port, 1, 65_535),
        bound(
            "email.timeout_secs",
            config.email.timeout_secs,
            1,
            MAX_TIMEOUT_SECS,
        ),
        bound("email.max_attempts", config.email.max_attempts, 1, 100),
        bound(
            "invitations.expiry_days",
            config.invitations.expiry_days,
            1,
            365,
        ),
        bound(
            "invitations.resend_interval_secs",
            config.invitations.resend_interval_secs,
            1,
            MAX_SECS,
        ),
    ];
    for (name, partner) in &config.partners {
        let key = |field: &str| format!("partners.{name}.{field}");
        let transfer = &partner.transfer;
        // Unset: the partner kind's horizon, whose values are the defaults' (bounded alike).
        let reread = transfer.reread.clone().unwrap_or_default();
        out.extend([
            bound(
                key("request_timeout_secs"),
                partner.request_timeout_secs,
                1,
                MAX_TIMEOUT_SECS,
            ),
            bound(key("max_window_days"), partner.max_window_days, 1, MAX_DAYS),
            bound(
                key("max_records_per_page"),
                partner.max_records_per_page,
                1,
                100_000,
            ),
            bound(
                key("max_response_bytes"),
                partner.max_response_bytes,
                1024,
                1 << 30,
            ),
            bound(
                key("max_pages_per_fetch"),
                partner.max_pages_per_fetch,
                1,
                100_000,
            ),
            bound(
                key("transfer.backfill_days"),
                transfer.backfill_days,
                0,
                MAX_DAYS,
            ),
            bound(
                key("transfer.overlap_secs"),
                transfer.overlap_secs,
                0,
                MAX_SECS,
            ),
            bound(
                key("transfer.failure_budget_secs"),
                transfer.failure_budget_secs,
                1,
                MAX_SECS,
            ),
            bound(
                key("transfer.retry_base_secs"),
                transfer.retry_base_secs,
                1,
                MAX_SECS,
            ),
            bound(
                key("transfer.window_slack_secs"),
                transfer.window_slack_secs,
                0,
                MAX_SECS,
            ),
            bound(
                key("transfer.max_future_secs"),
                transfer.max_future_secs,
                0,
                MAX_SECS,
            ),
            bound(
                key("transfer.max_retry_after_secs"),
                transfer.max_retry_after_secs,
                1,
                MAX_SECS,
            ),
            bound(
                key("transfer.reread.horizon_secs"),
                reread.horizon_secs,
                1,
                MAX_SECS,
            ),
            bound(
                key("transfer.reread.interval_secs"),
                reread.interval_secs,
                60,
                MAX_SECS,
            ),
            // The backoff doubles from the base up to the cap: a cap below the base is a typo.
            bound(
                key("transfer.retry_cap_secs"),
                transfer.retry_cap_secs,
                transfer.retry_base_secs.max(1),
                MAX_SECS,
            ),
            bound(
                key("transfer.breaker.window_secs"),
                transfer.breaker.window_secs,
                1,
                MAX_SECS,
            ),
            bound(
                key("transfer.breaker.min_failures"),
                transfer.breaker.min_failures,
                1,
                1_000_000,
            ),
            bound(
                key("transfer.breaker.probe_base_secs"),
                transfer.breaker.probe_base_secs,
                1,
                MAX_SECS,
            ),
            bound(
                key("transfer.breaker.probe_cap_secs"),
                transfer.breaker.probe_cap_secs,
                transfer.breaker.probe_base_secs.max(1),
                MAX_SECS,
            ),
        ]);
    }
    out
}

/// Every bound, then the relations between keys.
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    for Bound {
        key,
        value,
        min,
        max,
    } in bounds(config)
    {
        if !(min..=max).contains(&value) {
            return Err(ConfigError::invalid(
                key,
                format!("must be between {min} and {max} (got {value})"),
            ));
        }
    }
    let workers = &config.workers;
    let most = QueueSettings::max_concurrency(workers.batch_size);
    if workers.concurrency > most {
        return Err(ConfigError::invalid(
            "workers.concurrency",
            format!(
                "must be at most twice workers.batch_size ({} × 2 = {most}, got {}): a worker \
                 fetches batch_size jobs at a time and cannot keep more handlers busy",
                workers.batch_size, workers.concurrency
            ),
        ));
    }
    for (name, partner) in &config.partners {
        // The policy in force is the kind's with `[sync]`'s fields over it, so it is checked
        // once resolved (engine::schedule::SyncPolicy::validate has the bounds).
        if let Err(e) = partner.sync_policy() {
            return Err(ConfigError::invalid(
                format!("partners.{name}.sync"),
                e.to_string(),
            ));
        }
        let ratio = partner.transfer.breaker.failure_ratio;
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(ConfigError::invalid(
                format!("partners.{name}.transfer.breaker.failure_ratio"),
                format!("must be more than 0 and at most 1 (got {ratio})"),
            ));
        }
        let rate = partner.requests_per_second;
        if !(rate > 0.0 && rate <= MAX_REQUESTS_PER_SECOND) {
            return Err(ConfigError::invalid(
                format!("partners.{name}.requests_per_second"),
                format!("must be more than 0 and at most {MAX_REQUESTS_PER_SECOND} (got {rate})"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bounded key is documented with its range, so the table and the docs cannot drift.
    #[test]
    fn every_bound_is_documented() {
        let docs = include_str!("../../docs/configuration.md");
        let mut config = Config::default();
        config.partners.insert(
            "p".to_owned(),
            toml::from_str(
                r#"
                display_name = "P"
                kind = "pump"
                client_id = "c"
                client_secret = "s"
                authorize_url = "https://p.example/a"
                token_url = "https://p.example/t"
                redirect_url = "https://t.example/v1/oauth/p/callback"
                api_base_url = "https://p.example/"
                "#,
            )
            .unwrap(),
        );
        for b in bounds(&config) {
            let key = b.key.replace("partners.p.", "partners.<name>.");
            let line = docs
                .lines()
                .find(|l| l.starts_with(&format!("| `{key}` |")))
                .unwrap_or_else(|| panic!("docs/configuration.md has no row for `{key}`"));
            let max = b.max.to_string();
            assert!(
                line.contains(&max),
                "`{key}`: the docs' row does not give the maximum {max}: {line}"
            );
        }
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let mut config = Config::default();
        config.workers.max_run_secs = MAX_SECS + 1;
        let err = check(&config).unwrap_err();
        assert_eq!(err.key(), Some("workers.max_run_secs"));
        assert!(err.to_string().contains(&MAX_SECS.to_string()), "{err}");
    }
}
