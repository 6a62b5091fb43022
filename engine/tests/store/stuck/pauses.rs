//! A transfer held by a pause of its partner or of everything waits by an operator's choice:
//! not overdue, not due in the summary; resumed, it is overdue again (docs/operations.md#stuck).

use engine::{
    model::Actor,
    store::{ConnectionFilter, PauseScope, Reason, StuckFilter, StuckSettings},
    testing::TestDb,
};

use super::{ago, healthy, list, now, set, stuck};

engine::backend_tests!(partner_and_global_pauses_are_not_overdue);

async fn overdue_count(store: &engine::Store) -> (u64, u64) {
    let s = store
        .ops_summary(now(), &StuckSettings::default())
        .await
        .unwrap();
    (s.due_now, s.overdue)
}

async fn partner_and_global_pauses_are_not_overdue(db: &TestDb) {
    let store = db.store().await;
    let c = healthy(&store, "held").await;
    set(&store, &c, "next_sync_at = $1", vec![ago(60).into()]).await;
    let overdue = || {
        stuck(StuckFilter::Reason(
            engine::store::StuckReason::TransferOverdue,
        ))
    };
    assert_eq!(list(&store, overdue()).await.len(), 1);
    assert_eq!(overdue_count(&store).await, (1, 1));

    let actor = Actor::new("ops", "olga");
    let reason = Reason::parse("partner incident").unwrap();
    for scope in [PauseScope::Partner(crate::partner()), PauseScope::All] {
        store.pause(&scope, &actor, &reason).await.unwrap();
        assert!(list(&store, overdue()).await.is_empty(), "{scope:?}");
        assert_eq!(overdue_count(&store).await, (0, 0), "{scope:?}");
        // Still listed, with no reason.
        let all = list(&store, ConnectionFilter::default()).await;
        assert_eq!(all, vec![(c.id, vec![])]);
        store
            .resume(&scope, &actor, &reason, std::time::Duration::ZERO)
            .await
            .unwrap();
    }
    set(&store, &c, "next_sync_at = $1", vec![ago(60).into()]).await;
    assert_eq!(list(&store, overdue()).await.len(), 1, "resumed");
}
