//! Pauses (docs/actions.md#actions): a paused connection, partner or everything is claimed
//! neither for transfers nor for refreshes; a connection's pause stops its running transfer;
//! pausing and resuming twice write once; a resume spreads the overdue work it frees.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use engine::{
    StoreError,
    ids::ConnectionId,
    model::{Actor, Change},
    state::{Event, State},
    store::{ActionError, PAUSE_EVENT, PauseScope, RESUME_EVENT, Store, entities},
    testing::TestDb,
};
use sea_orm::EntityTrait;

use super::{
    active_of, ago, claimable, journal_len, journaled, operator, other_partner, refused, why,
};
use crate::{LEASE, active, leased, partner, records, sql};

engine::backend_tests!(
    paused_connections_are_claimed_neither_for_transfers_nor_refreshes,
    a_connection_pause_stops_its_running_transfer_and_is_written_once,
    resume_spreads_overdue_work_over_the_window,
    partner_and_global_pauses_are_recorded_once,
);

async fn paused_connections_are_claimed_neither_for_transfers_nor_refreshes(db: &TestDb) {
    let store = db.store().await;
    let x = active(&store, "x", "a", "r").await;
    let y = active_of(&store, "y", &other_partner()).await;
    let both = {
        let mut both = vec![x.id, y.id];
        both.sort();
        both
    };
    sql(
        &store,
        "UPDATE connections SET refresh_due_at = $1",
        vec![ago(1).into()],
    )
    .await;
    assert_eq!(claimable(&store).await, (both.clone(), both.clone()));

    // The connection on its own.
    store
        .pause_connection(x.id, &operator(), &why("user asked"))
        .await
        .unwrap();
    assert_eq!(claimable(&store).await, (vec![y.id], vec![y.id]));
    store
        .resume_connection(x.id, &operator(), &why("user asked"))
        .await
        .unwrap();
    assert_eq!(claimable(&store).await, (both.clone(), both.clone()));

    // Its partner.
    let scope = PauseScope::Partner(other_partner());
    store
        .pause(&scope, &operator(), &why("outage"))
        .await
        .unwrap();
    assert_eq!(claimable(&store).await, (vec![x.id], vec![x.id]));

    // Everything (the partner's pause still in force beside it).
    store
        .pause(&PauseScope::All, &operator(), &why("maintenance"))
        .await
        .unwrap();
    assert_eq!(claimable(&store).await, (vec![], vec![]));
    store
        .resume(&scope, &operator(), &why("outage over"), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        claimable(&store).await,
        (vec![], vec![]),
        "everything still paused"
    );
    store
        .resume(&PauseScope::All, &operator(), &why("done"), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(claimable(&store).await, (both.clone(), both));
}

async fn a_connection_pause_stops_its_running_transfer_and_is_written_once(db: &TestDb) {
    let store = db.store().await;
    let mut lease = leased(&store, "u").await;
    let id = lease.connection.id;
    let before = journal_len(&store, id).await;
    let paused = store
        .pause_connection(id, &operator(), &why("bad data from the device"))
        .await
        .unwrap();
    assert!(paused.changed && paused.transfer_stopped && paused.connection.paused);
    journaled(&store, id, PAUSE_EVENT, "bad data from the device").await;
    let lost = store
        .commit_chunk(&mut lease, records(0, 1).into(), Some(Utc::now()), LEASE)
        .await;
    assert!(matches!(lost, Err(StoreError::LeaseLost)), "{lost:?}");

    let again = store
        .pause_connection(id, &operator(), &why("bad data from the device"))
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(journal_len(&store, id).await, before + 1, "one journal row");

    let resumed = store
        .resume_connection(id, &operator(), &why("device replaced"))
        .await
        .unwrap();
    assert!(resumed.changed && !resumed.connection.paused);
    journaled(&store, id, RESUME_EVENT, "device replaced").await;
    let again = store
        .resume_connection(id, &operator(), &why("device replaced"))
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(journal_len(&store, id).await, before + 2);

    // A refresh in flight is not voided; an ended connection cannot be paused.
    let c = active(&store, "v", "a", "r").await;
    store
        .apply(
            c.id,
            None,
            Change::new(Event::RefreshStarted, Actor::system("test")),
        )
        .await
        .unwrap();
    let refusal = refused(store.pause_connection(c.id, &operator(), &why("x")).await);
    assert_eq!(refusal.code(), "step_in_flight");
    let d = active(&store, "w", "a", "r").await;
    store
        .apply(
            d.id,
            None,
            Change::new(Event::Disconnect, Actor::new("user", "w")),
        )
        .await
        .unwrap();
    let err = store
        .pause_connection(d.id, &operator(), &why("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ActionError::Store(StoreError::NotTransferring(State::Revoked))
        ),
        "{err:?}"
    );
}

async fn resume_spreads_overdue_work_over_the_window(db: &TestDb) {
    let store = db.store().await;
    let mut freed = Vec::new();
    for i in 0..40 {
        freed.push(active(&store, &format!("f{i}"), "a", "r").await.id);
    }
    let elsewhere = active_of(&store, "e", &other_partner()).await;
    let alone = active(&store, "alone", "a", "r").await;
    store
        .pause_connection(alone.id, &operator(), &why("on its own"))
        .await
        .unwrap();
    let scope = PauseScope::Partner(partner());
    store
        .pause(&scope, &operator(), &why("outage"))
        .await
        .unwrap();
    let overdue = ago(90);
    sql(
        &store,
        "UPDATE connections SET next_sync_at = $1, refresh_due_at = $1",
        vec![overdue.into()],
    )
    .await;

    let spread = Duration::from_secs(600);
    let before = Utc::now();
    let resumed = store
        .resume(&scope, &operator(), &why("outage over"), spread)
        .await
        .unwrap();
    let after = Utc::now();
    assert!(resumed.changed);
    assert_eq!(resumed.rescheduled, 40);
    let mut transfers = Vec::new();
    for id in &freed {
        let c = store.get(*id).await.unwrap();
        let (next, refresh) = (c.next_sync_at.unwrap(), c.refresh_due_at.unwrap());
        for t in [next, refresh] {
            assert!(
                t >= before - TimeDelta::seconds(1),
                "{t} not before the resume"
            );
            assert!(
                t <= after + TimeDelta::seconds(600),
                "{t} within the window"
            );
        }
        transfers.push(next);
    }
    transfers.sort();
    transfers.dedup();
    assert!(
        transfers.len() >= 35,
        "spread, not one instant: {transfers:?}"
    );
    let range = *transfers.last().unwrap() - transfers[0];
    assert!(
        range > TimeDelta::seconds(300),
        "spread over the window: {range}"
    );
    let together = same_instant(&store, &freed).await;
    assert!(
        together < 5,
        "transfer and refresh drawn apart: {together} equal"
    );
    // Only a fraction is due at once: no thundering herd.
    let now = Utc::now();
    let mut due_now = 0;
    for id in &freed {
        due_now += usize::from(store.get(*id).await.unwrap().next_sync_at.unwrap() <= now);
    }
    assert!(due_now < 20, "{due_now} due at once");

    // Not freed by this resume: another partner, a connection paused on its own.
    for untouched in [elsewhere.id, alone.id] {
        let c = store.get(untouched).await.unwrap();
        assert_eq!(
            (c.next_sync_at, c.refresh_due_at),
            (Some(overdue), Some(overdue))
        );
    }

    // A resume while everything is paused frees nothing (the last resume spreads).
    store
        .pause(&scope, &operator(), &why("again"))
        .await
        .unwrap();
    store
        .pause(&PauseScope::All, &operator(), &why("all"))
        .await
        .unwrap();
    let held = store
        .resume(&scope, &operator(), &why("partner fine"), spread)
        .await
        .unwrap();
    assert_eq!((held.changed, held.rescheduled), (true, 0));
    let all = store
        .resume(&PauseScope::All, &operator(), &why("done"), Duration::ZERO)
        .await
        .unwrap();
    assert!(
        all.rescheduled >= 1,
        "the other partner's overdue connection"
    );
    let e = store.get(elsewhere.id).await.unwrap();
    assert!(e.next_sync_at.unwrap() >= before && e.next_sync_at.unwrap() <= Utc::now());
}

/// How many of `ids` have their transfer and their refresh due at the same instant.
async fn same_instant(store: &Store, ids: &[ConnectionId]) -> usize {
    let mut same = 0;
    for id in ids {
        let c = store.get(*id).await.unwrap();
        same += usize::from(c.next_sync_at == c.refresh_due_at);
    }
    same
}

async fn partner_and_global_pauses_are_recorded_once(db: &TestDb) {
    let store = db.store().await;
    let scope = PauseScope::Partner(partner());
    let (first, changed) = store
        .pause(&scope, &operator(), &why("outage"))
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(
        (first.actor.as_str(), first.reason.as_str()),
        ("ops:tester", "outage")
    );
    let (second, changed) = store
        .pause(&scope, &Actor::new("ops", "other"), &why("again"))
        .await
        .unwrap();
    assert!(!changed);
    assert_eq!(second, first, "the pause in force is unchanged");
    let (all, _) = store
        .pause(&PauseScope::All, &operator(), &why("all"))
        .await
        .unwrap();
    assert_eq!(store.pauses().await.unwrap(), vec![first.clone(), all]);

    let resumed = store
        .resume(&scope, &operator(), &why("over"), Duration::ZERO)
        .await
        .unwrap();
    assert!(resumed.changed);
    let again = store
        .resume(&scope, &operator(), &why("over"), Duration::ZERO)
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(store.pauses().await.unwrap().len(), 1);
    // The ended pause stays as history, with who resumed it and why.
    let rows = entities::pause::Entity::find()
        .all(store.db())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let ended = rows.iter().find(|r| r.id == first.id).unwrap();
    assert_eq!(ended.resumed_by.as_deref(), Some("ops:tester"));
    assert_eq!(ended.resume_reason.as_deref(), Some("over"));
    assert!(ended.resumed_at.is_some());
    // Paused again: a new pause.
    let (third, changed) = store
        .pause(&scope, &operator(), &why("third"))
        .await
        .unwrap();
    assert!(changed && third.id != first.id);
}
