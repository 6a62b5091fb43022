//! Every numeric key is bounded at load time, the key named: no value can reach time arithmetic
//! or sizing and overflow there.

use tributary::config::{CliOverrides, Config, MAX_DAYS, MAX_SECS, MAX_TIMEOUT_SECS};

use crate::{env, load_err, partners::PARTNERS, write};

/// `(variable, a value outside the bounds, the key named)`. The partner keys use the environment
/// spelling of `acme-pump` (see `environment.rs`).
fn out_of_range() -> Vec<(String, String, String)> {
    let over_secs = (MAX_SECS + 1).to_string();
    let over_days = (MAX_DAYS + 1).to_string();
    let over_timeout = (MAX_TIMEOUT_SECS + 1).to_string();
    let huge = u64::MAX.to_string();
    let mut cases: Vec<(&str, String, &str)> = vec![
        (
            "SERVER__MAX_BODY_BYTES",
            "0".into(),
            "server.max_body_bytes",
        ),
        (
            "SERVER__MAX_BODY_BYTES",
            "99999999999".into(),
            "server.max_body_bytes",
        ),
        (
            "DATABASE__MAX_CONNECTIONS",
            "1001".into(),
            "database.max_connections",
        ),
        (
            "DATABASE__BUSY_TIMEOUT_MS",
            huge.clone(),
            "database.busy_timeout_ms",
        ),
        (
            "DATABASE__CONNECT_TIMEOUT_SECS",
            "0".into(),
            "database.connect_timeout_secs",
        ),
        (
            "DATABASE__CONNECT_TIMEOUT_SECS",
            "301".into(),
            "database.connect_timeout_secs",
        ),
        ("OAUTH__STATE_TTL_SECS", "0".into(), "oauth.state_ttl_secs"),
        (
            "OAUTH__STATE_TTL_SECS",
            huge.clone(),
            "oauth.state_ttl_secs",
        ),
        (
            "SANDBOX__MAX_WINDOW_DAYS",
            over_days.clone(),
            "sandbox.max_window_days",
        ),
        (
            "SANDBOX__REQUEST_TIMEOUT_SECS",
            over_timeout.clone(),
            "sandbox.request_timeout_secs",
        ),
        ("WORKERS__CONCURRENCY", "0".into(), "workers.concurrency"),
        ("WORKERS__BATCH_SIZE", "0".into(), "workers.batch_size"),
        ("WORKERS__BATCH_SIZE", "10001".into(), "workers.batch_size"),
        (
            "WORKERS__POLL_INTERVAL_MS",
            "5".into(),
            "workers.poll_interval_ms",
        ),
        (
            "WORKERS__DISPATCH_BATCH",
            "0".into(),
            "workers.dispatch_batch",
        ),
        (
            "WORKERS__DISPATCH_LEASE_SECS",
            over_secs.clone(),
            "workers.dispatch_lease_secs",
        ),
        (
            "WORKERS__FETCH_LEASE_SECS",
            over_secs.clone(),
            "workers.fetch_lease_secs",
        ),
        (
            "WORKERS__MAX_RUN_SECS",
            huge.clone(),
            "workers.max_run_secs",
        ),
        (
            "WORKERS__STALE_REFRESH_SECS",
            "0".into(),
            "workers.stale_refresh_secs",
        ),
        (
            "WORKERS__STALE_REFRESH_SECS",
            over_secs.clone(),
            "workers.stale_refresh_secs",
        ),
    ];
    let partner: Vec<(&str, String, &str)> = vec![
        ("REQUEST_TIMEOUT_SECS", over_timeout, "request_timeout_secs"),
        ("MAX_WINDOW_DAYS", "0".into(), "max_window_days"),
        ("MAX_WINDOW_DAYS", over_days.clone(), "max_window_days"),
        ("MAX_RECORDS_PER_PAGE", "0".into(), "max_records_per_page"),
        ("MAX_PAGES_PER_FETCH", "0".into(), "max_pages_per_fetch"),
        ("REQUESTS_PER_SECOND", "0".into(), "requests_per_second"),
        ("REQUESTS_PER_SECOND", "inf".into(), "requests_per_second"),
        (
            "TRANSFER__BACKFILL_DAYS",
            over_days,
            "transfer.backfill_days",
        ),
        (
            "TRANSFER__BACKFILL_DAYS",
            "4294967295".into(),
            "transfer.backfill_days",
        ),
        (
            "TRANSFER__OVERLAP_SECS",
            huge.clone(),
            "transfer.overlap_secs",
        ),
        (
            "TRANSFER__FAILURE_BUDGET_SECS",
            "0".into(),
            "transfer.failure_budget_secs",
        ),
        (
            "TRANSFER__FAILURE_BUDGET_SECS",
            over_secs.clone(),
            "transfer.failure_budget_secs",
        ),
        (
            "TRANSFER__WINDOW_SLACK_SECS",
            huge.clone(),
            "transfer.window_slack_secs",
        ),
        (
            "TRANSFER__MAX_FUTURE_SECS",
            huge.clone(),
            "transfer.max_future_secs",
        ),
        (
            "TRANSFER__RETRY_BASE_SECS",
            "0".into(),
            "transfer.retry_base_secs",
        ),
        (
            "TRANSFER__RETRY_BASE_SECS",
            huge,
            "transfer.retry_base_secs",
        ),
        // Below the base (300 by default).
        (
            "TRANSFER__RETRY_CAP_SECS",
            "299".into(),
            "transfer.retry_cap_secs",
        ),
        (
            "TRANSFER__RETRY_CAP_SECS",
            over_secs,
            "transfer.retry_cap_secs",
        ),
        ("SYNC__INTERVAL_MAX_SECS", "99999999".into(), "sync"),
        ("SYNC__BLACKOUT_SPREAD_SECS", "99999999".into(), "sync"),
    ];
    let mut out: Vec<(String, String, String)> = cases
        .drain(..)
        .map(|(var, value, key)| (format!("TRIBUTARY_{var}"), value, key.to_owned()))
        .collect();
    out.extend(partner.into_iter().map(|(var, value, key)| {
        (
            format!("TRIBUTARY_PARTNERS__ACME_PUMP__{var}"),
            value,
            format!("partners.acme-pump.{key}"),
        )
    }));
    out
}

