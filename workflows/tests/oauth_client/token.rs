use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use workflows::partner::{ClientAuth, OAuthError, PartnerClient};

use super::mock::{
    CLIENT_ID, CLIENT_SECRET, MockPartner, NAME, Reply, assert_transient, config_for,
    exchange_with, now, secret, token_body,
};

#[tokio::test]
async fn exchange_parses_tokens_and_sends_code_verifier_and_identical_redirect() {
    let (access, refresh) = ("A".repeat(4096), "R".repeat(2048));
    let extra = r#","scope":"offline_access","refresh_expires_in":99,"not-before-policy":0,"session_state":{"x":[1]}"#;
    let (result, mock) =
        exchange_with(Reply::json(200, token_body(&access, Some(&refresh), extra))).await;
    let grant = result.unwrap();
    assert_eq!(grant.access_token.expose(), &access);
    assert_eq!(grant.refresh_token.as_ref().unwrap().expose(), &refresh);
    assert_eq!(
        grant.expires_at,
        Some(now() + chrono::Duration::seconds(7200))
    );
    assert_eq!(grant.scope.as_deref(), Some("offline_access"));
    assert!(!format!("{grant:?}").contains("AAAA"));
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.path, "/token");
    assert_eq!(req.param("grant_type"), Some("authorization_code"));
    assert_eq!(req.param("code"), Some("the-code"));
    assert_eq!(req.param("code_verifier"), Some("v".repeat(43).as_str()));
    let config = mock.config(ClientAuth::ClientSecretBasic);
    assert_eq!(
        req.param("redirect_uri"),
        Some(config.redirect_url.as_str())
    );
}

#[tokio::test]
async fn granted_scope_defaults_to_requested_when_absent() {
    let (result, _mock) = exchange_with(Reply::json(
        200,
        r#"{"access_token":"a","token_type":"bearer"}"#,
    ))
    .await;
    let grant = result.unwrap();
    assert_eq!(grant.scope.as_deref(), Some("offline_access egv.read"));
    assert_eq!(grant.expires_at, None);
    assert!(grant.refresh_token.is_none());
}

#[tokio::test]
async fn client_secret_basic_puts_credentials_in_the_header_only() {
    let replies = vec![Reply::json(200, token_body("a", None, "")); 2];
    let mock = MockPartner::start([replies, vec![Reply::json(200, "")]].concat()).await;
    let client = mock.client(ClientAuth::ClientSecretBasic);
    client
        .exchange_code(&secret("c"), &secret("v".repeat(43).as_str()), now())
        .await
        .unwrap();
    client.refresh(&secret("r"), now()).await.unwrap();
    client.revoke(&secret("r")).await.unwrap();
    // RFC 6749 §2.3.1: form-encode id and secret, then Basic.
    let expected = format!(
        "Basic {}",
        STANDARD.encode("tributary+client:s3cr%2Bt%2F%3D%26x")
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 3);
    for req in seen {
        assert_eq!(
            req.authorization.as_deref(),
            Some(expected.as_str()),
            "{}",
            req.path
        );
        assert!(req.param("client_secret").is_none() && req.param("client_id").is_none());
        assert!(!req.body.contains("s3cr"));
        assert_eq!(req.query, None);
    }
}

#[tokio::test]
async fn client_secret_post_puts_credentials_in_the_body_only() {
    let replies = vec![Reply::json(200, token_body("a", None, "")); 2];
    let mock = MockPartner::start([replies, vec![Reply::json(200, "")]].concat()).await;
    let client = mock.client(ClientAuth::ClientSecretPost);
    client
        .exchange_code(&secret("c"), &secret("v".repeat(43).as_str()), now())
        .await
        .unwrap();
    client.refresh(&secret("r"), now()).await.unwrap();
    client.revoke(&secret("r")).await.unwrap();
    let seen = mock.seen();
    assert_eq!(seen.len(), 3);
    for req in seen {
        assert_eq!(req.authorization, None, "{}", req.path);
        assert_eq!(req.param("client_id"), Some(CLIENT_ID));
        assert_eq!(req.param("client_secret"), Some(CLIENT_SECRET));
        assert_eq!(req.query, None);
    }
}

#[tokio::test]
async fn invalid_grant_is_permanent() {
    let (result, _mock) = exchange_with(Reply::error(400, "invalid_grant")).await;
    let error = result.unwrap_err();
    assert_eq!(error, OAuthError::InvalidGrant);
    assert!(!error.is_retryable());
    assert_eq!(error.code(), "invalid_grant");
}

#[tokio::test]
async fn configuration_codes_are_configuration_errors() {
    let cases = [
        (401, "invalid_client"),
        (400, "unauthorized_client"),
        (400, "unsupported_grant_type"),
        (400, "invalid_scope"),
        (400, "invalid_request"),
        (400, "some_vendor_extension"),
    ];
    for (status, code) in cases {
        let (result, _mock) = exchange_with(Reply::error(status, code)).await;
        let error = result.unwrap_err();
        assert_eq!(error, OAuthError::Configuration { code: code.into() });
        assert!(!error.is_retryable());
        assert_eq!(error.code(), "oauth_configuration");
    }
}

