//! The deliver step against a real SMTP server that refuses, is down, or answers, and stopped
//! dead at each of its boundaries. Time is injected and no background worker runs: the test is
//! the worker, as in `steps.rs`.

use std::time::Duration;

use api::auth::Role;
use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    clock::Clock, failpoint, ids::ConnectionId, invitation::MessageStatus, testing::TestDb,
};
use reqwest::StatusCode;
use sandbox::smtp::{Refusal, SmtpServer};
use tributary::config::{Config, TlsMode};

use crate::{
    invitations::{clinician, invite, mail_config},
    steps::Steps,
};

engine::backend_tests!(
    a_refused_email_is_abandoned_and_shown,
    a_relay_that_is_down_is_retried_until_it_answers,
    a_delivery_stopped_at_each_boundary_sends_once_or_is_retried,
    tls_is_never_given_up_for_plain_text,
);

/// [`Steps`] with what the deliver tests do by hand.
struct Manual(Steps);

impl std::ops::Deref for Manual {
    type Target = Steps;

    fn deref(&self) -> &Steps {
        &self.0
    }
}

impl Manual {
    async fn new(config: Config) -> Self {
        Self(Steps::with_config(config).await)
    }

    /// Invites `user` for clinic c1; returns the connection.
    async fn invited(&self, user: &str) -> ConnectionId {
        let dr = clinician(&self.app, "dr-a", &["c1"]);
        let (status, body) = invite(&self.app, &dr, "c1", user).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["connectionId"].as_str().unwrap().parse().unwrap()
    }

    /// What a dispatcher pass and the job do, by hand.
    async fn deliver(&self, id: ConnectionId) -> usize {
        let store = self.app.workflows.store();
        let claimed = store
            .claim_due_deliveries(100, Duration::from_secs(120))
            .await
            .unwrap();
        if !claimed.contains(&id) {
            return 0;
        }
        self.app.workflows.run_deliver_step(id).await.unwrap()
    }