#[test]
fn every_numeric_key_is_bounded_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "p.toml", PARTNERS);
    for (var, value, key) in out_of_range() {
        let (named, msg) = load_err(
            Some(&file),
            env(&[(var.as_str(), value.as_str())]),
            CliOverrides::default(),
        );
        assert!(
            named == key || named.starts_with(&format!("{key}.")),
            "{var}={value}: named `{named}`, expected `{key}`: {msg}"
        );
        assert!(msg.starts_with("invalid configuration: "), "{msg}");
    }
}

#[test]
fn the_bounds_themselves_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "p.toml", PARTNERS);
    let secs = MAX_SECS.to_string();
    let days = MAX_DAYS.to_string();
    let timeout = MAX_TIMEOUT_SECS.to_string();
    let c = Config::load_from(
        Some(&file),
        env(&[
            ("TRIBUTARY_WORKERS__MAX_RUN_SECS", secs.as_str()),
            ("TRIBUTARY_WORKERS__FETCH_LEASE_SECS", secs.as_str()),
            ("TRIBUTARY_WORKERS__STALE_REFRESH_SECS", "1"),
            ("TRIBUTARY_WORKERS__CONCURRENCY", "200"),
            ("TRIBUTARY_WORKERS__BATCH_SIZE", "100"),
            ("TRIBUTARY_OAUTH__STATE_TTL_SECS", "86400"),
            (
                "TRIBUTARY_PARTNERS__ACME_PUMP__TRANSFER__BACKFILL_DAYS",
                days.as_str(),
            ),
            ("TRIBUTARY_PARTNERS__ACME_PUMP__TRANSFER__OVERLAP_SECS", "0"),
            (
                "TRIBUTARY_PARTNERS__ACME_PUMP__TRANSFER__RETRY_CAP_SECS",
                "300",
            ),
            (
                "TRIBUTARY_PARTNERS__ACME_PUMP__REQUEST_TIMEOUT_SECS",
                timeout.as_str(),
            ),
        ]),
        CliOverrides::default(),
    )
    .unwrap();
    assert_eq!(c.workers.max_run_secs, MAX_SECS);
    assert_eq!(c.workers.concurrency, 200);
    let pump = &c.partners["acme-pump"];
    assert_eq!(u64::from(pump.transfer.backfill_days), MAX_DAYS);
    assert_eq!(pump.transfer.retry_cap_secs, 300);
    assert_eq!(pump.request_timeout_secs, MAX_TIMEOUT_SECS);
}

#[test]
fn concurrency_above_twice_the_batch_names_both_keys() {
    let (key, msg) = load_err(
        None,
        env(&[
            ("TRIBUTARY_WORKERS__CONCURRENCY", "64"),
            ("TRIBUTARY_WORKERS__BATCH_SIZE", "20"),
        ]),
        CliOverrides::default(),
    );
    assert_eq!(key, "workers.concurrency", "{msg}");
    assert!(msg.contains("workers.batch_size"), "{msg}");
}
