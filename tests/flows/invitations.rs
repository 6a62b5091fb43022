//! Clinician invitations end to end: a real SMTP conversation with the suite's mail server
//! (`sandbox::smtp`), the patient connecting through the sandbox, the clinic's view, resend,
//! cancel and expiry — on both backends.

use std::time::Duration;

use api::auth::Role;
use chrono::TimeDelta;
use engine::testing::TestDb;
use reqwest::StatusCode;
use sandbox::smtp::SmtpServer;
use serde_json::{Value, json};
use tributary::config::{ClinicConfig, Config, TlsMode};

use crate::{
    harness::Harness,
    helpers::{TestApp, eventually, test_config},
};

engine::backend_tests!(
    a_clinician_invites_and_the_patient_connects,
    another_clinic_sees_nothing,
    resend_is_limited_cancel_and_expiry_end_invitations,
    in_development_emails_go_to_a_directory,
);

pub const INVITE_LINK: &str = "https://app.example/connect/{partner}?invitation={id}";
pub const PATIENT_EMAIL: &str = "pat.one@example.org";

/// The test configuration with email through `smtp` (authenticated, plain on loopback) and a
/// clinic `c1` named "North Clinic" whose contact is `care@north.example`.
pub fn mail_config(db: &TestDb, smtp: &SmtpServer) -> Config {
    let mut config = test_config(db);
    let email = &mut config.email;
    email.relay = Some("127.0.0.1".to_owned());
    email.port = smtp.port();
    email.tls = TlsMode::None;
    email.username = Some("tributary".to_owned());
    email.password = Some("mail-secret".into());
    email.timeout_secs = 5;
    email.from = Some("Tidepool <no-reply@tidepool.example>".to_owned());
    email.reply_to = Some("support@tidepool.example".to_owned());
    email.invite_link = Some(INVITE_LINK.to_owned());
    email.reconnect_link =
        Some("https://app.example/reconnect/{partner}?connection={connection}".to_owned());
    smtp.require_auth("tributary", "mail-secret");
    config.clinics.insert(
        "c1".to_owned(),
        ClinicConfig {
            name: "North Clinic".to_owned(),
            contact_email: Some("care@north.example".to_owned()),
        },
    );
    config
}

pub fn clinician(app: &TestApp, subject: &str, clinics: &[&str]) -> String {
    let clinics: Vec<String> = clinics.iter().map(|c| (*c).to_owned()).collect();
    app.jwt.mint_for_clinics(
        Role::Clinician,
        subject,
        &clinics,
        Duration::from_secs(3600),
    )
}

pub async fn invite(app: &TestApp, token: &str, clinic: &str, user: &str) -> (StatusCode, Value) {
    app.post_json(
        &format!("/v1/clinics/{clinic}/invites"),
        token,
        json!({ "patientUserId": user, "email": PATIENT_EMAIL, "partner": "sandbox-cgm" }),
    )
    .await
}

