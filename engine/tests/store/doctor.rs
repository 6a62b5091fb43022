//! The doctor (docs/operations.md#doctor): each violation made by hand with SQL is found exactly
//! (its code, count 1, its id), repaired (journaled, by the operator), and a second repair is a
//! no-op; report-only violations stay reported; a healthy store reports nothing.

use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    invitation::{EmailAddress, NewInvitation},
    model::{Actor, Change, Connection},
    state::{Event, State},
    store::{
        DoctorCode as C, DoctorReport, DoctorSettings, Finding, OutboxQuery, OutboxSettings,
        REPAIR_EVENT, Store, SyncEnd, entities,
    },
    testing::TestDb,
};
use sea_orm::{EntityTrait, Value};

use crate::{LEASE, active, leased, partner, sql, start, user};

engine::backend_tests!(
    a_healthy_store_reports_nothing_and_repair_changes_nothing,
    a_transfer_never_planned_is_planned,
    a_refresh_never_planned_is_planned,
    a_refresh_lock_left_behind_is_released,
    an_invited_connection_without_invitation_is_ended,
    a_schedule_left_on_a_revoked_connection_is_cleared,
    tokens_left_on_a_revoked_connection_are_discarded_and_revoked,
    a_revocation_without_its_token_is_abandoned,
    transfer_leases_left_behind_or_too_long_are_cleared,
    a_transfer_of_a_paused_connection_loses_its_lease,
    a_lease_on_a_connection_not_due_is_made_due,
    a_pending_invitation_of_a_connection_no_longer_invited_is_closed,
    stuck_claimed_and_leased_messages_are_freed,
    a_webhook_held_back_by_an_earlier_one_is_not_stuck,
);

fn operator() -> Actor {
    Actor::new("ops", "tester")
}

pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

pub(crate) async fn check(store: &Store) -> DoctorReport {
    store
        .doctor(now(), &DoctorSettings::default())
        .await
        .unwrap()
}

pub(crate) async fn repair(store: &Store) -> DoctorReport {
    store
        .doctor_repair(&operator(), &DoctorSettings::default())
        .await
        .unwrap()
}

/// The doctor finds exactly `code`, once, naming `id`.
#[track_caller]
pub(crate) fn only(report: &DoctorReport, code: C, id: &str, repaired: u64, remaining: u64) {
    let expected = Finding {
        code,
        count: 1,
        sample: vec![id.to_owned()],
        repaired,
        remaining,
    };
    assert_eq!(report.findings, vec![expected], "{report:#?}");
}

/// Finds exactly `code` on `id`, repairs it once, finds nothing more, and a second repair does
/// nothing; returns the journal's last entry of `connection` after the repair.
async fn found_and_repaired(
    store: &Store,
    code: C,
    id: &str,
    connection: &Connection,
) -> engine::model::JournalEntry {
    only(&check(store).await, code, id, 0, 1);
    let report = repair(store).await;
    only(&report, code, id, 1, 0);
    assert!(report.is_clean() && report.repair);
    let journal = store.journal(connection.id).await.unwrap();
    let again = repair(store).await;
    assert!(again.findings.is_empty(), "{again:#?}");
    assert_eq!(
        store.journal(connection.id).await.unwrap(),
        journal,
        "no-op"
    );
    assert!(check(store).await.findings.is_empty());
    let last = journal.last().unwrap().clone();
    assert_eq!(last.actor, "ops:tester");
    assert_eq!(last.seq, store.get(connection.id).await.unwrap().version);
    last
}

/// A row fix is a journal-only entry of the doctor, one version up.
#[track_caller]
fn doctor_entry(entry: &engine::model::JournalEntry, before: &Connection, code: C) {
    assert_eq!(entry.event, REPAIR_EVENT);
    assert_eq!((entry.from, entry.to), (Some(before.state), before.state));
    assert_eq!(entry.seq, before.version + 1);
    assert_eq!(entry.details["code"], code.as_str());
}

async fn set(store: &Store, id: &Connection, assignments: &str, values: Vec<Value>) {
    let n = values.len() + 1;
    let mut values = values;
    values.push(id.id.to_string().into());
    sql(
        store,
        &format!("UPDATE connections SET {assignments} WHERE id = ${n}"),
        values,
    )
    .await;
}

