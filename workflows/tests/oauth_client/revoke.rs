use std::time::Duration;

use workflows::partner::{ClientAuth, OAuthError, PartnerClient};

use super::mock::{MockPartner, NAME, Reply, assert_transient, config_for, now, secret};

#[tokio::test]
async fn revoke_sends_hint_and_classifies_answers() {
    let replies = vec![
        Reply::new(200, "text/plain", ""),
        Reply::new(503, "text/plain", "").header("retry-after", "5"),
        Reply::error(400, "invalid_grant"),
        Reply::error(401, "invalid_client"),
    ];
    let mock = MockPartner::start(replies).await;
    let client = mock.client(ClientAuth::ClientSecretBasic);
    client.revoke(&secret("rt")).await.unwrap();
    let error = assert_transient(client.revoke(&secret("rt")).await, Some(503));
    assert!(
        matches!(error, OAuthError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(5))
    );
    // RFC 7009: an unknown or already-dead token is as good as revoked.
    client.revoke(&secret("rt")).await.unwrap();
    let error = client.revoke(&secret("rt")).await.unwrap_err();
    assert_eq!(
        error,
        OAuthError::Configuration {
            code: "invalid_client".into()
        }
    );
    let req = &mock.seen()[0];
    assert_eq!(req.path, "/revoke");
    assert_eq!(req.param("token"), Some("rt"));
    assert_eq!(req.param("token_type_hint"), Some("refresh_token"));
    assert!(req.authorization.as_deref().unwrap().starts_with("Basic "));
}

#[tokio::test]
async fn revoke_without_endpoint_is_a_no_op() {
    let mock = MockPartner::start(vec![]).await;
    let mut config = mock.config(ClientAuth::ClientSecretBasic);
    config.revoke_url = None;
    PartnerClient::new(NAME, config)
        .unwrap()
        .revoke(&secret("rt"))
        .await
        .unwrap();
    assert!(mock.seen().is_empty());
}

/// Workers spawn these calls on a multi-threaded runtime: the futures must be `Send`.
#[test]
fn client_and_futures_are_send() {
    fn is_send<T: Send + Sync + 'static>(_: &T) {}
    fn future_is_send<F: std::future::Future + Send>(_: F) {}
    let client = PartnerClient::new(
        NAME,
        config_for("http://127.0.0.1:1", ClientAuth::ClientSecretBasic),
    )
    .unwrap();
    is_send(&client);
    let (code, token) = (secret("c"), secret("r"));
    future_is_send(client.exchange_code(&code, &token, now()));
    future_is_send(client.refresh(&token, now()));
    future_is_send(client.revoke(&token));
}
