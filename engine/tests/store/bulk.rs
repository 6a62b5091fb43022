//! Bulk actions (docs/actions.md#bulk-actions): a dry run stores exactly the connections its
//! filter matches, under the hash of a token it shows once; the confirmed call acts on those
//! and no others, each through the single action (journaled once, with the operator and the
//! reason); a wrong, expired or mismatched token changes nothing; confirming again, or after a
//! call stopped half-way, never acts on a member twice.

use chrono::{TimeDelta, Utc};
use engine::{
    ids::ConnectionId,
    model::Connection,
    store::{
        BulkAction, BulkError, BulkResult, BulkSettings, ConnectionFilter, PAUSE_EVENT,
        REPLAY_EVENT, Store, StuckFilter, StuckReason,
    },
    testing::TestDb,
};
use sea_orm::{ConnectionTrait, Statement, Value};
use sha2::{Digest, Sha256};

use crate::{
    actions::{active_of, ago, operator, other_partner, set, why},
    active, partner, sql,
};

engine::backend_tests!(
    a_dry_run_stores_exactly_the_matching_set,
    a_filter_matching_too_many_stores_nothing,
    the_confirmed_call_acts_on_the_plan_only,
    wrong_expired_or_mismatched_tokens_change_nothing,
    a_second_confirmation_is_a_no_op_with_the_same_result,
    a_call_stopped_half_way_is_continued_and_acts_once,
    a_bulk_replay_makes_the_stuck_ones_due,
    expired_plans_are_purged,
);

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn of_partner() -> ConnectionFilter {
    ConnectionFilter {
        partner: Some(partner()),
        ..ConnectionFilter::default()
    }
}

async fn rows(store: &Store, text: &str, values: Vec<Value>) -> Vec<sea_orm::QueryResult> {
    let backend = store.db().get_database_backend();
    store
        .db()
        .query_all_raw(Statement::from_sql_and_values(backend, text, values))
        .await
        .unwrap()
}

/// The plan's members and their outcomes, smallest id first.
async fn members(store: &Store, token: &str) -> Vec<(String, Option<String>)> {
    rows(
        store,
        "SELECT connection_id, outcome FROM bulk_plan_members WHERE plan_id = $1 \
         ORDER BY connection_id",
        vec![hash(token).into()],
    )
    .await
    .iter()
    .map(|r| {
        (
            r.try_get("", "connection_id").unwrap(),
            r.try_get("", "outcome").unwrap(),
        )
    })
    .collect()
}

async fn plans(store: &Store) -> usize {
    rows(store, "SELECT id FROM bulk_plans", vec![]).await.len()
}

/// How many times the journal of `id` has `event`.
async fn entries(store: &Store, id: ConnectionId, event: &str) -> usize {
    let journal = store.journal(id).await.unwrap();
    journal.iter().filter(|e| e.event == event).count()
}

fn ids(connections: &[Connection]) -> Vec<String> {
    let mut ids: Vec<String> = connections.iter().map(|c| c.id.to_string()).collect();
    ids.sort();
    ids
}

async fn plan_pause(store: &Store, filter: &ConnectionFilter) -> engine::store::BulkPlan {
    store
        .plan_bulk(
            BulkAction::Pause,
            filter,
            &why("partner maintenance"),
            &operator(),
            &BulkSettings::default(),
        )
        .await
        .unwrap()
}

async fn confirm(store: &Store, token: &str, action: BulkAction) -> Result<BulkResult, BulkError> {
    store
        .execute_bulk(token, action, &operator(), None, &BulkSettings::default())
        .await
}