/// The invited patient `user` completes the invitation the ordinary way: authorize, consent
/// at the sandbox as `<user>-at-partner`, callback.
pub async fn accept(app: &TestApp, connection_id: &str, user: &str) {
    let (status, started) = app
        .post(
            &format!("/v1/connections/{connection_id}/authorize"),
            &app.user_token(user),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let callback = app
        .consent(
            started["authorizeUrl"].as_str().unwrap(),
            &format!("{user}-at-partner"),
            true,
        )
        .await;
    let (status, page) = app.follow_callback(&callback).await;
    assert_eq!(status, StatusCode::OK, "{page}");
}

async fn a_clinician_invites_and_the_patient_connects(db: &TestDb) {
    let smtp = SmtpServer::start().await.unwrap();
    let app = TestApp::spawn_with(mail_config(db, &smtp)).await;
    let dr = clinician(&app, "dr-a", &["c1"]);

    let (status, invitation) = invite(&app, &dr, "c1", "pat").await;
    assert_eq!(status, StatusCode::CREATED, "{invitation}");
    assert_eq!(invitation["status"], "pending");
    assert_eq!(invitation["email"], "p***@example.org");
    assert_eq!(invitation["connectionState"], "invited");
    assert_eq!(invitation["clinician"], "dr-a");
    let id = invitation["id"].as_str().unwrap().to_owned();
    assert!(
        !invitation.to_string().contains(PATIENT_EMAIL),
        "{invitation}"
    );

    // The same request again: the same invitation, nothing sent again.
    let (status, again) = invite(&app, &dr, "c1", "pat").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], id.as_str());

    let mail = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mail.len(), 1, "one invitation email");
    let mail = &mail[0];
    assert_eq!(mail.mail_from, "no-reply@tidepool.example");
    assert_eq!(mail.rcpt_to, [PATIENT_EMAIL]);
    assert_eq!(mail.authenticated_as.as_deref(), Some("tributary"));
    let subject = mail.header("Subject").unwrap();
    assert!(
        subject.contains("North Clinic") && subject.contains("Dexcom"),
        "{subject}"
    );
    assert_eq!(
        mail.header("Reply-To").as_deref(),
        Some("support@tidepool.example")
    );
    let link = format!("https://app.example/connect/sandbox-cgm?invitation={id}");
    let text = mail.text_body().unwrap();
    let html = mail.html_body().unwrap();
    assert!(text.contains(&link), "{text}");
    assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
    for forbidden in ["code=", "state=", "token", "secret"] {
        assert!(
            !mail.data.to_lowercase().contains(forbidden),
            "{forbidden} in {}",
            mail.data
        );
    }

    // The patient sees the invitation among their connections and connects the ordinary way.
    let (status, list) = app
        .get("/v1/users/pat/connections", &app.user_token("pat"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["state"], "invited");
    let connection_id = invitation["connectionId"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["id"], connection_id.as_str());
    accept(&app, &connection_id, "pat").await;

    // The clinic sees the connection active (not the data), and data flow.
    let (status, seen) = app.get(&format!("/v1/clinics/c1/invites/{id}"), &dr).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["status"], "accepted");
    assert_eq!(seen["connectionState"], "active");
    let cid: engine::ids::ConnectionId = connection_id.parse().unwrap();
    let store = app.workflows.store().clone();
    eventually("the first transfer stores data", || {
        let store = store.clone();
        async move { !store.record_ids(cid, true).await.unwrap().is_empty() }
    })
    .await;
    let (status, _) = app.get("/v1/users/pat/data", &dr).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a clinician reads no data here"
    );

    let events = app.events(&connection_id).await;
    assert_eq!(events[0]["event"], "invite");
    assert_eq!(events[0]["actor"], "clinician:dr-a@clinic:c1");
    assert_eq!(events[0]["to"], "invited");
    assert!(
        events.iter().any(|e| e["event"] == "invite_email_sent"),
        "{events:?}"
    );
    app.stop().await;
}

async fn another_clinic_sees_nothing(db: &TestDb) {
    let smtp = SmtpServer::start().await.unwrap();
    let app = TestApp::spawn_with(mail_config(db, &smtp)).await;
    let dr_a = clinician(&app, "dr-a", &["c1"]);
    let dr_b = clinician(&app, "dr-b", &["c2"]);
    let (status, invitation) = invite(&app, &dr_a, "c1", "pat").await;
    assert_eq!(status, StatusCode::CREATED, "{invitation}");
    let id = invitation["id"].as_str().unwrap();
    let connection_id = invitation["connectionId"].as_str().unwrap();

    for path in [
        "/v1/clinics/c1/invites".to_owned(),
        format!("/v1/clinics/c1/invites/{id}"),
        format!("/v1/clinics/c2/invites/{id}"),
    ] {
        let (status, body) = app.get(&path, &dr_b).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["code"], "not_found");
    }
    for action in ["resend", "cancel"] {
        let (status, _) = app
            .post(&format!("/v1/clinics/c2/invites/{id}/{action}"), &dr_b)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}");
    }
    let (status, list) = app.get("/v1/clinics/c2/invites", &dr_b).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["invitations"], json!([]));
    let (status, _) = app
        .get(&format!("/v1/connections/{connection_id}"), &dr_b)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "clinicians do not read connections"
    );

    // A second clinic may invite the same patient: its own invitation on the same connection.
    let (status, second) = invite(&app, &dr_b, "c2", "pat").await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["connectionId"], connection_id);
    assert_ne!(second["id"], id);
    let (_, list_a) = app.get("/v1/clinics/c1/invites", &dr_a).await;
    assert_eq!(list_a["invitations"].as_array().unwrap().len(), 1);
    let mails = smtp.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 2, "one invitation email per clinic");
    // Emails are independent of each other: either may go first.
    let mut subjects: Vec<String> = mails.iter().map(|m| m.header("Subject").unwrap()).collect();
    subjects.sort();
    assert!(
        subjects[0].starts_with("Clinic c2 invites")
            && subjects[1].starts_with("North Clinic invites"),
        "{subjects:?}"
    );
    app.stop().await;
}

