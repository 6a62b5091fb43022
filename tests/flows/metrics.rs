//! The Prometheus endpoint (docs/operations.md#metrics), scraped over real HTTP: a connection
//! made and transferred by the real workers shows in the counters, the step histogram and the
//! gauges; without `[metrics] listen` nothing serves them, in a production-like configuration
//! too.

use std::{collections::BTreeMap, time::Duration};

use engine::{metrics as m, testing::TestDb};
use reqwest::StatusCode;
use tributary::serve::Application;

use crate::helpers::{TestApp, eventually, test_config};

engine::backend_tests!(
    a_transfer_shows_in_the_scraped_metrics,
    no_metrics_are_served_unless_configured,
);

/// One sample line: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (comments skipped); panics on a malformed line, so a
/// broken exposition fails the test.
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                (name, parse_labels(body, line))
            }
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name: {line}"
        );
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(mut body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !body.is_empty() {
        let (key, rest) = body.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("{line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label: {line}"),
            }
        };
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        body = rest[end + 1..].trim_start_matches(',');
    }
    labels
}

/// The sum of the samples named `name` whose labels include every pair of `with`.
fn total(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(http: &reqwest::Client, url: &str) -> Vec<Sample> {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&response.text().await.unwrap())
}

async fn a_transfer_shows_in_the_scraped_metrics(db: &TestDb) {
    let mut config = test_config(db);
    config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    config.metrics.sample_interval_secs = 1;
    let app = Application::build(config).await.unwrap();
    let addr = app.metrics_addr().expect("the metrics listener is bound");
    let url = format!("http://{addr}/metrics");
    let app = TestApp::from_app(app);
    let main_listener = app.base.clone();

    let connection = app.connect_fully("mira", "sandbox-cgm").await;
    let id = TestApp::id(&connection);
    let store = app.workflows.store().clone();
    eventually("the first transfer by the workers", || async {
        store.get(id).await.unwrap().last_sync_at.is_some()
    })
    .await;

    // The transfer is committed; its counters follow the commit's return, and the gauges are
    // sampled every second: wait for both.
    let committed = chrono::Utc::now().timestamp() as f64;
    let fetch = [("step", "fetch")];
    let stored = [("partner", "sandbox-cgm"), ("change", "inserted")];
    let duration_count = format!("{}_count", m::STEP_DURATION);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let samples = loop {
        let samples = scrape(&app.http, &url).await;
        if total(&samples, m::SAMPLED_AT, &[]) >= committed
            && total(&samples, m::RECORDS_STORED, &stored) > 0.0
            && total(&samples, &duration_count, &fetch) >= 1.0
        {
            break samples;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scrape shows the transfer (records stored, its run, a later sample)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let samples = &samples;
    let partner = ("partner", "sandbox-cgm");
    assert_eq!(
        total(samples, m::CONNECTIONS, &[partner, ("state", "active")]),
        1.0
    );
    // Every state of the partner is reported, the empty ones as 0.
    for state in engine::state::State::ALL {
        let n = samples
            .iter()
            .filter(|s| s.name == m::CONNECTIONS)
            .filter(|s| s.labels.get("state").map(String::as_str) == Some(state.as_str()))
            .filter(|s| s.labels.get("partner").map(String::as_str) == Some("sandbox-cgm"))
            .count();
        assert_eq!(n, 1, "one {} series for {state}", m::CONNECTIONS);
    }
    assert_eq!(
        total(
            samples,
            m::CONNECTIONS,
            &[partner, ("state", "authorizing")]
        ),
        0.0
    );
    assert!(total(samples, m::SAMPLED_AT, &[]) > 1.7e9);
    assert!(samples.iter().any(|s| s.name == m::TRANSFERS_IN_FLIGHT));
    for step in ["fetch", "refresh", "revoke", "deliver"] {
        let depth = samples.iter().find(|s| {
            s.name == m::QUEUE_DEPTH && s.labels.get("step").map(String::as_str) == Some(step)
        });
        assert!(depth.is_some(), "a queue depth for {step}");
    }
    assert!(samples.iter().any(|s| s.name == m::SCHEDULING_LAG));
    assert!(samples.iter().any(|s| s.name == m::STUCK_ANY));

    // Counters are the process's (other tests of this binary add to them): at least ours.
    let authorized = [
        ("event", "authorized"),
        ("from", "authorizing"),
        ("to", "active"),
    ];
    assert!(total(samples, m::TRANSITIONS, &authorized) >= 1.0);
    assert!(total(samples, m::TRANSITIONS, &[("event", "start_authorization")]) >= 1.0);
    assert!(
        total(
            samples,
            m::PARTNER_RESPONSES,
            &[partner, ("api", "data"), ("status", "200")]
        ) >= 1.0,
        "the data API answered 200"
    );
    assert!(
        total(
            samples,
            m::PARTNER_RESPONSES,
            &[partner, ("api", "oauth"), ("status", "200")]
        ) >= 1.0,
        "the token endpoint answered 200"
    );
    let stored = total(
        samples,
        m::RECORDS_STORED,
        &[partner, ("change", "inserted")],
    );
    assert!(stored > 0.0, "records stored: {stored}");

    // The step histogram: buckets ending in +Inf, whose count matches the runs counted.
    let histogram = |suffix: &str| format!("{}{suffix}", m::STEP_DURATION);
    let runs = total(samples, &histogram("_count"), &fetch);
    assert!(runs >= 1.0, "a fetch run was timed");
    assert_eq!(
        total(
            samples,
            &histogram("_bucket"),
            &[("step", "fetch"), ("le", "+Inf")]
        ),
        runs
    );
    assert!(total(samples, &histogram("_sum"), &fetch) > 0.0);
    assert!(total(samples, m::STEP_RUNS, &fetch) >= runs.min(1.0));

    // Nothing personal in any label: no connection id, no user.
    for sample in samples {
        for value in sample.labels.values() {
            assert!(
                !value.contains(&id.to_string()) && !value.contains("mira"),
                "{sample:?}"
            );
        }
    }
    // The API's listener does not serve them.
    let response = app
        .http
        .get(format!("{main_listener}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    app.stop().await;
    // Stopping the application closes the metrics listener.
    let gone = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(gone.is_err(), "the metrics listener is closed");
}

async fn no_metrics_are_served_unless_configured(db: &TestDb) {
    // A production-like configuration, loaded as the binary loads it: no `[metrics]`.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tributary.toml");
    let development = test_config(db);
    std::fs::write(
        &file,
        format!(
            "dev_secrets = false\n[database]\nurl = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
             [auth]\njwt_secret = \"{}\"\n[crypto]\nactive_key_id = \"k1\"\n[crypto.keys]\nk1 = \"{}\"\n",
            db.url,
            development.auth.jwt_secret.as_ref().unwrap().expose(),
            development.crypto.keys["k1"].expose(),
        ),
    )
    .unwrap();
    let config = tributary::config::Config::load_from(
        Some(&file),
        tributary::config::EnvVars::default(),
        Default::default(),
    )
    .unwrap();
    assert!(config.metrics.listen.is_none());
    let app = Application::build(config).await.unwrap();
    assert_eq!(app.metrics_addr(), None, "no metrics listener");
    assert!(!app.banner().contains("/metrics"));
    let base = app.base_url();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "not on the API's listener"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
