//! The hostile partner (`sandbox::hostile`) as a configured partner: its configuration and the
//! OAuth dance through it, shared by the memory benchmark and the integration tests.

use std::time::Duration;

use anyhow::Context as _;
use api::auth::{JwtKeys, Role};
use engine::ids::ConnectionId;
use reqwest::StatusCode;
use url::Url;
use workflows::partner::{
    ClientAuth, PartnerConfig, PartnerKind,
    config::{DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_TOKEN_BYTES},
};

/// The partner name the hostile partner is configured under.
pub const HOSTILE: &str = "hostile";

/// A Dexcom-kind partner served by the hostile partner at `base` (`http://127.0.0.1:<port>`).
/// The redirect URL's port is a placeholder: [`connect`] sends the browser to the real one.
pub fn hostile_partner(base: &str) -> PartnerConfig {
    let url = |path: &str| Url::parse(&format!("{base}{path}")).expect("a loopback URL");
    PartnerConfig {
        display_name: "Hostile".to_owned(),
        kind: PartnerKind::Dexcom,
        client_id: "tributary".to_owned(),
        client_secret: "hostile-secret".to_owned().into(),
        client_auth: ClientAuth::ClientSecretPost,
        authorize_url: url("/authorize"),
        token_url: url("/token"),
        revoke_url: Some(url("/revoke")),
        redirect_url: Url::parse("http://127.0.0.1:9/v1/oauth/hostile/callback")
            .expect("a valid URL"),
        issuer: None,
        require_issuer: false,
        scopes: vec!["offline_access".to_owned()],
        api_base_url: url("/"),
        request_timeout_secs: 30,
        refresh_timeout_secs: None,
        max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        max_window_days: 30,
        max_records_per_page: 500,
        requests_per_second: 1000.0,
        max_pages_per_fetch: 10,
        sync: Default::default(),
        transfer: Default::default(),
    }
}

/// Connects `user` through the hostile partner's OAuth flow against the Tributary at
/// `app_base`: (the callback's status, the connection id).
pub async fn connect(
    app_base: &str,
    jwt: &JwtKeys,
    user: &str,
) -> anyhow::Result<(StatusCode, ConnectionId)> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let token = jwt.mint(Role::User, user, Duration::from_secs(600));
    let body: serde_json::Value = http
        .post(format!("{app_base}/v1/users/{user}/connections"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "partner": HOSTILE }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id: ConnectionId = body["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .context("the connection has an id")?;
    let authorize = body["authorizeUrl"].as_str().context("an authorize URL")?;
    let answer = http.get(authorize).send().await?;
    let location = answer
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .context("the hostile partner redirects")?;
    let mut callback = Url::parse(location)?;
    let port = Url::parse(app_base)?.port();
    callback
        .set_port(port)
        .map_err(|()| anyhow::anyhow!("cannot set the callback's port"))?;
    let status = http.get(callback).send().await?.status();
    Ok((status, id))
}