async fn resend_is_limited_cancel_and_expiry_end_invitations(db: &TestDb) {
    let smtp = SmtpServer::start().await.unwrap();
    let h = Harness::with_config(mail_config(db, &smtp)).await;
    let app = &h.app;
    let dr = clinician(app, "dr-a", &["c1"]);
    let (_, invitation) = invite(app, &dr, "c1", "pat").await;
    let id = invitation["id"].as_str().unwrap().to_owned();
    assert_eq!(smtp.wait_for(1, Duration::from_secs(30)).await.len(), 1);

    let resend = format!("/v1/clinics/c1/invites/{id}/resend");
    let response = app
        .http
        .post(format!("{}{resend}", app.base))
        .bearer_auth(&dr)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3599..=3600).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "too_soon");

    h.emails_settled().await;
    h.set_now(h.now() + TimeDelta::seconds(3601));
    let (status, resent) = app.post(&resend, &dr).await;
    assert_eq!(status, StatusCode::OK, "{resent}");
    assert_eq!(resent["sentCount"], 2);
    let mails = smtp.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 2);
    assert_eq!(
        mails[0].text_body(),
        mails[1].text_body(),
        "the same invitation"
    );

    // Cancel: the only pending invitation, so the connection leaves `invited`.
    let cancel = format!("/v1/clinics/c1/invites/{id}/cancel");
    let (status, cancelled) = app.post(&cancel, &dr).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["connectionState"], "revoked");
    let connection_id = cancelled["connectionId"].as_str().unwrap().to_owned();
    let last = app.events(&connection_id).await.pop().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["reason"].as_str()),
        (Some("invitation_cancelled"), Some("invite_cancelled"))
    );
    for path in [&cancel, &resend] {
        let (status, body) = app.post(path, &dr).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {body}");
        assert_eq!(body["code"], "invitation_closed");
    }

    // A new invitation reuses the connection; it expires after 30 days.
    let (status, renewed) = invite(app, &dr, "c1", "pat").await;
    assert_eq!(status, StatusCode::CREATED, "{renewed}");
    assert_eq!(renewed["connectionId"], connection_id.as_str());
    h.emails_settled().await;
    h.set_now(h.now() + TimeDelta::days(30) + TimeDelta::seconds(1));
    assert_eq!(app.workflows.expire_invitations().await.unwrap(), 1);
    assert_eq!(app.workflows.expire_invitations().await.unwrap(), 0, "once");
    let renewed_id = renewed["id"].as_str().unwrap();
    let (_, expired) = app
        .get(&format!("/v1/clinics/c1/invites/{renewed_id}"), &dr)
        .await;
    assert_eq!(expired["status"], "expired");
    assert_eq!(expired["connectionState"], "failed");
    let last = app.events(&connection_id).await.pop().unwrap();
    assert_eq!(last["reason"], "invite_expired");
    assert_eq!(last["actor"], "system:invitations");

    let (_, page) = app.get("/v1/clinics/c1/invites?state=expired", &dr).await;
    assert_eq!(page["invitations"].as_array().unwrap().len(), 1);
    let (_, page) = app.get("/v1/clinics/c1/invites?limit=1", &dr).await;
    assert_eq!(page["invitations"][0]["id"], renewed_id, "newest first");
    let cursor = page["nextCursor"].as_str().unwrap();
    let (_, next) = app
        .get(
            &format!("/v1/clinics/c1/invites?limit=1&cursor={cursor}"),
            &dr,
        )
        .await;
    assert_eq!(next["invitations"][0]["id"], id.as_str());
    assert!(next["nextCursor"].is_null());

    // An active connection cannot be invited.
    app.connect_fully("bob", "sandbox-cgm").await;
    let (status, body) = invite(app, &dr, "c1", "bob").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "already_active");
    let (status, body) = app
        .post_json(
            "/v1/clinics/c1/invites",
            &dr,
            json!({ "patientUserId": "x", "email": "not-an-address", "partner": "sandbox-cgm" }),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_email"))
    );
}

/// No mail server configured, development mode: each message is an `.eml` file beside the
/// database (or in `email.directory`), listed by the outbox.
async fn in_development_emails_go_to_a_directory(db: &TestDb) {
    let config = test_config(db);
    let dir = config.email.directory.clone().unwrap_or_else(|| {
        let path = db.url.trim_start_matches("sqlite://");
        std::path::Path::new(path).with_file_name("test.mail")
    });
    let app = TestApp::spawn_with(config).await;
    let dr = clinician(&app, "dr-a", &["c9"]);
    let (status, invitation) = invite(&app, &dr, "c9", "dev").await;
    assert_eq!(status, StatusCode::CREATED, "{invitation}");
    let ops = app.token(Role::Ops, "op");
    eventually("the invitation is written", || async {
        let (_, page) = app.get("/v1/ops/outbox?kind=invite_email", &ops).await;
        page["messages"][0]["status"] == "sent"
    })
    .await;
    let (_, page) = app.get("/v1/ops/outbox?kind=invite_email", &ops).await;
    let message = page["messages"][0].clone();
    let file = dir.join(format!("{}.eml", message["id"].as_str().unwrap()));
    let eml = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(eml.contains(&format!("To: {PATIENT_EMAIL}")), "{eml}");
    assert!(eml.contains("Subject: Clinic c9 invites you"), "{eml}");
    let detail = message["history"][0]["detail"].as_str().unwrap();
    assert_eq!(
        detail,
        format!("written to {}.eml", message["id"].as_str().unwrap())
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "no partial files");
    app.stop().await;
}
