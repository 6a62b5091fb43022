//! Operators' actions (docs/actions.md#actions): each does what it says, journaled with the
//! operator as actor; done twice it writes once; none starts a second transfer beside a live
//! lease or voids a refresh in flight. Here replay and the helpers; `actions/pauses.rs`: paused
//! connections (on their own, by partner, all) are claimed neither for transfers nor for
//! refreshes, a resume spreads overdue work; `actions/failures.rs`: fail, clear an error.

use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    ids::{ConnectionId, PartnerName},
    jobs::{JobQueue, QueueSettings, Step as JobStep, StepJob},
    model::{Actor, Change, Connection},
    state::{Event, State},
    store::{
        ActionError, ActionSettings, REPLAY_EVENT, Reason, Refusal, ReplayStep, Store, entities,
    },
    testing::TestDb,
};
use sea_orm::{EntityTrait, Value};

use crate::{LEASE, active, leased, partner, records, sql, start, user};

mod failures;
mod pauses;

engine::backend_tests!(
    replay_makes_a_transfer_due_now_once,
    replay_clears_an_expired_lease_left_behind,
    replay_beside_a_live_lease_starts_no_second_transfer,
    replay_clears_a_claim_whose_job_was_lost,
    replay_recovers_a_stale_refresh_and_leaves_a_live_one,
    replay_makes_an_owed_revocation_due_now,
    replay_refuses_what_has_nothing_to_run,
);

pub(crate) fn operator() -> Actor {
    Actor::new("ops", "tester")
}

pub(crate) fn why(text: &str) -> Reason {
    Reason::parse(text).unwrap()
}

pub(crate) fn settings() -> ActionSettings {
    ActionSettings::default()
}

pub(crate) fn other_partner() -> PartnerName {
    PartnerName::parse("other-cgm").unwrap()
}

pub(crate) async fn set(store: &Store, c: &Connection, assignments: &str, values: Vec<Value>) {
    let n = values.len() + 1;
    let mut values = values;
    values.push(c.id.to_string().into());
    sql(
        store,
        &format!("UPDATE connections SET {assignments} WHERE id = ${n}"),
        values,
    )
    .await;
}

pub(crate) async fn row(store: &Store, id: ConnectionId) -> entities::connection::Model {
    entities::connection::Entity::find_by_id(id.to_string())
        .one(store.db())
        .await
        .unwrap()
        .unwrap()
}

pub(crate) async fn journal_len(store: &Store, id: ConnectionId) -> usize {
    store.journal(id).await.unwrap().len()
}

/// The last journal entry is the operator's `event`, with the reason, at the row's version.
pub(crate) async fn journaled(store: &Store, id: ConnectionId, event: &str, reason: &str) {
    let journal = store.journal(id).await.unwrap();
    let last = journal.last().unwrap();
    assert_eq!(
        (last.event.as_str(), last.actor.as_str()),
        (event, "ops:tester")
    );
    assert_eq!(last.reason.as_deref(), Some(reason));
    assert_eq!(last.seq, store.get(id).await.unwrap().version);
}