    async fn outbox(&self, id: ConnectionId) -> serde_json::Value {
        let (status, body) = self
            .app
            .get(
                &format!("/v1/ops/outbox?connectionId={id}"),
                &self.app.token(Role::Ops, "op"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn journal(&self, id: ConnectionId) -> Vec<String> {
        let journal = self.app.workflows.store().journal(id).await.unwrap();
        journal.into_iter().map(|e| e.event).collect()
    }
}

async fn a_refused_email_is_abandoned_and_shown(db: &TestDb) {
    let smtp = SmtpServer::start().await.unwrap();
    let mut config = mail_config(db, &smtp);
    config.email.max_attempts = 4;
    let m = Manual::new(config).await;

    // A permanent refusal (5xx) is tried three times (an operator may fix what the relay
    // refuses), then abandoned, visibly — with fewer attempts than a temporary one gets.
    smtp.refuse_all(Some(Refusal::Permanent));
    let id = m.invited("perm").await;
    for attempt in 1..=3 {
        assert_eq!(m.deliver(id).await, 1, "attempt {attempt}");
        let outbox = m.outbox(id).await;
        let message = &outbox["messages"][0];
        if attempt < 3 {
            assert_eq!(message["status"], "pending", "{outbox}");
            let next: DateTime<Utc> = message["nextAttemptAt"].as_str().unwrap().parse().unwrap();
            m.advance(next - m.clock.now() + TimeDelta::seconds(1));
        }
    }
    let outbox = m.outbox(id).await;
    let message = &outbox["messages"][0];
    assert_eq!(message["status"], "abandoned", "{outbox}");
    assert_eq!(message["kind"], "invite_email");
    assert_eq!(message["target"], "patient");
    let error = message["lastError"].as_str().unwrap();
    assert!(
        error.contains("550")
            && error.contains("permanently")
            && error.contains("after 3 attempts"),
        "{error}"
    );
    assert!(
        !outbox.to_string().contains("example.org"),
        "no address shown: {outbox}"
    );
    assert_eq!(message["history"].as_array().unwrap().len(), 3);
    assert!(
        m.journal(id)
            .await
            .contains(&"invite_email_abandoned".to_owned())
    );
    assert_eq!(
        m.deliver(id).await,
        0,
        "an abandoned message is not tried again"
    );
    assert_eq!(smtp.refused(), 3);

    // A temporary refusal (4xx) is retried with growing waits, then abandoned.
    smtp.refuse_all(Some(Refusal::Temporary));
    let id = m.invited("temp").await;
    let mut waits = Vec::new();
    for attempt in 1..=4 {
        assert_eq!(m.deliver(id).await, 1, "attempt {attempt}");
        let outbox = m.outbox(id).await;
        let message = &outbox["messages"][0];
        if attempt < 4 {
            assert_eq!(message["status"], "pending", "{outbox}");
            let next: DateTime<Utc> = message["nextAttemptAt"].as_str().unwrap().parse().unwrap();
            waits.push(next - m.clock.now());
            assert_eq!(m.deliver(id).await, 0, "not due before its backoff");
            m.advance(next - m.clock.now() + TimeDelta::seconds(1));
        } else {
            assert_eq!(message["status"], "abandoned", "{outbox}");
            assert!(
                message["lastError"]
                    .as_str()
                    .unwrap()
                    .contains("after 4 attempts")
            );
            let outcomes: Vec<&str> = message["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["outcome"].as_str().unwrap())
                .collect();
            assert_eq!(outcomes, ["retrying", "retrying", "retrying", "abandoned"]);
        }
    }
    // 30 s doubling, with jitter down to half: [15, 30] s, then [30, 60] s.
    assert!(
        waits[0] >= TimeDelta::seconds(15) && waits[0] <= TimeDelta::seconds(30),
        "{waits:?}"
    );
    assert!(
        waits[1] >= TimeDelta::seconds(30) && waits[1] <= TimeDelta::seconds(60),
        "{waits:?}"
    );
    let journal = m.journal(id).await;
    assert_eq!(
        journal
            .iter()
            .filter(|e| *e == "invite_email_retrying")
            .count(),
        3
    );
    assert_eq!(smtp.messages().len(), 0);
    assert_eq!(smtp.refused(), 7);
}

async fn a_relay_that_is_down_is_retried_until_it_answers(db: &TestDb) {
    // A port nobody listens on, then a server on it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let placeholder = SmtpServer::start().await.unwrap();
    let mut config = mail_config(db, &placeholder);
    config.email.port = port;
    let m = Manual::new(config).await;
    let id = m.invited("down").await;
    assert_eq!(m.deliver(id).await, 1);
    let outbox = m.outbox(id).await;
    assert_eq!(outbox["messages"][0]["status"], "pending", "{outbox}");
    assert!(
        outbox["messages"][0]["lastError"]
            .as_str()
            .unwrap()
            .starts_with("SMTP"),
        "{outbox}"
    );

    let smtp = SmtpServer::start_on(port).await.unwrap();
    smtp.require_auth("tributary", "mail-secret");
    m.advance(TimeDelta::hours(1));
    assert_eq!(m.deliver(id).await, 1);
    let outbox = m.outbox(id).await;
    assert_eq!(outbox["messages"][0]["status"], "sent", "{outbox}");
    assert_eq!(outbox["messages"][0]["attempts"], 2);
    assert_eq!(smtp.messages().len(), 1);
    let journal = m.journal(id).await;
    assert!(
        journal.contains(&"invite_email_retrying".to_owned()),
        "{journal:?}"
    );
    assert!(
        journal.contains(&"invite_email_sent".to_owned()),
        "{journal:?}"
    );
}

/// Stopped after the lease, the message is sent once its lease expires; stopped between the
/// relay's `250` and the record, it is sent a second time (the documented duplicate); stopped
/// after the record, nothing more is sent. Never lost, never sent twice otherwise.
async fn a_delivery_stopped_at_each_boundary_sends_once_or_is_retried(db: &TestDb) {
    let smtp = SmtpServer::start().await.unwrap();
    let m = Manual::new(mail_config(db, &smtp)).await;
    let store = m.app.workflows.store().clone();
    let mut sent_before = 0;
    for (n, &point) in failpoint::DELIVER_BOUNDARIES.iter().enumerate() {
        let id = m.invited(&format!("crash{n}")).await;
        store.failpoints().arm(point, 1);
        let claimed = store
            .claim_due_deliveries(100, Duration::from_secs(120))
            .await
            .unwrap();
        assert!(claimed.contains(&id));
        let stopped = m.app.workflows.run_deliver_step(id).await;
        assert!(
            matches!(stopped, Err(workflows::WorkflowError::Injected(_))),
            "{point}: {stopped:?}"
        );
        let accepted = smtp.messages().len() - sent_before;
        let expect_sent = usize::from(point != failpoint::DELIVER_LEASED);
        assert_eq!(accepted, expect_sent, "{point}: sent before the stop");
        let pending = store.pending_messages_of(&[id]).await.unwrap();
        let recorded = point == failpoint::DELIVER_RECORDED;
        assert_eq!(pending.len(), usize::from(!recorded), "{point}");

        // Run again at once: the lease holds the message for its step.
        assert_eq!(
            m.app.workflows.run_deliver_step(id).await.unwrap(),
            0,
            "{point}"
        );
        m.advance(TimeDelta::minutes(3));
        let again = m.deliver(id).await;
        assert_eq!(again, usize::from(!recorded), "{point}");
        let messages = store
            .outbox_messages(&engine::store::OutboxQuery {
                connection_id: Some(id),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].status, MessageStatus::Sent, "{point}");
        let total = smtp.messages().len() - sent_before;
        let expected_total = if point == failpoint::DELIVER_SENT {
            2
        } else {
            1
        };
        assert_eq!(total, expected_total, "{point}: emails in all");
        let sent_notes = m
            .journal(id)
            .await
            .into_iter()
            .filter(|e| e == "invite_email_sent")
            .count();
        assert_eq!(sent_notes, 1, "{point}: journaled once");
        sent_before = smtp.messages().len();
        // Run twice more: nothing changes.
        assert_eq!(m.app.workflows.run_deliver_step(id).await.unwrap(), 0);
        assert_eq!(smtp.messages().len(), sent_before);
    }
}

/// With `starttls` or `implicit`, a relay that cannot do TLS (the suite's plain server) gets
/// nothing: the message stays pending with the reason, and is never sent in the clear.
async fn tls_is_never_given_up_for_plain_text(db: &TestDb) {
    for tls in [TlsMode::Starttls, TlsMode::Implicit] {
        let smtp = SmtpServer::start().await.unwrap();
        let mut config = mail_config(db, &smtp);
        config.email.tls = tls;
        config.email.timeout_secs = 2;
        let m = Manual::new(config).await;
        let id = m.invited(&format!("tls{}", tls as u8)).await;
        assert_eq!(m.deliver(id).await, 1);
        let outbox = m.outbox(id).await;
        let message = &outbox["messages"][0];
        assert_eq!(message["status"], "pending", "{tls:?}: {outbox}");
        assert!(
            message["lastError"].as_str().unwrap().starts_with("SMTP"),
            "{outbox}"
        );
        assert!(smtp.messages().is_empty(), "{tls:?}: nothing in plain text");
        m.0.app.stop().await;
    }
}