async fn row(store: &Store, c: &Connection) -> entities::connection::Model {
    entities::connection::Entity::find_by_id(c.id.to_string())
        .one(store.db())
        .await
        .unwrap()
        .unwrap()
}

fn invite_change() -> Change {
    Change::new(
        Event::Invite {
            invitation: NewInvitation {
                id: uuid::Uuid::now_v7().to_string(),
                clinic_id: "c1".to_owned(),
                clinician: "dr".to_owned(),
                email: EmailAddress::parse("pat@example.org").unwrap(),
                expires_at: Utc::now() + TimeDelta::days(30),
            },
        },
        Actor::new("clinician", "dr@clinic:c1"),
    )
}

async fn invited(store: &Store, u: &str) -> Connection {
    let (applied, _) = store
        .open_connection(&user(u), &partner(), invite_change())
        .await
        .unwrap();
    applied.connection
}

async fn apply(store: &Store, c: &Connection, event: Event) -> Connection {
    store
        .apply(c.id, None, Change::new(event, Actor::system("test")))
        .await
        .unwrap()
        .connection
}

/// The ids of a connection's outbox messages, oldest first.
async fn messages(store: &Store, c: &Connection) -> Vec<String> {
    let query = OutboxQuery {
        connection_id: Some(c.id),
        limit: 100,
        ..Default::default()
    };
    let mut all = store.outbox_messages(&query).await.unwrap();
    all.reverse();
    all.into_iter().map(|m| m.id).collect()
}

async fn a_healthy_store_reports_nothing_and_repair_changes_nothing(db: &TestDb) {
    let store = db.store().await;
    let a = active(&store, "a", "a", "r").await;
    let _in_flight = leased(&store, "b").await;
    let refreshing = active(&store, "c", "a", "r").await;
    apply(&store, &refreshing, Event::RefreshStarted).await;
    let revoked = active(&store, "d", "a", "r").await;
    apply(&store, &revoked, Event::Disconnect).await;
    invited(&store, "e").await;
    store
        .open_connection(&user("f"), &partner(), start("h-f", TimeDelta::minutes(5)))
        .await
        .unwrap();
    assert!(check(&store).await.findings.is_empty());
    let report = repair(&store).await;
    assert!(
        report.findings.is_empty() && report.is_clean(),
        "{report:#?}"
    );
    assert_eq!(store.get(a.id).await.unwrap(), a, "untouched");
}

async fn a_transfer_never_planned_is_planned(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "u", "a", "r").await;
    set(&store, &c, "next_sync_at = NULL", vec![]).await;
    let before = store.get(c.id).await.unwrap();
    let last = found_and_repaired(&store, C::TransferNotScheduled, &c.id.to_string(), &c).await;
    doctor_entry(&last, &before, C::TransferNotScheduled);
    assert!(store.get(c.id).await.unwrap().next_sync_at.is_some());
}

async fn a_refresh_never_planned_is_planned(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "u", "a", "r").await;
    set(&store, &c, "refresh_due_at = NULL", vec![]).await;
    let last = found_and_repaired(&store, C::RefreshNotScheduled, &c.id.to_string(), &c).await;
    doctor_entry(&last, &c, C::RefreshNotScheduled);
    let after = store.get(c.id).await.unwrap();
    let due = after.refresh_due_at.expect("planned");
    assert!(
        due <= after.token_expires_at.unwrap() && due > now(),
        "{due}"
    );
}

async fn a_refresh_lock_left_behind_is_released(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "u", "a", "r").await;
    let c = apply(&store, &c, Event::RefreshStarted).await;
    let hour_ago = now() - TimeDelta::hours(1);
    set(&store, &c, "state_changed_at = $1", vec![hour_ago.into()]).await;
    let last = found_and_repaired(&store, C::RefreshLockStale, &c.id.to_string(), &c).await;
    assert_eq!(
        (last.event.as_str(), last.to),
        ("refresh_abandoned", State::Active)
    );
    assert!(
        store
            .get(c.id)
            .await
            .unwrap()
            .refresh_outcome_unknown_at
            .is_some()
    );
}

