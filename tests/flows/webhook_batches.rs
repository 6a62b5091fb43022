//! Webhook events at transfer speed: a completed transfer's `connection.data_synced` event
//! commits with its last window (so it survives a step stopped right after), and one deliver
//! job serves many connections, each connection's events in order. Time is injected and no
//! background worker runs: the test is the worker, as in `steps.rs`.

use std::{collections::BTreeSet, time::Duration};

use chrono::TimeDelta;
use engine::{
    clock::Clock,
    failpoint,
    ids::ConnectionId,
    invitation::{MessageKind, MessageStatus},
    store::{OutboxMessage, OutboxQuery},
    testing::TestDb,
};
use sandbox::webhooks::WebhookReceiver;
use tributary::config::WebhookConfig;
use workflows::{deliver::signature::WebhookSecret, fetch::FetchReport};

use crate::{
    helpers::{TestApp, test_config},
    steps::Steps,
};

engine::backend_tests!(
    a_completed_transfer_commits_its_data_synced_event_with_its_data,
    one_deliver_job_serves_many_connections_each_in_order,
);

const CGM: &str = "sandbox-cgm";

async fn with_receiver(db: &TestDb) -> (Steps, WebhookReceiver) {
    let (_, secret) = WebhookSecret::generate();
    let receiver = WebhookReceiver::start(&secret).await.unwrap();
    let mut config = test_config(db);
    config.webhooks.insert(
        "web".to_owned(),
        WebhookConfig {
            url: receiver.url().parse().unwrap(),
            secret: secret.into(),
        },
    );
    let steps = Steps::with_config(config).await;
    let clock = steps.clock.clone();
    receiver.follow_clock(move || clock.now());
    (steps, receiver)
}

async fn webhooks(s: &Steps, id: ConnectionId) -> Vec<OutboxMessage> {
    let mut messages = s
        .app
        .workflows
        .store()
        .outbox_messages(&OutboxQuery {
            kind: Some(MessageKind::Webhook),
            connection_id: Some(id),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    messages.reverse();
    messages
}

fn synced(messages: &[OutboxMessage]) -> usize {
    messages
        .iter()
        .filter(|m| m.payload["type"] == "connection.data_synced")
        .count()
}

async fn a_completed_transfer_commits_its_data_synced_event_with_its_data(db: &TestDb) {
    let (s, _receiver) = with_receiver(db).await;
    let store = s.app.workflows.store().clone();
    let id = TestApp::id(&s.app.connect_fully("synced", CGM).await);
    assert_eq!(synced(&webhooks(&s, id).await), 0);

    // The step stops dead right after its last commit: the records and their event are in.
    let first = s.clock.now();
    store.failpoints().arm(failpoint::FETCH_FINISHED, 1);
    let claimed = store.claim_due(10, Duration::from_secs(120)).await.unwrap();
    let job = claimed.iter().find(|c| c.id == id).unwrap().clone();
    assert!(
        s.app
            .workflows
            .run_fetch(job.id, job.version)
            .await
            .is_err()
    );
    let records = store.record_ids(id, true).await.unwrap().len();
    assert!(records > 0);
    let messages = webhooks(&s, id).await;
    assert_eq!(synced(&messages), 1, "{messages:?}");
    let event = &messages
        .iter()
        .rfind(|m| m.payload["type"] == "connection.data_synced");
    let event = &event.unwrap().payload;
    assert_eq!(event["inserted"].as_u64().unwrap() as usize, records);
    assert_eq!(event["updated"], 0);
    assert!(event["dataFrom"].as_str().unwrap() < event["dataThrough"].as_str().unwrap());

    // The same job again is stale: no second event. A later run with nothing new: none either.
    assert_eq!(
        s.app
            .workflows
            .run_fetch(job.id, job.version)
            .await
            .unwrap(),
        FetchReport::Skipped
    );
    let next = store.get(id).await.unwrap().next_sync_at.unwrap();
    s.advance(next - s.clock.now() + TimeDelta::seconds(1));
    // The partner's clock stays where it was: it has nothing new.
    s.app.sandbox.set_now(Some(first));
    let claimed = store.claim_due(10, Duration::from_secs(120)).await.unwrap();
    let job = claimed.iter().find(|c| c.id == id).unwrap().clone();
    let report = s
        .app
        .workflows
        .run_fetch(job.id, job.version)
        .await
        .unwrap();
    assert!(
        matches!(report, FetchReport::Completed { ref stats, .. } if stats.inserted + stats.updated == 0),
        "{report:?}"
    );
    assert_eq!(synced(&webhooks(&s, id).await), 1);
}

async fn one_deliver_job_serves_many_connections_each_in_order(db: &TestDb) {
    let (s, receiver) = with_receiver(db).await;
    let store = s.app.workflows.store().clone();
    let mut ids = Vec::new();
    for user in ["batch-a", "batch-b", "batch-c"] {
        ids.push(TestApp::id(&s.app.connect_fully(user, CGM).await));
    }
    let pending = |messages: &[OutboxMessage]| {
        messages
            .iter()
            .filter(|m| m.status == MessageStatus::Pending)
            .count()
    };
    let mut queued = 0;
    for &id in &ids {
        let messages = webhooks(&s, id).await;
        assert!(messages.len() >= 2, "each has state changes: {messages:?}");
        queued += messages.len();
    }

    // The first request fails: that connection's later events wait behind it; the other
    // connections' events all go, in one step.
    receiver.fail_next(1, 503);
    let claimed = store
        .claim_due_deliveries(100, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().copied().collect::<BTreeSet<_>>(),
        ids.iter().copied().collect()
    );
    let attempted = s.app.workflows.run_deliver_steps(&claimed).await.unwrap();
    let mut waiting = Vec::new();
    for &id in &ids {
        waiting.push(pending(&webhooks(&s, id).await));
    }
    waiting.sort_unstable();
    assert_eq!(waiting[0], 0, "{waiting:?}");
    assert_eq!(waiting[1], 0, "{waiting:?}");
    assert!(
        waiting[2] >= 2,
        "the failed event and the ones behind it: {waiting:?}"
    );
    assert_eq!(
        attempted,
        queued - waiting[2] + 1,
        "the held-back ones are not tried"
    );
    assert_eq!(receiver.events().len(), queued - waiting[2]);

    // Run twice at once before the retry is due: nothing goes out twice, nothing out of order.
    let (a, b) = tokio::join!(
        s.app.workflows.run_deliver_steps(&ids),
        s.app.workflows.run_deliver_steps(&ids)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 0);

    // Once due, the failed event and those behind it go, in order.
    s.advance(TimeDelta::minutes(5));
    let (a, b) = tokio::join!(
        s.app.workflows.run_deliver_steps(&ids),
        s.app.workflows.run_deliver_steps(&ids)
    );
    assert_eq!(a.unwrap() + b.unwrap(), waiting[2]);
    for &id in &ids {
        assert_eq!(pending(&webhooks(&s, id).await), 0);
    }
    let deliveries = receiver.deliveries();
    assert!(deliveries.iter().all(|d| d.signature_valid));
    assert_eq!(
        deliveries.iter().filter(|d| d.status < 300).count(),
        queued,
        "none sent twice"
    );
    let unique: BTreeSet<String> = receiver
        .events()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(unique.len(), queued, "every event exactly once");
    assert_eq!(receiver.events().len(), queued);
    assert!(receiver.in_order_per_connection());
}
