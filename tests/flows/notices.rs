//! A partner-side revocation of an invited patient's connection: the patient and the clinic
//! are emailed once per episode, and every state change (and each transfer's new data) reaches
//! a webhook receiver that checks signatures, fails some deliveries, and ends with every event
//! exactly once after deduplication, in order per connection — on both backends.

use std::{collections::BTreeSet, time::Duration};

use api::auth::Role;
use chrono::TimeDelta;
use engine::{
    invitation::{MessageKind, MessageStatus},
    store::OutboxQuery,
    testing::TestDb,
};
use reqwest::StatusCode;
use sandbox::{Flavor, smtp::SmtpServer, webhooks::WebhookReceiver};
use serde_json::Value;
use tributary::config::WebhookConfig;
use workflows::deliver::signature::WebhookSecret;

use crate::{
    harness::Harness,
    invitations::{PATIENT_EMAIL, accept, clinician, invite, mail_config},
};

engine::backend_tests!(a_revoked_connection_notifies_once_per_episode_and_emits_webhooks);

/// Moves both clocks forward (the receiver follows the service's) until `check` holds.
async fn until<F, Fut>(h: &Harness, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.set_now(h.now() + TimeDelta::seconds(20));
    }
    panic!("timed out waiting for: {what}");
}

async fn webhook_messages(h: &Harness) -> Vec<engine::store::OutboxMessage> {
    h.app
        .workflows
        .store()
        .outbox_messages(&OutboxQuery {
            kind: Some(MessageKind::Webhook),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn a_revoked_connection_notifies_once_per_episode_and_emits_webhooks(db: &TestDb) {
    let smtp = SmtpServer::start().await.unwrap();
    let (_, secret) = WebhookSecret::generate();
    let receiver = WebhookReceiver::start(&secret).await.unwrap();
    let mut config = mail_config(db, &smtp);
    config.webhooks.insert(
        "web".to_owned(),
        WebhookConfig {
            url: receiver.url().parse().unwrap(),
            secret: secret.clone().into(),
        },
    );
    let h = Harness::with_config(config).await;
    let clock = h.clock.clone();
    receiver.follow_clock(move || engine::clock::Clock::now(&clock));
    receiver.fail_next(2, 500);
    let app = &h.app;
    let dr = clinician(app, "dr-a", &["c1"]);

    let (status, invitation) = invite(app, &dr, "c1", "pat").await;
    assert_eq!(status, StatusCode::CREATED, "{invitation}");
    let id = invitation["connectionId"].as_str().unwrap().to_owned();
    let cid: engine::ids::ConnectionId = id.parse().unwrap();
    let mails = |n: usize| smtp.wait_for(n, Duration::from_secs(30));

    for round in 1..=2u32 {
        h.emails_settled().await;
        accept(app, &id, "pat").await;
        let reports = h.cycle().await;
        assert!(!reports.is_empty(), "round {round}: the first transfer ran");
        // The partner withdraws access; the next transfer finds out.
        assert_eq!(app.sandbox.revoke_user(Flavor::Cgm, "pat-at-partner"), 1);
        h.next_cycle(cid).await;
        assert_eq!(
            app.connection(&id).await["state"],
            "revoked",
            "round {round}"
        );
        // One more cycle and an operator's refresh: nothing is due, nothing notifies again.
        h.cycle().await;
        let (status, _) = app
            .post(
                &format!("/v1/connections/{id}/refresh"),
                &app.token(Role::Ops, "op"),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let expected = 1 + 2 * round as usize;
        let got = mails(expected).await;
        assert_eq!(
            got.len(),
            expected,
            "round {round}: invite + 2 notices per episode"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            smtp.messages().len(),
            expected,
            "round {round}: no second notice"
        );
    }
    let notices: Vec<_> = smtp.messages().into_iter().skip(1).collect();
    let recipients: BTreeSet<String> = notices.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    assert_eq!(
        recipients,
        BTreeSet::from([PATIENT_EMAIL.to_owned(), "care@north.example".to_owned()])
    );
    for notice in &notices {
        let text = notice.text_body().unwrap();
        assert!(
            text.contains(&format!(
                "https://app.example/reconnect/sandbox-cgm?connection={id}"
            )),
            "{text}"
        );
        assert!(notice.header("Subject").unwrap().contains("stopped"));
    }

    // Every webhook delivered, verified, once each after deduplication, in order.
    h.emails_settled().await;
    until(&h, "every webhook sent", || async {
        let messages = webhook_messages(&h).await;
        !messages.is_empty() && messages.iter().all(|m| m.status == MessageStatus::Sent)
    })
    .await;
    let messages = webhook_messages(&h).await;
    let events = receiver.events();
    let ids: BTreeSet<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let queued: BTreeSet<String> = messages.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, queued, "every queued event arrived");
    assert_eq!(events.len(), ids.len(), "deduplicated");
    assert!(receiver.in_order_per_connection());
    let deliveries = receiver.deliveries();
    assert!(deliveries.iter().all(|d| d.signature_valid), "all signed");
    assert_eq!(deliveries.iter().filter(|d| d.status == 500).count(), 2);

    let changes: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] == "connection.state_changed")
        .map(|e| {
            (
                e["from"].as_str().unwrap_or("").to_owned(),
                e["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        changes[..3],
        [
            pair("", "invited"),
            pair("invited", "authorizing"),
            pair("authorizing", "active")
        ]
    );
    assert_eq!(
        changes.iter().filter(|c| c.1 == "revoked").count(),
        2,
        "{changes:?}"
    );
    for revoked in events.iter().filter(|e| e["to"] == "revoked") {
        assert_eq!(
            revoked["reason"], "invalid_grant",
            "a reason code: {revoked}"
        );
        assert_eq!(revoked["event"], "partner_revoked");
    }
    let synced: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "connection.data_synced")
        .collect();
    assert_eq!(synced.len(), 2, "one per transfer that stored data");
    assert!(synced[0]["inserted"].as_u64().unwrap() > 0);
    assert!(synced[0]["dataFrom"].is_string() && synced[0]["dataThrough"].is_string());
    let all = serde_json::to_string(&events).unwrap();
    for forbidden in [PATIENT_EMAIL, "access", "refresh_token", "\"value\""] {
        assert!(!all.contains(forbidden), "{forbidden} in webhook events");
    }
    assert!(
        events
            .iter()
            .all(|e| e["userId"] == "pat" && e["connectionId"] == id.as_str())
    );

    // Operators see the attempts and can resend one; the receiver deduplicates it.
    let ops = app.token(Role::Ops, "op");
    let (status, page) = app
        .get(
            &format!("/v1/ops/webhooks/deliveries?connectionId={id}&limit=500"),
            &ops,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let oldest = page["messages"].as_array().unwrap().last().unwrap().clone();
    let outcomes: Vec<&str> = oldest["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retrying", "retrying", "sent"], "{oldest}");
    let (status, resent) = app
        .post(
            &format!(
                "/v1/ops/webhooks/deliveries/{}/resend",
                oldest["id"].as_str().unwrap()
            ),
            &ops,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resent}");
    until(&h, "the resent event", || async {
        receiver.deliveries().len() > deliveries.len()
    })
    .await;
    assert_eq!(
        receiver.events().len(),
        events.len(),
        "a resend is deduplicated"
    );
    let (status, _) = app
        .post(
            "/v1/ops/webhooks/deliveries/0190f5e2-7b1c-7d3e-8f00-0123456789ab/resend",
            &ops,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