async fn an_invited_connection_without_invitation_is_ended(db: &TestDb) {
    let store = db.store().await;
    let c = invited(&store, "u").await;
    let cancel = "UPDATE invitations SET status = 'cancelled' WHERE connection_id = $1";
    sql(&store, cancel, vec![c.id.to_string().into()]).await;
    let last = found_and_repaired(&store, C::InvitedWithoutInvitation, &c.id.to_string(), &c).await;
    assert_eq!(
        (last.event.as_str(), last.to),
        ("disconnect", State::Revoked)
    );
}

async fn a_schedule_left_on_a_revoked_connection_is_cleared(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "u", "a", "r").await;
    let c = apply(&store, &c, Event::Disconnect).await;
    set(&store, &c, "next_sync_at = $1", vec![now().into()]).await;
    let last = found_and_repaired(&store, C::StaleSchedule, &c.id.to_string(), &c).await;
    doctor_entry(&last, &c, C::StaleSchedule);
    assert_eq!(store.get(c.id).await.unwrap().next_sync_at, None);
}

async fn tokens_left_on_a_revoked_connection_are_discarded_and_revoked(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "u", "a", "r-secret").await;
    let sealed = row(&store, &c).await;
    let c = apply(&store, &c, Event::PartnerRevoked { alert: None }).await;
    assert!(store.revocations(c.id).await.unwrap().is_empty());
    let restore = "token_ciphertext = $1, token_key_id = $2";
    let values = vec![
        sealed.token_ciphertext.unwrap().into(),
        sealed.token_key_id.unwrap().into(),
    ];
    set(&store, &c, restore, values).await;
    let last = found_and_repaired(&store, C::TokensNotDiscarded, &c.id.to_string(), &c).await;
    doctor_entry(&last, &c, C::TokensNotDiscarded);
    assert_eq!(last.details["partnerRevocation"], true);
    assert!(!store.get(c.id).await.unwrap().has_tokens);
    assert!(row(&store, &c).await.token_key_id.is_none());
    let owed = store.open_revocations(c.id).await.unwrap();
    assert_eq!(owed.len(), 1);
    assert_eq!(owed[0].refresh_token.expose(), "r-secret");
}

async fn a_revocation_without_its_token_is_abandoned(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "u", "a", "r").await;
    let c = apply(&store, &c, Event::Disconnect).await;
    let lose = "UPDATE partner_revocations SET token_ciphertext = NULL, key_id = NULL";
    sql(&store, lose, vec![]).await;
    let last = found_and_repaired(&store, C::RevocationWithoutToken, &c.id.to_string(), &c).await;
    assert_eq!(last.event, "partner_revocation_abandoned");
    let revocations = store.revocations(c.id).await.unwrap();
    assert_eq!(revocations[0].outcome.as_deref(), Some("abandoned"));
}

async fn transfer_leases_left_behind_or_too_long_are_cleared(db: &TestDb) {
    let store = db.store().await;
    let cases = [
        (C::SyncLeaseStale, now() - TimeDelta::hours(1), "stale"),
        (C::SyncLeaseTooLong, now() + TimeDelta::days(1), "long"),
    ];
    for (code, until, u) in cases {
        let c = active(&store, u, "a", "r").await;
        let lease = "sync_lease_until = $1, sync_lease_token = 'lost'";
        set(&store, &c, lease, vec![until.into()]).await;
        let last = found_and_repaired(&store, code, &c.id.to_string(), &c).await;
        doctor_entry(&last, &c, code);
        let after = row(&store, &c).await;
        assert_eq!(
            (after.sync_lease_until, after.sync_lease_token),
            (None, None)
        );
    }
}

async fn a_transfer_of_a_paused_connection_loses_its_lease(db: &TestDb) {
    let store = db.store().await;
    let lease = leased(&store, "u").await;
    let c = store.get(lease.connection.id).await.unwrap();
    set(&store, &c, "paused = $1", vec![true.into()]).await;
    let last = found_and_repaired(&store, C::PausedTransferRunning, &c.id.to_string(), &c).await;
    doctor_entry(&last, &c, C::PausedTransferRunning);
    let end = SyncEnd::Yielded {
        next_sync_at: now(),
    };
    assert!(
        store.finish_sync(&lease, end).await.unwrap().is_none(),
        "the running transfer stops at its next write"
    );
    assert!(
        store.claim_due(10, LEASE).await.unwrap().is_empty(),
        "paused"
    );
}

