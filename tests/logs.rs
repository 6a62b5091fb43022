//! Tokens, codes, secrets and health data never reach the logs. A connection's whole life runs
//! through the service (connect, OAuth callback, the first transfer by the real workers, a
//! refresh with rotation, disconnect with revocation at the partner) while every log event of
//! every crate is captured at TRACE, with span fields, twice: as the text format writes it and
//! as `log.json = true` writes it (`tributary::logging::json_layer`). Both captures are searched
//! for each secret that passed through; every JSON line must parse, and every line logged
//! inside a step must name the step's connection and step.
//!
//! Its own test binary: the capturing subscriber is process-global.

#[path = "flows/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use engine::{model::Actor, testing::TestDb};
use reqwest::StatusCode;
use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};

use crate::helpers::{TestApp, eventually, test_config};

engine::backend_tests!(no_secret_or_health_datum_reaches_the_logs);

type Buffer = Arc<Mutex<Vec<u8>>>;

/// Everything every test of this binary logged: (as text, as JSON lines).
fn capture() -> &'static (Buffer, Buffer) {
    static CAPTURE: OnceLock<(Buffer, Buffer)> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let (text, json) = (Buffer::default(), Buffer::default());
        let (text_sink, json_sink) = (text.clone(), json.clone());
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("trace"))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || Sink(text_sink.clone())),
            )
            .with(tributary::logging::json_layer(move || {
                Sink(json_sink.clone())
            }))
            .init();
        (text, json)
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn no_secret_or_health_datum_reaches_the_logs(db: &TestDb) {
    let capture = capture();
    let config = test_config(db);
    let mut secrets: Vec<(String, String)> = vec![
        (
            "JWT signing secret".into(),
            config.auth.jwt_secret.as_ref().unwrap().expose().clone(),
        ),
        (
            "token encryption key".into(),
            config.crypto.keys["k1"].expose().clone(),
        ),
    ];
    // Email through a real SMTP server, with credentials; a webhook endpoint with its secret.
    let smtp = sandbox::smtp::SmtpServer::start().await.unwrap();
    smtp.require_auth("tributary", "smtp-password-1");
    let mut config = config;
    config.email.relay = Some("127.0.0.1".to_owned());
    config.email.port = smtp.port();
    config.email.tls = tributary::config::TlsMode::None;
    config.email.username = Some("tributary".to_owned());
    config.email.password = Some("smtp-password-1".into());
    config.email.from = Some("no-reply@tidepool.example".to_owned());
    config.email.invite_link = Some("https://app.example/c/{partner}?i={id}".to_owned());
    secrets.push(("SMTP password".into(), "smtp-password-1".into()));
    let (_, hook_secret) = workflows::deliver::signature::WebhookSecret::generate();
    let receiver = sandbox::webhooks::WebhookReceiver::start(&hook_secret)
        .await
        .unwrap();
    config.webhooks.insert(
        "web".to_owned(),
        tributary::config::WebhookConfig {
            url: receiver.url().parse().unwrap(),
            secret: hook_secret.clone().into(),
        },
    );
    secrets.push(("webhook secret".into(), hook_secret.clone()));
    secrets.push((
        "webhook key".into(),
        hook_secret.trim_start_matches("whsec_").to_owned(),
    ));
    let app = TestApp::spawn_with(config).await;
    for client in &app.sandbox.config().clients {
        secrets.push(("client secret".into(), client.client_secret.clone()));
    }
    let user = "lena";
    let bearer = app.user_token(user);
    secrets.push(("API bearer token".into(), bearer.clone()));

    // Connect: the authorization URL carries `state` and the PKCE challenge; the callback
    // carries the authorization code.
    let (status, body) = app.connect(user, "sandbox-cgm").await;
    assert!(status.is_success(), "{body}");
    let authorize = url::Url::parse(body["authorizeUrl"].as_str().unwrap()).unwrap();
    for (key, value) in authorize.query_pairs() {
        if key == "state" || key == "code_challenge" {
            secrets.push((format!("authorize {key}"), value.into_owned()));
        }
    }
    let callback = app
        .consent(authorize.as_str(), &format!("{user}-at-partner"), true)
        .await;
    for (key, value) in callback.query_pairs() {
        if key == "code" || key == "state" {
            secrets.push((format!("callback {key}"), value.into_owned()));
        }
    }
    let (status, page) = app.follow_callback(&callback).await;
    assert!(status.is_success(), "{status} {page}");
    let id = app
        .workflows
        .store()
        .list_for_user(&engine::ids::UserId::parse(user).unwrap())
        .await
        .unwrap()
        .into_iter()
        .next()
        .expect("connected")
        .id;
    let store = app.workflows.store().clone();
    let first = store.tokens(id).await.unwrap().unwrap();
    secrets.push(("access token".into(), first.access_token.expose().clone()));
    secrets.push((
        "refresh token".into(),
        first.refresh_token.as_ref().unwrap().expose().clone(),
    ));

    // The real workers run the first transfer within seconds.
    eventually("the first transfer", || async {
        store.get(id).await.unwrap().last_sync_at.is_some()
    })
    .await;
    let data = app
        .get(&format!("/v1/users/{user}/data?type=cbg&limit=5"), &bearer)
        .await;
    assert_eq!(data.0, StatusCode::OK, "{}", data.1);
    let datum = data.1["data"][0].clone();
    assert!(datum.is_object(), "{}", data.1);

    // A refresh rotates both tokens.
    app.workflows
        .refresh(id, Actor::system("test"))
        .await
        .unwrap();
    let second = store.tokens(id).await.unwrap().unwrap();
    assert_ne!(second.access_token, first.access_token);
    secrets.push((
        "rotated access token".into(),
        second.access_token.expose().clone(),
    ));
    secrets.push((
        "rotated refresh token".into(),
        second.refresh_token.as_ref().unwrap().expose().clone(),
    ));

    // A clinician invites a patient: the address is personal data, and so are its parts.
    let address = "mira.patient@example.org";
    secrets.push(("invited patient's address".into(), address.into()));
    secrets.push(("invited patient's mailbox".into(), "mira.patient".into()));
    let clinician = app.jwt.mint_for_clinics(
        api::auth::Role::Clinician,
        "dr-a",
        &["c1".to_owned()],
        std::time::Duration::from_secs(600),
    );
    let (status, invitation) = app
        .post_json(
            "/v1/clinics/c1/invites",
            &clinician,
            serde_json::json!({ "patientUserId": "mira", "email": address, "partner": "sandbox-cgm" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{invitation}");
    let mail = smtp.wait_for(1, std::time::Duration::from_secs(30)).await;
    assert_eq!(mail[0].rcpt_to, [address]);
    let events = receiver
        .wait_for_events(3, std::time::Duration::from_secs(30))
        .await;
    assert!(events.len() >= 3, "the webhook events went out: {events:?}");

    // Disconnect; the refresh token is revoked at the partner in the background.
    let (status, body) = app
        .post(&format!("/v1/connections/{id}/disconnect"), &bearer)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually("the partner confirms the revocation", || async {
        store
            .journal(id)
            .await
            .unwrap()
            .iter()
            .any(|e| e.event == "partner_revocation_confirmed")
    })
    .await;
    app.stop().await;

    let json = String::from_utf8_lossy(&capture.1.lock().unwrap()).into_owned();
    json_lines_name_their_step(&json, id);
    let text = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    for log in [&text, &json] {
        // The capture works and saw this flow (so the test can fail).
        assert!(
            log.contains(&id.to_string()),
            "the log mentions the connection"
        );
        assert!(
            log.contains("/callback"),
            "the log saw the callback request"
        );
        nothing_secret_in(log, &secrets, &datum);
    }
}

/// Every JSON line parses; every line inside a `step` span names the span's connection and
/// step; the workers' transfer and revocation of this connection logged such lines, and so did
/// a delivery (a deliver job serves several connections and is logged under the first).
fn json_lines_name_their_step(json: &str, id: engine::ids::ConnectionId) {
    let (mut ours, mut any) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    for line in json.lines() {
        let line: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a JSON log line does not parse ({e}): {line}"));
        assert!(
            line["fields"].is_object() && line["level"].is_string(),
            "{line}"
        );
        let Some(spans) = line["spans"].as_array() else {
            continue;
        };
        for span in spans.iter().filter(|s| s["name"] == "step") {
            let (connection, step) = (&span["connection"], &span["step"]);
            assert!(
                connection.is_string() && step.is_string(),
                "a step's line without its connection and step: {line}"
            );
            let step = step.as_str().unwrap().to_owned();
            if *connection == id.to_string() {
                ours.insert(step.clone());
            }
            any.insert(step);
        }
    }
    for step in ["fetch", "revoke"] {
        assert!(
            ours.contains(step),
            "no JSON line of the {step} step of {id}: {ours:?}"
        );
    }
    assert!(
        any.contains("deliver"),
        "no JSON line of a deliver step: {any:?}"
    );
}

/// No secret of `secrets` and no health datum (the partner's field names, `datum`'s reading)
/// is in `log`.
fn nothing_secret_in(log: &str, secrets: &[(String, String)], datum: &serde_json::Value) {
    for (what, secret) in secrets {
        assert!(secret.len() >= 8, "{what} is too short to search for");
        if let Some(at) = log.find(secret.as_str()) {
            let line_start = log[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = log[at..].find('\n').map_or(log.len(), |i| at + i);
            panic!(
                "the {what} reached the log:\n{}",
                log[line_start..line_end].replace(secret.as_str(), "<SECRET>")
            );
        }
    }
    // Health data: the stored datum's readings, and the partner's raw field names (a logged
    // response body or record would carry them).
    for field in [
        "\"trendRate\"",
        "\"transmitterTicks\"",
        "\"transmitterGeneration\"",
    ] {
        assert!(
            !log.contains(field),
            "a partner record reached the log ({field})"
        );
    }
    let value = datum["value"].to_string();
    // As the text format and the JSON format write a field.
    for needle in [format!("value={value}"), format!("\"value\":{value}")] {
        assert!(
            !log.contains(&needle),
            "a reading reached the log ({needle})"
        );
    }
}
