//! Token responses the partner should never have sent: refused as partner faults
//! (`Configuration`), so operators are alerted and the user's connection is not blamed.

use std::time::Duration;

use workflows::partner::{ClientAuth, OAuthError};

use super::mock::{MockPartner, Reply, exchange_with, now, secret, token_body};

fn refused(code: &str) -> OAuthError {
    OAuthError::Configuration { code: code.into() }
}

#[tokio::test]
async fn a_token_type_other_than_bearer_is_refused_on_exchange() {
    for token_type in [r#""mac""#, r#""DPoP""#, r#""Bearer ""#, r#""""#, "7", "{}"] {
        let body = format!(r#"{{"access_token":"a","token_type":{token_type}}}"#);
        let (result, mock) = exchange_with(Reply::json(200, body)).await;
        assert_eq!(
            result.unwrap_err(),
            refused("unsupported_token_type"),
            "{token_type}"
        );
        assert_eq!(mock.seen().len(), 1);
    }
}

#[tokio::test]
async fn bearer_in_any_case_and_a_missing_token_type_are_accepted() {
    for token_type in [
        r#","token_type":"Bearer""#,
        r#","token_type":"bearer""#,
        r#","token_type":"BEARER""#,
        // Required by RFC 6749 but omitted by some partners: read as Bearer (docs/oauth.md).
        "",
        r#","token_type":null"#,
    ] {
        let body = format!(r#"{{"access_token":"a"{token_type}}}"#);
        let (result, _mock) = exchange_with(Reply::json(200, body)).await;
        assert_eq!(result.unwrap().access_token.expose(), "a", "{token_type}");
    }
}

#[tokio::test]
async fn a_token_type_other_than_bearer_is_refused_on_refresh() {
    let body = r#"{"access_token":"a2","token_type":"N_A","refresh_token":"r2"}"#;
    let mock = MockPartner::start(vec![Reply::json(200, body)]).await;
    let result = mock
        .client(ClientAuth::ClientSecretBasic)
        .refresh(&secret("r1"), now())
        .await;
    assert_eq!(result.unwrap_err(), refused("unsupported_token_type"));
}

#[tokio::test]
async fn a_one_megabyte_access_token_is_refused_and_never_echoed() {
    let huge = "A".repeat(1_000_000);
    let (result, mock) = exchange_with(Reply::json(200, token_body(&huge, Some("r"), ""))).await;
    let error = result.unwrap_err();
    assert_eq!(error, refused("token_too_large"));
    assert!(!error.is_retryable());
    assert!(!format!("{error} {error:?}").contains("AAAA"));
    // Refused on receipt: nothing more was sent to the partner with it.
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn tokens_up_to_the_default_limit_are_accepted_and_one_byte_more_is_refused() {
    let limit = 16_384;
    let at_limit = "R".repeat(limit);
    let (result, _mock) =
        exchange_with(Reply::json(200, token_body(&at_limit, Some(&at_limit), ""))).await;
    let grant = result.unwrap();
    assert_eq!(grant.access_token.expose().len(), limit);
    assert_eq!(grant.refresh_token.unwrap().expose().len(), limit);

    let over = "R".repeat(limit + 1);
    let replies = vec![
        Reply::json(200, token_body("a", Some(&over), "")),
        Reply::json(200, token_body(&over, None, "")),
    ];
    let mock = MockPartner::start(replies).await;
    let client = mock.client(ClientAuth::ClientSecretBasic);
    for _ in 0..2 {
        let result = client.refresh(&secret("r1"), now()).await;
        assert_eq!(result.unwrap_err(), refused("token_too_large"));
    }
}

/// The mock's `request_timeout_secs` is 1; refreshes get the longer default of 60 s. Only the
/// outcome is asserted, never how long anything took.
#[tokio::test]
async fn a_refresh_waits_longer_than_other_requests() {
    let mut slow = Reply::json(200, token_body("a2", Some("r2"), ""));
    slow.delay = Duration::from_secs(3);
    let mock = MockPartner::start(vec![slow.clone()]).await;
    let client = mock.client(ClientAuth::ClientSecretBasic);
    let grant = client.refresh(&secret("r1"), now()).await.unwrap();
    assert_eq!(grant.refresh_token.unwrap().expose(), "r2");

    // The same slow answer to a code exchange still times out after request_timeout_secs.
    let (result, _mock) = exchange_with(slow).await;
    let error = result.unwrap_err();
    assert!(
        error.is_retryable() && error.to_string().contains("timed out"),
        "{error}"
    );
}