/// The stuck list finds held leases among the due rows: a lease on a row planned for later
/// is a violation, and the repair makes the row due (the transfer keeps its lease).
async fn a_lease_on_a_connection_not_due_is_made_due(db: &TestDb) {
    let store = db.store().await;
    let lease = leased(&store, "u").await;
    let c = store.get(lease.connection.id).await.unwrap();
    let row_before = row(&store, &c).await;
    assert!(row_before.sync_lease_token.is_some());
    let later = now() + TimeDelta::hours(1);
    set(&store, &c, "next_sync_at = $1", vec![later.into()]).await;
    let last = found_and_repaired(&store, C::LeaseNotDue, &c.id.to_string(), &c).await;
    doctor_entry(&last, &c, C::LeaseNotDue);
    let after = row(&store, &c).await;
    assert!(after.next_sync_at.unwrap() <= now());
    assert_eq!(
        after.sync_lease_token, row_before.sync_lease_token,
        "the lease stays"
    );
}

async fn a_pending_invitation_of_a_connection_no_longer_invited_is_closed(db: &TestDb) {
    let store = db.store().await;
    let c = invited(&store, "u").await;
    let c = store
        .apply(c.id, None, start("h-u", TimeDelta::minutes(5)))
        .await
        .unwrap()
        .connection;
    let reopen = "UPDATE invitations SET status = 'pending', closed_at = NULL";
    sql(&store, reopen, vec![]).await;
    let code = C::InvitationPendingNotInvited;
    let last = found_and_repaired(&store, code, &c.id.to_string(), &c).await;
    doctor_entry(&last, &c, code);
    assert_eq!(last.details["status"], "accepted");
    let invitations = entities::invitation::Entity::find()
        .all(store.db())
        .await
        .unwrap();
    assert_eq!(invitations[0].status, "accepted");
}

async fn stuck_claimed_and_leased_messages_are_freed(db: &TestDb) {
    let store = db.store().await;
    let cases = [
        (
            C::OutboxStuck,
            "next_attempt_at",
            now() - TimeDelta::hours(1),
        ),
        (
            C::OutboxClaimTooLong,
            "claimed_until",
            now() + TimeDelta::days(1),
        ),
        (
            C::OutboxLeaseTooLong,
            "lease_until",
            now() + TimeDelta::days(1),
        ),
    ];
    for (k, (code, column, at)) in cases.into_iter().enumerate() {
        let c = invited(&store, &format!("u{k}")).await;
        let message = messages(&store, &c)
            .await
            .pop()
            .expect("the invitation email");
        let text = format!("UPDATE outbox SET {column} = $1 WHERE id = $2");
        sql(&store, &text, vec![at.into(), message.clone().into()]).await;
        let last = found_and_repaired(&store, code, &message, &c).await;
        doctor_entry(&last, &c, code);
        assert_eq!(last.details["messages"][0], message.as_str());
        let after = store.outbox_message(&message).await.unwrap();
        assert!(after.next_attempt_at > now() - TimeDelta::minutes(1));
        let claimed = store.claim_due_deliveries(10, LEASE).await.unwrap();
        assert_eq!(claimed, vec![c.id], "{code}: deliverable again");
    }
}

async fn a_webhook_held_back_by_an_earlier_one_is_not_stuck(db: &TestDb) {
    let store = db.store().await.with_outbox(OutboxSettings {
        webhook_endpoints: vec!["web".to_owned()],
        ..Default::default()
    });
    let c = active(&store, "u", "a", "r").await;
    let ids = messages(&store, &c).await;
    assert_eq!(ids.len(), 2, "authorizing, then active");
    let due = "UPDATE outbox SET next_attempt_at = $1 WHERE id = $2";
    let (later, earlier) = (now() + TimeDelta::hours(1), now() - TimeDelta::hours(1));
    sql(&store, due, vec![later.into(), ids[0].clone().into()]).await;
    sql(&store, due, vec![earlier.into(), ids[1].clone().into()]).await;
    assert!(check(&store).await.findings.is_empty(), "held back");
    sql(&store, due, vec![earlier.into(), ids[0].clone().into()]).await;
    only(&check(&store).await, C::OutboxStuck, &ids[0], 0, 1);
}
