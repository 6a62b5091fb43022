//! A sandbox on 127.0.0.1:0 with auto-consent and a frozen clock, and the clients to talk to it.

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use engine::secret::SecretString;
use reqwest::redirect::Policy;
use sandbox::{DataContext, Flavor, Sandbox, SandboxConfig, config::default_history_start};
use serde_json::json;
use tokio::sync::oneshot;
use url::Url;
use workflows::{
    adapters::DataClient,
    partner::{PartnerClient, PartnerConfig},
    records::{RawRecord, RecordKind},
};

/// [`DataClient::fetch_window`] collected: every record of the window, in the order served.
/// The sandbox serves only readable records; an unreadable one fails the test.
pub trait FetchAll {
    fn fetch_all<'a>(
        &'a self,
        token: &'a SecretString,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        kinds: Option<&'a [RecordKind]>,
    ) -> impl Future<Output = Result<Vec<RawRecord>, workflows::adapters::FetchError>> + Send + 'a;
}

impl FetchAll for DataClient {
    async fn fetch_all<'a>(
        &'a self,
        token: &'a SecretString,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        kinds: Option<&'a [RecordKind]>,
    ) -> Result<Vec<RawRecord>, workflows::adapters::FetchError> {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        let _share = self
            .fetch_window(token, start, end, kinds, &mut |kind, item| match item {
                Ok(value) => out.push(RawRecord { kind, value }),
                Err(e) => unreadable.push(e),
            })
            .await?;
        assert!(
            unreadable.is_empty(),
            "the sandbox served unreadable records: {unreadable:?}"
        );
        Ok(out)
    }
}

/// Where the tests pretend Tributary lives (callbacks are never followed).
pub const APP: &str = "http://app.test";
/// The partner user every test connects as.
pub const USER: &str = "alice";

/// The frozen sandbox clock: mid-February 2026, six weeks of history.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 10, 12, 0, 0).unwrap()
}

/// The sandbox publishes immediately unless a test sets publication faults.
pub fn ctx() -> DataContext {
    DataContext::immediate(default_history_start())
}

pub struct TestSandbox {
    pub sandbox: Sandbox,
    pub base: String,
    _shutdown: oneshot::Sender<()>,
}

impl TestSandbox {
    pub async fn spawn() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let mut config = SandboxConfig::new(Url::parse(&base).unwrap(), &Url::parse(APP).unwrap());
        config.auto_consent_user = Some(USER.to_owned());
        let sandbox = Sandbox::new(config);
        sandbox.set_now(Some(t0()));
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(sandbox::serve(sandbox.clone(), listener, async {
            rx.await.ok();
        }));
        TestSandbox {
            sandbox,
            base,
            _shutdown: tx,
        }
    }

    /// The partner's configuration as an operator would write it (limits left to defaults).
    pub fn config(&self, flavor: Flavor) -> PartnerConfig {
        let urls = self.sandbox.urls(flavor);
        let client = self
            .sandbox
            .config()
            .clients
            .iter()
            .find(|c| c.flavor == flavor)
            .unwrap();
        let (auth, scopes) = match flavor {
            Flavor::Cgm => ("client_secret_post", json!(["offline_access"])),
            Flavor::Pump => (
                "client_secret_basic",
                json!(["pump.read", "offline_access"]),
            ),
        };
        serde_json::from_value(json!({
            "display_name": "test", "kind": if flavor == Flavor::Cgm { "dexcom" } else { "pump" },
            "client_id": client.client_id, "client_secret": client.client_secret,
            "client_auth": auth, "authorize_url": urls.authorize, "token_url": urls.token,
            "revoke_url": urls.revoke, "issuer": urls.issuer,
            "redirect_url": format!("{APP}/v1/oauth/{}/callback", partner_name(flavor)),
            "scopes": scopes, "api_base_url": urls.api_base, "request_timeout_secs": 5,
        }))
        .unwrap()
    }

    /// Authorizes (auto-consent) and exchanges the code; returns the access token.
    pub async fn connect(&self, flavor: Flavor) -> SecretString {
        self.connect_with(flavor, self.config(flavor)).await
    }

    pub async fn connect_with(&self, flavor: Flavor, config: PartnerConfig) -> SecretString {
        let client = PartnerClient::new(partner_name(flavor), config).unwrap();
        let request = client.authorization_request();
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        let resp = http.get(request.url.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 302);
        let location = Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
        let code = location
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code");
        client
            .exchange_code(&code.into(), &request.pkce_verifier, self.sandbox.now())
            .await
            .unwrap()
            .access_token
    }

    /// A data client under a partner name of its own, so tests never share a rate limiter.
    pub fn client(&self, flavor: Flavor, tweak: impl FnOnce(&mut PartnerConfig)) -> DataClient {
        let mut config = self.config(flavor);
        config.requests_per_second = 1000.0;
        tweak(&mut config);
        DataClient::new(&unique_name(), &config).unwrap()
    }

    pub fn data_requests(&self, flavor: Flavor) -> u64 {
        let stats = self.sandbox.stats();
        match flavor {
            Flavor::Cgm => stats.cgm.data_requests,
            Flavor::Pump => stats.pump.data_requests,
        }
    }
}

pub fn partner_name(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Cgm => sandbox::DEFAULT_CGM_PARTNER_NAME,
        Flavor::Pump => sandbox::DEFAULT_PUMP_PARTNER_NAME,
    }
}

pub fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("adapter-test-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The records of one kind, in the order served.
pub fn of_kind(records: &[RawRecord], kind: RecordKind) -> Vec<serde_json::Value> {
    records
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.value.clone())
        .collect()
}

/// Serializes the sandbox's own records for comparison.
pub fn values<T: serde::Serialize>(records: Vec<T>) -> Vec<serde_json::Value> {
    records
        .into_iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

/// The `field` of every record (`recordId`, `id`).
pub fn ids(records: &[serde_json::Value], field: &str) -> Vec<String> {
    records
        .iter()
        .map(|r| r[field].as_str().unwrap().to_owned())
        .collect()
}

/// Equal lists, reported by length and first difference rather than a dump of health data.
#[track_caller]
pub fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} items, want {}; first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}
