//! The outbox written by transitions: an invitation's email, the notices of a stopped
//! connection (patient and inviting clinic, once per episode), a webhook event per state
//! change and endpoint, in order — and nothing when nothing is configured.

use std::collections::BTreeSet;

use chrono::{TimeDelta, Utc};
use engine::{
    invitation::{EmailAddress, MessageKind, NewInvitation},
    model::{Actor, Change},
    state::Event,
    store::{OutboxQuery, OutboxSettings, Store},
    testing::TestDb,
};

use crate::{authorized, partner, start, user};

engine::backend_tests!(
    a_stopped_invited_connection_queues_its_notices_and_events,
    nothing_is_queued_when_nothing_is_configured,
);

fn invitation(clinic: &str) -> Change {
    Change::new(
        Event::Invite {
            invitation: NewInvitation {
                id: uuid::Uuid::now_v7().to_string(),
                clinic_id: clinic.to_owned(),
                clinician: "dr".to_owned(),
                email: EmailAddress::parse("pat@example.org").unwrap(),
                expires_at: Utc::now() + TimeDelta::days(30),
            },
        },
        Actor::new("clinician", "dr@clinic:c1"),
    )
}

async fn messages(store: &Store) -> Vec<(MessageKind, String, Option<String>)> {
    let mut all = store
        .outbox_messages(&OutboxQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    all.reverse();
    all.into_iter()
        .map(|m| {
            (
                m.kind,
                m.target,
                m.payload["to"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Invite → authorize → active → fail: the invitation email, one notice each to the patient
/// and the clinic with a contact (not the one without), and one event per state change per
/// endpoint, in order. A second failure episode after a reconnect notifies again.
async fn a_stopped_invited_connection_queues_its_notices_and_events(db: &TestDb) {
    let store = db.store().await.with_outbox(OutboxSettings {
        webhook_endpoints: vec!["w".to_owned()],
        email: true,
        clinic_contacts: BTreeSet::from(["c1".to_owned()]),
    });
    let (applied, _) = store
        .open_connection(&user("pat"), &partner(), invitation("c1"))
        .await
        .unwrap();
    let id = applied.connection.id;
    store.apply(id, None, invitation("c2")).await.unwrap();
    for round in 0..2 {
        store
            .apply(
                id,
                None,
                start(&format!("h{round}"), TimeDelta::minutes(10)),
            )
            .await
            .unwrap();
        store.apply(id, None, authorized("a", "r")).await.unwrap();
        store
            .apply(id, None, Change::new(Event::Fail, Actor::system("test")))
            .await
            .unwrap();
    }
    // A user's own disconnect of a stopped connection is not a state change and queues nothing.
    assert!(
        store
            .apply(id, None, Change::new(Event::Disconnect, Actor::system("t")))
            .await
            .is_err()
    );

    use MessageKind::*;
    let hook = |to: &str| (Webhook, "w".to_owned(), Some(to.to_owned()));
    let notice = |target: &str| (NoticeEmail, target.to_owned(), None);
    let invite = (InviteEmail, "patient".to_owned(), None);
    let mut expected = vec![invite.clone(), hook("invited"), invite];
    for _ in 0..2 {
        expected.extend([
            hook("authorizing"),
            hook("active"),
            notice("patient"),
            notice("clinic:c1"),
            hook("failed"),
        ]);
    }
    assert_eq!(messages(&store).await, expected);

    // Delivered messages are purged after their retention; pending ones never are.
    let all = store
        .outbox_messages(&OutboxQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let first = all.last().unwrap();
    let record = engine::invitation::DeliveryRecord {
        seq: first.seq,
        kind: first.kind,
        attempt: 1,
        result: engine::invitation::DeliveryResult::Sent {
            detail: "250".to_owned(),
        },
    };
    store.record_delivery(id, record).await.unwrap();
    assert_eq!(
        store
            .purge_messages(Utc::now() - TimeDelta::days(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .purge_messages(Utc::now() + TimeDelta::seconds(1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(messages(&store).await, expected[1..]);
}

async fn nothing_is_queued_when_nothing_is_configured(db: &TestDb) {
    let store = db.store().await;
    let (applied, _) = store
        .open_connection(&user("pat"), &partner(), invitation("c1"))
        .await
        .unwrap();
    let id = applied.connection.id;
    store
        .apply(id, None, start("h", TimeDelta::minutes(10)))
        .await
        .unwrap();
    store.apply(id, None, authorized("a", "r")).await.unwrap();
    store
        .apply(id, None, Change::new(Event::Fail, Actor::system("test")))
        .await
        .unwrap();
    // The invitation email is owed whatever is configured (the API refuses invitations
    // without email); no notice without email, no event without an endpoint.
    assert_eq!(
        messages(&store).await,
        [(MessageKind::InviteEmail, "patient".to_owned(), None)]
    );
}
