//! The built-in sandbox partner: the two partners configured against it when none are
//! configured, and `tributary sandbox`, the simulated partner on its own.

use std::net::SocketAddr;

use anyhow::Context as _;
use sandbox::{Flavor, Sandbox, SandboxConfig};
use tokio::net::TcpListener;
use url::Url;
use workflows::partner::{ClientAuth, PartnerConfig, PartnerKind};

/// The two partners the built-in sandbox simulates, configured against it.
pub(super) fn sandbox_partners(
    sandbox: &Sandbox,
    base: &str,
    settings: &crate::config::SandboxSettings,
) -> Vec<(String, PartnerConfig)> {
    let partner = |flavor: Flavor, name: &str, display: &str| {
        let urls = sandbox.urls(flavor);
        let client = sandbox
            .config()
            .clients
            .iter()
            .find(|c| c.flavor == flavor)
            .expect("the sandbox registers a client per flavor");
        PartnerConfig {
            display_name: display.to_owned(),
            kind: match flavor {
                Flavor::Cgm => PartnerKind::Dexcom,
                Flavor::Pump => PartnerKind::Pump,
            },
            client_id: client.client_id.clone(),
            client_secret: client.client_secret.clone().into(),
            client_auth: match client.auth_method {
                sandbox::ClientAuthMethod::Basic => ClientAuth::ClientSecretBasic,
                sandbox::ClientAuthMethod::Post => ClientAuth::ClientSecretPost,
            },
            authorize_url: urls.authorize,
            token_url: urls.token,
            revoke_url: Some(urls.revoke),
            redirect_url: Url::parse(&format!("{base}/v1/oauth/{name}/callback"))
                .expect("valid URL"),
            require_issuer: urls.issuer.is_some(),
            issuer: urls.issuer,
            scopes: match flavor {
                Flavor::Cgm => vec![sandbox::OFFLINE_ACCESS.to_owned()],
                Flavor::Pump => vec![
                    sandbox::PUMP_READ_SCOPE.to_owned(),
                    sandbox::OFFLINE_ACCESS.to_owned(),
                ],
            },
            api_base_url: urls.api_base,
            request_timeout_secs: settings.request_timeout_secs,
            refresh_timeout_secs: None,
            max_token_bytes: workflows::partner::config::DEFAULT_MAX_TOKEN_BYTES,
            max_window_days: settings.max_window_days,
            max_response_bytes: workflows::partner::config::DEFAULT_MAX_RESPONSE_BYTES,
            max_records_per_page: 500,
            requests_per_second: 50.0,
            max_pages_per_fetch: 100,
            // The kind's policy: Dexcom's interval and nightly blackout for the CGM.
            sync: workflows::partner::SyncConfig::default(),
            transfer: workflows::fetch::TransferConfig::default(),
        }
    };
    vec![
        (
            sandbox::DEFAULT_CGM_PARTNER_NAME.to_owned(),
            partner(
                Flavor::Cgm,
                sandbox::DEFAULT_CGM_PARTNER_NAME,
                "Sandbox CGM (Dexcom-shaped)",
            ),
        ),
        (
            sandbox::DEFAULT_PUMP_PARTNER_NAME.to_owned(),
            partner(
                Flavor::Pump,
                sandbox::DEFAULT_PUMP_PARTNER_NAME,
                "Sandbox insulin pump",
            ),
        ),
    ]
}

/// `tributary sandbox`: the simulated partner on its own, at `listen`, with its clients
/// redirecting to the Tributary at `tributary_url` (its `server.public_url`).
pub async fn standalone(
    listen: SocketAddr,
    tributary_url: Url,
    auto_consent_user: Option<String>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let mut config = SandboxConfig::new(
        Url::parse(&format!("http://{addr}")).expect("socket address URL"),
        &tributary_url,
    );
    config.auto_consent_user = auto_consent_user;
    let sb = Sandbox::new(config);
    let tributary = tributary_url.as_str().trim_end_matches('/');
    eprintln!(
        "\n  Sandbox partner listening on http://{addr}/ (index of URLs there)\n  Clients redirect to {tributary}/v1/oauth/{{{},{}}}/callback\n  Admin API: http://{addr}/admin/faults, /admin/clock, /admin/stats\n",
        sandbox::DEFAULT_CGM_PARTNER_NAME,
        sandbox::DEFAULT_PUMP_PARTNER_NAME,
    );
    sandbox::serve(sb, listener, super::shutdown_signal())
        .await
        .context("sandbox server failed")
}