pub(crate) fn refused(result: Result<impl std::fmt::Debug, ActionError>) -> Refusal {
    match result {
        Err(ActionError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// `minutes` ago, in whole seconds (stored exactly by both backends).
pub(crate) fn ago(minutes: i64) -> DateTime<Utc> {
    let t = Utc::now() - TimeDelta::minutes(minutes);
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

/// A connection of `partner`, active.
pub(crate) async fn active_of(store: &Store, u: &str, partner: &PartnerName) -> Connection {
    let (applied, _) = store
        .open_connection(
            &user(u),
            partner,
            start(&format!("h-{u}"), TimeDelta::minutes(10)),
        )
        .await
        .unwrap();
    store
        .apply(applied.connection.id, None, crate::authorized("a", "r"))
        .await
        .unwrap()
        .connection
}

/// What the transfer claim and the refresh claim would take now; the claims are undone
/// afterwards (leases cleared, refreshes due again) so the next look sees the same.
pub(crate) async fn claimable(store: &Store) -> (Vec<ConnectionId>, Vec<ConnectionId>) {
    let mut transfers: Vec<_> = store
        .claim_due(1000, LEASE)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let mut refreshes: Vec<_> = store
        .claim_due_refreshes(1000, LEASE)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    sql(
        store,
        "UPDATE connections SET sync_lease_until = NULL, refresh_due_at = $1",
        vec![ago(1).into()],
    )
    .await;
    transfers.sort();
    refreshes.sort();
    (transfers, refreshes)
}

async fn replay_makes_a_transfer_due_now_once(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "u", "a", "r").await;
    let later = Utc::now() + TimeDelta::hours(1);
    set(&store, &c, "next_sync_at = $1", vec![later.into()]).await;
    assert!(store.claim_due(10, LEASE).await.unwrap().is_empty());

    let before = journal_len(&store, c.id).await;
    let replay = store
        .replay(c.id, &operator(), &why("partner fixed"), &settings())
        .await
        .unwrap();
    assert_eq!(replay.step, ReplayStep::Transfer);
    assert!(replay.changed && !replay.lease_cleared);
    assert!(replay.due_at <= Utc::now() && replay.due_at > Utc::now() - TimeDelta::minutes(1));
    assert_eq!(replay.connection.next_sync_at, Some(replay.due_at));
    journaled(&store, c.id, REPLAY_EVENT, "partner fixed").await;
    assert_eq!(journal_len(&store, c.id).await, before + 1);

    let again = store
        .replay(c.id, &operator(), &why("partner fixed"), &settings())
        .await
        .unwrap();
    assert!(!again.changed, "already due: nothing written");
    assert_eq!(again.due_at, replay.due_at);
    assert_eq!(
        journal_len(&store, c.id).await,
        before + 1,
        "one journal row"
    );

    let claimed = store.claim_due(10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, c.id);
    assert_eq!(claimed[0].version, replay.connection.version);
}

async fn replay_clears_an_expired_lease_left_behind(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "u", "a", "r").await;
    // A job that never ran: a started transfer's lease, expired, and no next run planned.
    set(
        &store,
        &c,
        "sync_lease_until = $1, sync_lease_token = 'left-behind', next_sync_at = $2",
        vec![ago(3).into(), (Utc::now() + TimeDelta::hours(6)).into()],
    )
    .await;
    let replay = store
        .replay(
            c.id,
            &operator(),
            &why("stuck since the outage"),
            &settings(),
        )
        .await
        .unwrap();
    assert!(replay.changed && replay.lease_cleared);
    let after = row(&store, c.id).await;
    assert_eq!(
        (after.sync_lease_until, after.sync_lease_token),
        (None, None)
    );
    let entry = store.journal(c.id).await.unwrap().pop().unwrap();
    assert_eq!(entry.details["leaseCleared"], true);
    let claimed = store.claim_due(10, LEASE).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), [c.id]);
    // The claim's job starts; the old holder's token writes nothing.
    let lease = store
        .start_sync(c.id, claimed[0].version, LEASE)
        .await
        .unwrap()
        .expect("started");
    assert_eq!(lease.connection.id, c.id);
}