async fn a_dry_run_stores_exactly_the_matching_set(db: &TestDb) {
    let store = db.store().await;
    let mut ours = Vec::new();
    for i in 0..25 {
        ours.push(active(&store, &format!("u{i}"), "a", "r").await);
    }
    let theirs = active_of(&store, "w", &other_partner()).await;
    let plan = plan_pause(&store, &of_partner()).await;
    assert_eq!(plan.action, BulkAction::Pause);
    assert_eq!(plan.count, 25);
    // The sample: the first 20 of the plan, smallest id first.
    let planned: Vec<String> = members(&store, &plan.token)
        .await
        .into_iter()
        .map(|(id, outcome)| {
            assert_eq!(outcome, None);
            id
        })
        .collect();
    assert_eq!(planned, ids(&ours));
    assert!(!planned.contains(&theirs.id.to_string()));
    let sample: Vec<String> = plan.sample.iter().map(|c| c.id.to_string()).collect();
    assert_eq!(sample, planned[..20]);
    // A token of 32 random bytes; only its sha256 is stored, nowhere the token itself.
    assert_eq!(plan.token.len(), 43);
    let stored = rows(
        &store,
        "SELECT id, action, filter, reason, actor, count FROM bulk_plans",
        vec![],
    )
    .await;
    assert_eq!(stored.len(), 1);
    let row = &stored[0];
    assert_eq!(row.try_get::<String>("", "id").unwrap(), hash(&plan.token));
    assert_eq!(row.try_get::<String>("", "action").unwrap(), "pause");
    assert_eq!(row.try_get::<i64>("", "count").unwrap(), 25);
    let filter: serde_json::Value =
        serde_json::from_str(&row.try_get::<String>("", "filter").unwrap()).unwrap();
    assert_eq!(filter["partner"], "sandbox-cgm");
    for column in ["filter", "reason", "actor"] {
        assert!(
            !row.try_get::<String>("", column)
                .unwrap()
                .contains(&plan.token)
        );
    }
    let expires = plan.expires_at - Utc::now();
    assert!(expires > TimeDelta::minutes(14) && expires <= TimeDelta::minutes(15));
    // The dry run changed no connection.
    for c in &ours {
        assert_eq!(store.get(c.id).await.unwrap().version, c.version);
    }

    // The same filters as the list, stuck reasons included: one overdue transfer.
    let in_an_hour = Utc::now() + TimeDelta::hours(1);
    for c in &ours {
        set(&store, c, "next_sync_at = $1", vec![in_an_hour.into()]).await;
    }
    set(&store, &ours[3], "next_sync_at = $1", vec![ago(120).into()]).await;
    let filter = ConnectionFilter {
        stuck: Some(StuckFilter::Reason(StuckReason::TransferOverdue)),
        ..of_partner()
    };
    let overdue = plan_pause(&store, &filter).await;
    assert_eq!(overdue.count, 1);
    assert_eq!(ids(&overdue.sample), [ours[3].id.to_string()]);
    let none = ConnectionFilter {
        paused: Some(true),
        ..of_partner()
    };
    let empty = plan_pause(&store, &none).await;
    assert_eq!((empty.count, empty.sample.len()), (0, 0));
    assert_ne!(empty.token, overdue.token);
}

async fn a_filter_matching_too_many_stores_nothing(db: &TestDb) {
    let store = db.store().await;
    for i in 0..3 {
        active(&store, &format!("u{i}"), "a", "r").await;
    }
    let settings = BulkSettings {
        max_connections: 2,
        ..BulkSettings::default()
    };
    let err = store
        .plan_bulk(
            BulkAction::Fail,
            &of_partner(),
            &why("too wide"),
            &operator(),
            &settings,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BulkError::TooMany { max: 2 }), "{err:?}");
    assert_eq!(err.code(), "bulk_too_many");
    assert_eq!(plans(&store).await, 0);
    assert!(
        rows(&store, "SELECT plan_id FROM bulk_plan_members", vec![])
            .await
            .is_empty()
    );
    // Exactly at the cap is fine.
    let settings = BulkSettings {
        max_connections: 3,
        ..settings
    };
    let plan = store
        .plan_bulk(
            BulkAction::Fail,
            &of_partner(),
            &why("just right"),
            &operator(),
            &settings,
        )
        .await
        .unwrap();
    assert_eq!(plan.count, 3);
}

