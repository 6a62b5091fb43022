//! Each way the partner fails, injected by the sandbox, lands in the right `FetchError`.

use std::time::Duration as StdDuration;

use chrono::Duration;
use engine::secret::SecretString;
use sandbox::{Flavor, Window};
use workflows::adapters::{DataClient, FetchError, RetryAfter};

use crate::helpers::{FetchAll, TestSandbox, USER, t0};

/// A one-hour window just before the frozen clock.
async fn fetch(client: &DataClient, token: &SecretString) -> Result<usize, FetchError> {
    let records = client
        .fetch_all(token, t0() - Duration::hours(1), t0(), None)
        .await?;
    Ok(records.len())
}

/// The error never carries the token or a record.
fn assert_clean(err: &FetchError, token: &SecretString) {
    let text = format!("{err} {err:?}");
    assert!(!text.contains(token.expose().as_str()), "{text}");
    assert!(
        !text.contains("recordId") && !text.contains("<html"),
        "{text}"
    );
}

fn transient_status(err: &FetchError) -> Option<u16> {
    match err {
        FetchError::Transient { status, .. } => *status,
        other => panic!("expected Transient, got {other:?}"),
    }
}

#[tokio::test]
async fn expired_access_token_is_unauthorized() {
    let sb = TestSandbox::spawn().await;
    sb.sandbox
        .faults()
        .update(|f| f.access_token_ttl_secs = Some(60));
    for flavor in [Flavor::Cgm, Flavor::Pump] {
        let token = sb.connect(flavor).await;
        let client = sb.client(flavor, |_| {});
        assert!(fetch(&client, &token).await.unwrap() > 0);
        sb.sandbox.advance(Duration::seconds(61));
        let err = fetch(&client, &token).await.unwrap_err();
        assert_eq!(err, FetchError::Unauthorized, "{flavor:?}");
        assert!(!err.is_retryable(), "a refresh comes first");
        assert_eq!(err.code(), "data_unauthorized");
        sb.sandbox.set_now(Some(t0()));
    }
}

#[tokio::test]
async fn revoked_grant_is_unauthorized() {
    let sb = TestSandbox::spawn().await;
    for flavor in [Flavor::Cgm, Flavor::Pump] {
        let token = sb.connect(flavor).await;
        let client = sb.client(flavor, |_| {});
        assert!(fetch(&client, &token).await.is_ok());
        assert_eq!(sb.sandbox.revoke_user(flavor, USER), 1);
        assert_eq!(
            fetch(&client, &token).await.unwrap_err(),
            FetchError::Unauthorized
        );
    }
}

#[tokio::test]
async fn rate_limit_carries_retry_after() {
    let sb = TestSandbox::spawn().await;
    let token = sb.connect(Flavor::Pump).await;
    let client = sb.client(Flavor::Pump, |_| {});
    sb.sandbox.faults().update(|f| {
        f.rate_limit_next.data = 1;
        f.retry_after_secs = 7;
    });
    let err = fetch(&client, &token).await.unwrap_err();
    assert_eq!(
        err,
        FetchError::RateLimited {
            retry_after: RetryAfter::Given(StdDuration::from_secs(7))
        }
    );
    assert!(err.is_retryable());
    assert_eq!(err.code(), "data_rate_limited");
    assert!(
        fetch(&client, &token).await.is_ok(),
        "the fault was consumed"
    );
}

#[tokio::test]
async fn server_errors_are_transient() {
    let sb = TestSandbox::spawn().await;
    let token = sb.connect(Flavor::Cgm).await;
    let client = sb.client(Flavor::Cgm, |_| {});
    for status in [500u16, 502, 503] {
        sb.sandbox.faults().update(|f| {
            f.fail_next.data = 1;
            f.fail_status = status;
        });
        let err = fetch(&client, &token).await.unwrap_err();
        assert_eq!(transient_status(&err), Some(status));
        assert!(err.is_retryable());
        assert_eq!(err.code(), "data_transient");
        assert_clean(&err, &token);
    }
    assert!(fetch(&client, &token).await.is_ok());
}