async fn replay_beside_a_live_lease_starts_no_second_transfer(db: &TestDb) {
    let store = db.store().await;
    let mut lease = leased(&store, "u").await;
    let id = lease.connection.id;
    let held = row(&store, id).await;
    let refusal = refused(
        store
            .replay(id, &operator(), &why("looks stuck"), &settings())
            .await,
    );
    assert_eq!(
        refusal,
        Refusal::StepInFlight("a transfer is claimed or running")
    );
    assert_eq!(refusal.code(), "step_in_flight");
    assert_eq!(row(&store, id).await, held, "nothing written");
    assert!(store.claim_due(10, LEASE).await.unwrap().is_empty());
    // The transfer in flight carries on and ends as its own.
    store
        .commit_last_chunk(
            &mut lease,
            records(0, 2).into(),
            Utc::now(),
            Utc::now(),
            false,
        )
        .await
        .unwrap();

    // Claimed but not started: the claim is a live lease too.
    let c = active(&store, "v", "a", "r").await;
    let claimed = store.claim_due(10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    let refusal = refused(
        store
            .replay(c.id, &operator(), &why("looks stuck"), &settings())
            .await,
    );
    assert_eq!(refusal.code(), "step_in_flight");
    let version = claimed.iter().find(|k| k.id == c.id).unwrap().version;
    assert!(
        store
            .start_sync(c.id, version, LEASE)
            .await
            .unwrap()
            .is_some()
    );
}

/// A dispatcher's claim whose fetch job is gone (the stuck reason `claim_without_job`) would
/// hold the connection until the claim expires; replay clears it, but only once the job is
/// really gone and the claim is past the grace in which its job is being pushed.
async fn replay_clears_a_claim_whose_job_was_lost(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "u", "a", "r").await;
    let claimed = store.claim_due(10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let (actor, reason, settings) = (operator(), why("job lost"), settings());
    let replay = || store.replay(c.id, &actor, &reason, &settings);
    // Just claimed: its job is being pushed.
    assert_eq!(refused(replay().await).code(), "step_in_flight");
    // Claimed a minute ago (the claim ends `dispatch_lease` = 2 min after it was made), and
    // its job waits in the queue: in flight.
    let until = Utc::now() + TimeDelta::minutes(1);
    set(&store, &c, "sync_lease_until = $1", vec![until.into()]).await;
    let queue = JobQueue::setup(&store, QueueSettings::default())
        .await
        .unwrap();
    queue
        .push(&[StepJob::new(
            JobStep::Fetch,
            c.id.to_string(),
            claimed[0].version,
        )])
        .await
        .unwrap();
    let held = row(&store, c.id).await;
    assert_eq!(refused(replay().await).code(), "step_in_flight");
    assert_eq!(row(&store, c.id).await, held, "nothing written");
    // The job is lost: replay clears the claim, once.
    let jobs = match store.db().get_database_backend() {
        sea_orm::DbBackend::Postgres => "DELETE FROM apalis.jobs",
        _ => "DELETE FROM Jobs",
    };
    sql(&store, jobs, Vec::new()).await;
    let replay = replay().await.expect("replayed");
    assert!(replay.changed && replay.lease_cleared);
    let after = row(&store, c.id).await;
    assert_eq!(
        (after.sync_lease_until, after.sync_lease_token),
        (None, None)
    );
    journaled(&store, c.id, REPLAY_EVENT, "job lost").await;
    let again = store
        .replay(c.id, &actor, &reason, &settings)
        .await
        .unwrap();
    assert!(!again.changed, "already due: nothing written");
    // Claimed again at the dispatcher's next pass, and started.
    let claimed = store.claim_due(10, LEASE).await.unwrap();
    assert_eq!(claimed.iter().map(|k| k.id).collect::<Vec<_>>(), vec![c.id]);
    assert!(
        store
            .start_sync(c.id, claimed[0].version, LEASE)
            .await
            .unwrap()
            .is_some()
    );
}

async fn replay_recovers_a_stale_refresh_and_leaves_a_live_one(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "u", "a", "r").await;
    let locked = store
        .apply(
            c.id,
            None,
            Change::new(Event::RefreshStarted, Actor::system("test")),
        )
        .await
        .unwrap()
        .connection;
    let refusal = refused(
        store
            .replay(c.id, &operator(), &why("refresh stuck"), &settings())
            .await,
    );
    assert_eq!(
        refusal,
        Refusal::StepInFlight("a token refresh is in flight")
    );
    assert_eq!(
        store.get(c.id).await.unwrap(),
        locked,
        "a live refresh is left alone"
    );

    set(&store, &c, "state_changed_at = $1", vec![ago(60).into()]).await;
    let replay = store
        .replay(c.id, &operator(), &why("refresh stuck"), &settings())
        .await
        .unwrap();
    assert_eq!(replay.step, ReplayStep::Refresh);
    assert_eq!(replay.connection.state, State::Active);
    assert!(replay.connection.refresh_outcome_unknown_at.is_some());
    journaled(&store, c.id, "refresh_abandoned", "refresh stuck").await;
    let refreshes = store.claim_due_refreshes(10, LEASE).await.unwrap();
    assert_eq!(refreshes.iter().map(|r| r.id).collect::<Vec<_>>(), [c.id]);
}