#[tokio::test]
async fn outages_and_garbage_are_transient() {
    let cases = [
        Reply::new(
            500,
            "text/html",
            "<html><body>Internal Server Error</body></html>",
        ),
        Reply::new(503, "text/plain", ""),
        Reply::error(503, "invalid_grant"),
        // A 400 that is not an OAuth error body is an outage, not a revocation
        // (docs/oauth.md#token-endpoint-errors, rule 4).
        Reply::new(
            400,
            "text/html",
            "<html>Bad Gateway-ish invalid_grant</html>",
        ),
        Reply::new(401, "text/plain", "Unauthorized"),
        Reply::error(400, "temporarily_unavailable"),
        Reply::json(200, r#"{"access_token":"a","#),
        Reply::json(200, r#"{"token_type":"bearer"}"#),
        Reply::json(200, r#"{"access_token":""}"#),
        Reply::new(200, "text/html", "<html>maintenance</html>"),
    ];
    for reply in cases {
        let status = reply.status;
        let (result, _mock) = exchange_with(reply).await;
        assert_transient(result, Some(status));
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let reply =
        Reply::new(302, "text/plain", "").header("location", "http://127.0.0.1:1/elsewhere");
    let (result, mock) = exchange_with(reply).await;
    assert_transient(result, Some(302));
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn rate_limits_honour_retry_after_seconds_and_http_date() {
    let (result, _mock) =
        exchange_with(Reply::error(429, "slow_down").header("retry-after", "30")).await;
    let error = assert_transient(result, Some(429));
    assert!(
        matches!(error, OAuthError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(30))
    );
    // HTTP-date, measured from the response's Date header.
    let reply = Reply::new(503, "text/plain", "")
        .header("date", "Thu, 02 Jan 2025 03:04:05 GMT")
        .header("retry-after", "Thu, 02 Jan 2025 03:06:05 GMT");
    let (result, _mock) = exchange_with(reply).await;
    let error = assert_transient(result, Some(503));
    assert!(
        matches!(error, OAuthError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(120))
    );
}

#[tokio::test]
async fn timeouts_are_transient() {
    let mut reply = Reply::json(200, token_body("a", None, ""));
    reply.delay = Duration::from_secs(3);
    let started = std::time::Instant::now();
    let (result, _mock) = exchange_with(reply).await;
    let error = assert_transient(result, None);
    assert!(error.to_string().contains("timed out"), "{error}");
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client =
        PartnerClient::new(NAME, config_for(&base, ClientAuth::ClientSecretBasic)).unwrap();
    let result = client.refresh(&secret("r"), now()).await;
    assert_transient(result, None);
    assert_transient(client.revoke(&secret("r")).await, None);
}

#[tokio::test]
async fn errors_never_echo_secrets() {
    let (result, _mock) = exchange_with(Reply::new(400, "text/plain", "bad code the-code")).await;
    let error = result.unwrap_err();
    assert!(!format!("{error} {error:?}").contains("the-code"));
    let client = PartnerClient::new(
        NAME,
        config_for("http://127.0.0.1:1", ClientAuth::ClientSecretPost),
    )
    .unwrap();
    assert!(!format!("{client:?}").contains("s3cr"));
}

#[tokio::test]
async fn refresh_returns_rotated_token_or_none() {
    let replies = vec![
        Reply::json(200, token_body("a2", Some("r2"), "")),
        Reply::json(200, token_body("a3", None, "")),
        Reply::error(400, "invalid_grant"),
    ];
    let mock = MockPartner::start(replies).await;
    let client = mock.client(ClientAuth::ClientSecretBasic);
    let rotated = client.refresh(&secret("r1"), now()).await.unwrap();
    assert_eq!(rotated.access_token.expose(), "a2");
    assert_eq!(rotated.refresh_token.unwrap().expose(), "r2");
    assert_eq!(rotated.expires_at, Some(now() + chrono::Duration::hours(2)));
    // No rotation: None, and the caller keeps r2.
    let kept = client.refresh(&secret("r2"), now()).await.unwrap();
    assert!(kept.refresh_token.is_none());
    let reused = client.refresh(&secret("r1"), now()).await;
    assert_eq!(reused.unwrap_err(), OAuthError::InvalidGrant);
    let seen = mock.seen();
    assert_eq!(seen[0].param("grant_type"), Some("refresh_token"));
    assert_eq!(seen[0].param("refresh_token"), Some("r1"));
    assert_eq!(seen[1].param("refresh_token"), Some("r2"));
    assert!(seen[0].param("redirect_uri").is_none());
}