#[tokio::test]
async fn malformed_bodies_are_transient() {
    let sb = TestSandbox::spawn().await;
    for flavor in [Flavor::Cgm, Flavor::Pump] {
        let token = sb.connect(flavor).await;
        let client = sb.client(flavor, |_| {});
        // Odd counts truncate the JSON, even counts send an HTML page labelled JSON.
        sb.sandbox.faults().update(|f| f.malformed_next.data = 2);
        for _ in 0..2 {
            let err = fetch(&client, &token).await.unwrap_err();
            assert_eq!(transient_status(&err), Some(200), "{flavor:?}");
            assert!(err.to_string().contains("malformed body"), "{err}");
            assert!(err.to_string().contains("application/json"), "{err}");
            assert_clean(&err, &token);
        }
        assert!(fetch(&client, &token).await.is_ok());
    }
}

#[tokio::test]
async fn latency_beyond_the_timeout_is_transient() {
    let sb = TestSandbox::spawn().await;
    let token = sb.connect(Flavor::Cgm).await;
    let client = sb.client(Flavor::Cgm, |c| c.request_timeout_secs = 1);
    sb.sandbox.faults().update(|f| f.latency_ms = 1500);
    let err = fetch(&client, &token).await.unwrap_err();
    assert_eq!(transient_status(&err), None);
    assert!(err.to_string().contains("timed out after 1s"), "{err}");
    assert_clean(&err, &token);
}

#[tokio::test]
async fn maintenance_is_transient() {
    let sb = TestSandbox::spawn().await;
    let token = sb.connect(Flavor::Cgm).await;
    let client = sb.client(Flavor::Cgm, |_| {});
    sb.sandbox.faults().update(|f| f.maintenance_now = true);
    assert_eq!(
        transient_status(&fetch(&client, &token).await.unwrap_err()),
        Some(503)
    );
    // A scheduled window on the sandbox clock.
    sb.sandbox.faults().update(|f| {
        f.maintenance_now = false;
        f.maintenance = Some(Window {
            start: t0() + Duration::minutes(10),
            end: t0() + Duration::minutes(70),
        });
    });
    assert!(fetch(&client, &token).await.is_ok());
    sb.sandbox.advance(Duration::minutes(30));
    assert_eq!(
        transient_status(&fetch(&client, &token).await.unwrap_err()),
        Some(503)
    );
}

#[tokio::test]
async fn our_mistakes_are_configuration_errors() {
    let sb = TestSandbox::spawn().await;

    // The pump token lacks pump.read: 403 insufficient_scope.
    let mut config = sb.config(Flavor::Pump);
    config.scopes = vec![sandbox::OFFLINE_ACCESS.to_owned()];
    let narrow = sb.connect_with(Flavor::Pump, config).await;
    let pump = sb.client(Flavor::Pump, |_| {});
    let err = fetch(&pump, &narrow).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Configuration { status: Some(403), reason } if reason.contains("forbidden")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(err.code(), "data_configuration");

    // A page size the partner refuses: 400 invalid_request about parameters we built.
    let token = sb.connect(Flavor::Pump).await;
    let big = sb.client(Flavor::Pump, |c| c.max_records_per_page = 501);
    let err = fetch(&big, &token).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Configuration { status: Some(400), reason } if reason.contains("invalid_request")),
        "{err:?}"
    );

    // A window limit above the partner's: its 400 is ours too.
    let cgm_token = sb.connect(Flavor::Cgm).await;
    let wide = sb.client(Flavor::Cgm, |c| c.max_window_days = 31);
    let err = wide
        .fetch_all(&cgm_token, t0() - Duration::days(31), t0(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Configuration {
                status: Some(400),
                ..
            }
        ),
        "{err:?}"
    );

    // A wrong base URL: 404 on a documented endpoint.
    let lost = sb.client(Flavor::Cgm, |c| {
        c.api_base_url = format!("{}/nowhere/", sb.base).parse().unwrap();
    });
    let err = fetch(&lost, &cgm_token).await.unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Configuration {
                status: Some(404),
                ..
            }
        ),
        "{err:?}"
    );
    assert_clean(&err, &cgm_token);
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let sb = TestSandbox::spawn().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap().port();
    drop(listener);
    let client = sb.client(Flavor::Cgm, |c| {
        c.api_base_url = format!("http://127.0.0.1:{closed}/cgm").parse().unwrap();
    });
    let err = fetch(&client, &"t".into()).await.unwrap_err();
    assert_eq!(transient_status(&err), None);
}