async fn replay_makes_an_owed_revocation_due_now(db: &TestDb) {
    let store = db.store().await;
    let c = active(&store, "u", "a", "r").await;
    store
        .apply(
            c.id,
            None,
            Change::new(Event::Disconnect, Actor::new("user", "u")),
        )
        .await
        .unwrap();
    sql(
        &store,
        "UPDATE partner_revocations SET next_attempt_at = $1, attempts = 3",
        vec![(Utc::now() + TimeDelta::hours(4)).into()],
    )
    .await;
    let replay = store
        .replay(c.id, &operator(), &why("partner back up"), &settings())
        .await
        .unwrap();
    assert_eq!(replay.step, ReplayStep::Revocation);
    assert!(replay.changed);
    assert_eq!(replay.connection.state, State::Revoked);
    let owed = store.revocations(c.id).await.unwrap();
    assert!(owed[0].next_attempt_at <= Utc::now());
    journaled(&store, c.id, REPLAY_EVENT, "partner back up").await;
    let journal = journal_len(&store, c.id).await;

    let again = store
        .replay(c.id, &operator(), &why("partner back up"), &settings())
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(journal_len(&store, c.id).await, journal);

    // Claimed for an attempt: a second one may not start beside it.
    let claimed = store.claim_due_revocations(10, LEASE).await.unwrap();
    assert_eq!(claimed, [c.id]);
    let refusal = refused(
        store
            .replay(c.id, &operator(), &why("partner back up"), &settings())
            .await,
    );
    assert_eq!(refusal.code(), "step_in_flight");
    assert!(
        store
            .claim_due_revocations(10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn replay_refuses_what_has_nothing_to_run(db: &TestDb) {
    let store = db.store().await;
    let (opened, _) = store
        .open_connection(&user("a"), &partner(), start("h-a", TimeDelta::minutes(5)))
        .await
        .unwrap();
    let authorizing = opened.connection;
    let refusal = refused(
        store
            .replay(authorizing.id, &operator(), &why("try"), &settings())
            .await,
    );
    assert_eq!(refusal.code(), "nothing_to_replay");
    assert_eq!(store.get(authorizing.id).await.unwrap(), authorizing);

    // Revoked, its revocation done: nothing owed.
    let c = active(&store, "b", "a", "r").await;
    store
        .apply(
            c.id,
            None,
            Change::new(Event::Disconnect, Actor::new("user", "b")),
        )
        .await
        .unwrap();
    for owed in store.open_revocations(c.id).await.unwrap() {
        store.finish_revocation(&owed, true, None).await.unwrap();
    }
    let refusal = refused(
        store
            .replay(c.id, &operator(), &why("try"), &settings())
            .await,
    );
    assert_eq!(refusal, Refusal::NothingToReplay);

    // Paused: not replayed.
    let p = active(&store, "c", "a", "r").await;
    store
        .pause_connection(p.id, &operator(), &why("hold"))
        .await
        .unwrap();
    set(
        &store,
        &p,
        "next_sync_at = $1",
        vec![(Utc::now() + TimeDelta::hours(1)).into()],
    )
    .await;
    let refusal = refused(
        store
            .replay(p.id, &operator(), &why("try"), &settings())
            .await,
    );
    assert_eq!(refusal, Refusal::Paused);
}