async fn the_confirmed_call_acts_on_the_plan_only(db: &TestDb) {
    let store = db.store().await;
    let a = active(&store, "a", "a", "r").await;
    let b = active(&store, "b", "a", "r").await;
    let c = active(&store, "c", "a", "r").await;
    let filter = ConnectionFilter {
        state: Some(engine::state::State::Active),
        ..of_partner()
    };
    let plan = plan_pause(&store, &filter).await;
    assert_eq!(plan.count, 3);
    // After the dry run: `d` starts matching the filter, `c` stops matching it.
    let d = active(&store, "d", "a", "r").await;
    store
        .fail_by_operator(c.id, &operator(), &why("account closed"))
        .await
        .unwrap();

    let result = confirm(&store, &plan.token, BulkAction::Pause)
        .await
        .unwrap();
    assert_eq!((result.acted, result.already, result.gone), (2, 0, 0));
    // `c` was shown, so it was tried, through the single action, which refuses a failed one.
    assert_eq!(result.refused, 1);
    assert_eq!(result.refusals.get("invalid_transition"), Some(&1));
    for x in [&a, &b] {
        assert!(store.get(x.id).await.unwrap().paused);
        let last = store.journal(x.id).await.unwrap().pop().unwrap();
        assert_eq!(
            (last.event.as_str(), last.actor.as_str()),
            (PAUSE_EVENT, "ops:tester")
        );
        assert_eq!(last.reason.as_deref(), Some("partner maintenance"));
    }
    assert!(!store.get(c.id).await.unwrap().paused);
    // `d` matches the filter now but was not shown: untouched.
    let after = store.get(d.id).await.unwrap();
    assert!(!after.paused);
    assert_eq!(after.version, d.version);
    assert_eq!(entries(&store, d.id, PAUSE_EVENT).await, 0);
    let outcomes: Vec<Option<String>> = members(&store, &plan.token)
        .await
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes.contains(&Some("refused:invalid_transition".to_owned())));
}

async fn wrong_expired_or_mismatched_tokens_change_nothing(db: &TestDb) {
    let store = db.store().await;
    let a = active(&store, "a", "a", "r").await;
    let plan = plan_pause(&store, &of_partner()).await;
    let journal = store.journal(a.id).await.unwrap().len();

    let unknown = confirm(&store, "not-a-token-we-made", BulkAction::Pause).await;
    assert!(
        matches!(unknown, Err(BulkError::UnknownPlan)),
        "{unknown:?}"
    );
    let other = confirm(&store, &plan.token, BulkAction::Resume)
        .await
        .unwrap_err();
    assert!(
        matches!(
            other,
            BulkError::ActionMismatch {
                planned: BulkAction::Pause,
                asked: BulkAction::Resume
            }
        ),
        "{other:?}"
    );
    assert_eq!(other.code(), "bulk_plan_action_mismatch");
    sql(
        &store,
        "UPDATE bulk_plans SET expires_at = $1 WHERE id = $2",
        vec![ago(1).into(), hash(&plan.token).into()],
    )
    .await;
    let expired = confirm(&store, &plan.token, BulkAction::Pause)
        .await
        .unwrap_err();
    assert!(matches!(expired, BulkError::Expired(_)), "{expired:?}");
    assert_eq!(expired.code(), "bulk_plan_expired");

    let after = store.get(a.id).await.unwrap();
    assert!(!after.paused);
    assert_eq!(after.version, a.version);
    assert_eq!(store.journal(a.id).await.unwrap().len(), journal);
    assert_eq!(members(&store, &plan.token).await[0].1, None);
}

async fn a_second_confirmation_is_a_no_op_with_the_same_result(db: &TestDb) {
    let store = db.store().await;
    let a = active(&store, "a", "a", "r").await;
    let b = active(&store, "b", "a", "r").await;
    let plan = plan_pause(&store, &of_partner()).await;
    let first = confirm(&store, &plan.token, BulkAction::Pause)
        .await
        .unwrap();
    assert_eq!(first.acted, 2);
    let versions = [
        store.get(a.id).await.unwrap().version,
        store.get(b.id).await.unwrap().version,
    ];
    let second = confirm(&store, &plan.token, BulkAction::Pause)
        .await
        .unwrap();
    assert_eq!(second, first, "the stored result, not a second run");
    assert_eq!(
        [
            store.get(a.id).await.unwrap().version,
            store.get(b.id).await.unwrap().version
        ],
        versions
    );
    for x in [a.id, b.id] {
        assert_eq!(entries(&store, x, PAUSE_EVENT).await, 1);
    }
    // Its answer outlives its expiry (until purged a day later).
    sql(
        &store,
        "UPDATE bulk_plans SET expires_at = $1 WHERE id = $2",
        vec![ago(5).into(), hash(&plan.token).into()],
    )
    .await;
    let third = confirm(&store, &plan.token, BulkAction::Pause)
        .await
        .unwrap();
    assert_eq!(third, first);
}

