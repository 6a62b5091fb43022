//! The partner settings behind the refusals in `faults.rs`: `max_token_bytes` and
//! `refresh_timeout_secs`, their defaults and their start-up checks.

use std::time::Duration;

use serde_json::json;
use workflows::partner::{
    ClientAuth, OAuthError, PartnerClient, PartnerConfig, PartnerConfigError,
};

use super::mock::{MockPartner, NAME, Reply, config_json, now, secret, token_body};

fn config(base: &str, edit: serde_json::Value) -> PartnerConfig {
    let mut value = config_json(base, ClientAuth::ClientSecretBasic);
    for (key, v) in edit.as_object().unwrap() {
        value[key] = v.clone();
    }
    serde_json::from_value(value).unwrap()
}

#[test]
fn defaults() {
    let c = config("http://127.0.0.1:1", json!({}));
    assert_eq!(c.max_token_bytes, 16_384);
    assert_eq!(c.refresh_timeout_secs, None);
    assert_eq!(c.refresh_timeout(), Duration::from_secs(60));
    // A request timeout above the default refresh timeout carries it up, so the default is
    // always valid.
    let c = config("http://127.0.0.1:1", json!({ "request_timeout_secs": 90 }));
    assert_eq!(c.refresh_timeout(), Duration::from_secs(90));
    PartnerClient::new(NAME, c).unwrap();
}

#[test]
fn limits_are_checked_at_start_up() {
    let reject = |edit| PartnerClient::new(NAME, config("http://127.0.0.1:1", edit)).unwrap_err();
    for edit in [
        json!({ "request_timeout_secs": 10, "refresh_timeout_secs": 9 }),
        json!({ "refresh_timeout_secs": 241 }),
        json!({ "request_timeout_secs": 300 }),
    ] {
        let err = reject(edit.clone());
        assert!(
            matches!(err, PartnerConfigError::RefreshTimeout { .. }),
            "{edit}: {err}"
        );
        assert!(err.to_string().contains("refresh_timeout_secs"), "{err}");
    }
    for value in [0, 256 * 1024 + 1] {
        let err = reject(json!({ "max_token_bytes": value }));
        assert!(
            matches!(err, PartnerConfigError::MaxTokenBytes { .. }),
            "{value}: {err}"
        );
    }
    for edit in [
        json!({ "request_timeout_secs": 10, "refresh_timeout_secs": 10 }),
        json!({ "refresh_timeout_secs": 240, "max_token_bytes": 256 * 1024 }),
        json!({ "max_token_bytes": 1 }),
    ] {
        PartnerClient::new(NAME, config("http://127.0.0.1:1", edit)).unwrap();
    }
}

#[tokio::test]
async fn a_configured_token_limit_is_applied() {
    let replies = vec![
        Reply::json(200, token_body("12345678", Some("12345678"), "")),
        Reply::json(200, token_body("123456789", None, "")),
    ];
    let mock = MockPartner::start(replies).await;
    let client =
        PartnerClient::new(NAME, config(&mock.base, json!({ "max_token_bytes": 8 }))).unwrap();
    client.refresh(&secret("r"), now()).await.unwrap();
    assert_eq!(
        client.refresh(&secret("r"), now()).await.unwrap_err(),
        OAuthError::Configuration {
            code: "token_too_large".into()
        }
    );
}

/// A configured refresh timeout is the one used: equal to the request timeout (1 s), a refresh
/// answered after 3 s times out.
#[tokio::test]
async fn a_configured_refresh_timeout_is_applied() {
    let mut slow = Reply::json(200, token_body("a2", Some("r2"), ""));
    slow.delay = Duration::from_secs(3);
    let mock = MockPartner::start(vec![slow]).await;
    let client = PartnerClient::new(
        NAME,
        config(&mock.base, json!({ "refresh_timeout_secs": 1 })),
    )
    .unwrap();
    let error = client.refresh(&secret("r1"), now()).await.unwrap_err();
    assert!(error.to_string().contains("timed out after 1s"), "{error}");
}