async fn a_call_stopped_half_way_is_continued_and_acts_once(db: &TestDb) {
    let store = db.store().await;
    let mut all = Vec::new();
    for i in 0..6 {
        all.push(active(&store, &format!("u{i}"), "a", "r").await);
    }
    all.sort_by_key(|c| c.id.to_string());
    let plan = plan_pause(&store, &of_partner()).await;
    // A first call stopped half-way: it paused the first member and wrote its outcome, paused
    // the second and stopped before writing the second's.
    for c in &all[..2] {
        store
            .pause_connection(c.id, &operator(), &why("partner maintenance"))
            .await
            .unwrap();
    }
    sql(
        &store,
        "UPDATE bulk_plan_members SET outcome = 'acted' WHERE plan_id = $1 AND connection_id = $2",
        vec![hash(&plan.token).into(), all[0].id.to_string().into()],
    )
    .await;

    // Two calls at once continue it.
    let (one, two) = tokio::join!(
        confirm(&store, &plan.token, BulkAction::Pause),
        confirm(&store, &plan.token, BulkAction::Pause),
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one, two, "both answer the stored result");
    assert_eq!(one.acted + one.already, 6);
    assert_eq!(one.refused + one.gone, 0);
    assert!(one.already >= 1, "the second member was already paused");
    for c in &all {
        assert!(store.get(c.id).await.unwrap().paused);
        assert_eq!(
            entries(&store, c.id, PAUSE_EVENT).await,
            1,
            "{} paused once",
            c.id
        );
    }
    assert!(
        members(&store, &plan.token)
            .await
            .iter()
            .all(|(_, o)| o.is_some())
    );
}

async fn a_bulk_replay_makes_the_stuck_ones_due(db: &TestDb) {
    let store = db.store().await;
    let stuck = active(&store, "s", "a", "r").await;
    let fine = active(&store, "f", "a", "r").await;
    set(
        &store,
        &stuck,
        "sync_lease_until = $1, sync_lease_token = 'left-behind', next_sync_at = $2",
        vec![ago(60).into(), ago(62).into()],
    )
    .await;
    let later = Utc::now() + TimeDelta::hours(1);
    set(&store, &fine, "next_sync_at = $1", vec![later.into()]).await;
    let filter = ConnectionFilter {
        stuck: Some(StuckFilter::Any),
        ..ConnectionFilter::default()
    };
    let plan = store
        .plan_bulk(
            BulkAction::Replay,
            &filter,
            &why("after the outage"),
            &operator(),
            &BulkSettings::default(),
        )
        .await
        .unwrap();
    assert_eq!(ids(&plan.sample), [stuck.id.to_string()]);
    let reason = why("replayed after the outage");
    let result = store
        .execute_bulk(
            &plan.token,
            BulkAction::Replay,
            &operator(),
            Some(&reason),
            &BulkSettings::default(),
        )
        .await
        .unwrap();
    assert_eq!((result.acted, result.already, result.refused), (1, 0, 0));
    let after = store.get(stuck.id).await.unwrap();
    assert!(after.next_sync_at.unwrap() <= Utc::now());
    let last = store.journal(stuck.id).await.unwrap().pop().unwrap();
    assert_eq!(last.event, REPLAY_EVENT);
    assert_eq!(last.reason.as_deref(), Some("replayed after the outage"));
    assert_eq!(entries(&store, fine.id, REPLAY_EVENT).await, 0);
}

async fn expired_plans_are_purged(db: &TestDb) {
    let store = db.store().await;
    active(&store, "a", "a", "r").await;
    let open = plan_pause(&store, &of_partner()).await;
    let lapsed = plan_pause(&store, &of_partner()).await;
    let done = plan_pause(&store, &of_partner()).await;
    confirm(&store, &done.token, BulkAction::Pause)
        .await
        .unwrap();
    let expire = |token: &str, minutes: i64| {
        sql(
            &store,
            "UPDATE bulk_plans SET expires_at = $1 WHERE id = $2",
            vec![ago(minutes).into(), hash(token).into()],
        )
    };
    expire(&lapsed.token, 1).await;
    expire(&done.token, 1).await;
    // The lapsed plan goes; the executed one stays a day to answer its result again.
    assert_eq!(store.purge_bulk_plans(Utc::now()).await.unwrap(), 1);
    assert!(members(&store, &lapsed.token).await.is_empty());
    assert_eq!(members(&store, &open.token).await.len(), 1);
    assert!(
        confirm(&store, &done.token, BulkAction::Pause)
            .await
            .is_ok()
    );
    expire(&done.token, 25 * 60).await;
    assert_eq!(store.purge_bulk_plans(Utc::now()).await.unwrap(), 1);
    assert!(matches!(
        confirm(&store, &done.token, BulkAction::Pause).await,
        Err(BulkError::UnknownPlan)
    ));
    assert_eq!(plans(&store).await, 1);
}
