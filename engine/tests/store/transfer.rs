use chrono::{TimeDelta, Utc};
use engine::{
    StoreError,
    model::{Actor, Change, MappedRecord},
    state::Event,
    store::{Chunk, SkippedRecord},
    testing::TestDb,
};

use futures::future::BoxFuture;

use crate::{LEASE, active, as_one_group, leased, records, refuse, started, user_data};

engine::backend_tests!(
    concurrent_transfers_group_commit_each_to_its_own_row,
    a_failing_write_fails_only_its_own_transfer,
    a_failing_start_fails_only_its_own_transfer,
    a_bad_record_is_counted_once_however_often_it_is_read,
    nul_characters_from_a_partner_are_stored_on_both_backends,
    a_claim_waits_its_turn_behind_a_long_write,
);

fn skipped(key: &str) -> SkippedRecord {
    SkippedRecord {
        key: key.to_owned(),
        kind: "egv".to_owned(),
        partner_record_id: Some(key.to_owned()),
        reason: "value is not a number".to_owned(),
    }
}

/// Commits of the last chunk of two extra transfers, to take the group-commit slots.
fn slot_takers(
    store: &engine::store::Store,
    extras: &[engine::store::SyncLease],
) -> Vec<BoxFuture<'static, ()>> {
    extras
        .iter()
        .map(|lease| {
            let (store, mut lease) = (store.clone(), lease.clone());
            let (now, later) = (Utc::now(), Utc::now() + TimeDelta::days(1));
            let commit: BoxFuture<'static, ()> = Box::pin(async move {
                store
                    .commit_last_chunk(&mut lease, Chunk::default(), now, later, false)
                    .await
                    .unwrap();
            });
            commit
        })
        .collect()
}

async fn concurrent_transfers_group_commit_each_to_its_own_row(db: &TestDb) {
    let store = db.store().await;
    let (leases, extras) = started(db, &store, "g", 24).await;
    assert!(
        store.group_stats().largest_start >= 24,
        "the concurrent starts shared one statement: {:?}",
        store.group_stats()
    );
    // A duplicated job starts nothing: its connection's lease is taken.
    let first = leases[0].connection.clone();
    assert!(
        store
            .start_sync(first.id, first.version, LEASE)
            .await
            .unwrap()
            .is_none()
    );
    // Connection 5 is disconnected mid-transfer: its commit must write nothing.
    let gone = leases[5].connection.clone();
    store
        .apply(
            gone.id,
            None,
            Change::new(Event::Disconnect, Actor::new("user", "g5")),
        )
        .await
        .unwrap();
    // Whole seconds: PostgreSQL keeps microseconds.
    let next = chrono::SubsecRound::trunc_subsecs(Utc::now() + TimeDelta::hours(1), 0);
    let commits = leases.iter().enumerate().map(|(i, lease)| {
        let store = store.clone();
        let mut lease = lease.clone();
        let commit: BoxFuture<'static, _> = Box::pin(async move {
            let through = Utc::now();
            let chunk = Chunk {
                records: records(i, i % 5 + 1),
                skipped: (0..i % 2).map(|k| skipped(&format!("bad{k}"))).collect(),
                window_start: None,
            };
            store
                .commit_last_chunk(&mut lease, chunk, through, next, false)
                .await
        });
        commit
    });
    let (_, results) =
        as_one_group(db, &store, slot_takers(&store, &extras), commits.collect()).await;
    let grouped = store.group_stats();
    assert!(
        grouped.largest_commit >= 24,
        "the concurrent commits shared one transaction: {grouped:?}"
    );
    for (i, (result, lease)) in results.into_iter().zip(&leases).enumerate() {
        let id = lease.connection.id;
        let stored = store.record_ids(id, true).await.unwrap();
        if i == 5 {
            assert!(matches!(result, Err(StoreError::LeaseLost)), "lost lease");
            assert!(stored.is_empty(), "a lost lease writes nothing");
            continue;
        }
        let (stats, connection) = result.unwrap();
        let want: Vec<String> = (0..i % 5 + 1).map(|k| format!("r{k}")).collect();
        assert_eq!(stats.inserted, want.len() as u64, "connection {i}");
        assert_eq!(stored, want, "connection {i} holds exactly its records");
        assert_eq!(connection.next_sync_at, Some(next));
        assert!(connection.last_sync_at.is_some());
        assert_eq!(connection.records_skipped, (i % 2) as u64);
        let data = user_data(&store, &format!("g{i}")).await;
        assert!(
            data.iter()
                .all(|r| r.datum["value"].as_u64().unwrap() / 100 == i as u64
                    && r.datum["note"] == "a \"quoted\" ✓"),
            "connection {i}'s data are its own, stored as sent"
        );
    }
    // The next transfer of connection 4 (5 records stored): one corrected, one new, the rest
    // as stored. Only the two are written, and each is counted for what it was.
    let id = leases[4].connection.id;
    store
        .request_sync(id, std::time::Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let claim = store.claim_due(10, LEASE).await.unwrap();
    assert_eq!(claim.len(), 1);
    let mut lease = store
        .start_sync(claim[0].id, claim[0].version, LEASE)
        .await
        .unwrap()
        .expect("the run ended with its commit: the lease was released");
    let mut again = records(4, 6);
    let mut datum = again[0].datum_value();
    datum["value"] = serde_json::json!(499);
    again[0].datum = MappedRecord::datum_of(&datum);
    let (stats, _) = store
        .commit_last_chunk(&mut lease, again.into(), Utc::now(), next, false)
        .await
        .unwrap();
    assert_eq!(
        (stats.inserted, stats.updated, stats.unchanged),
        (1, 1, 4),
        "{stats:?}"
    );
    let data = user_data(&store, "g4").await;
    assert_eq!(data.len(), 6);
    assert!(data.iter().any(|r| r.datum["value"] == 499), "corrected");
}

async fn a_failing_write_fails_only_its_own_transfer(db: &TestDb) {
    let store = db.store().await;
    refuse(
        &store,
        "INSERT",
        "data_records",
        "NEW.partner_record_id = 'poison'",
    )
    .await;
    let (leases, extras) = started(db, &store, "p", 12).await;
    let next = Utc::now() + TimeDelta::hours(1);
    let commits = leases.iter().enumerate().map(|(i, lease)| {
        let store = store.clone();
        let mut lease = lease.clone();
        let commit: BoxFuture<'static, _> = Box::pin(async move {
            let mut records = records(i, 3);
            if i == 7 {
                records[1].partner_record_id = "poison".to_owned();
            }
            store
                .commit_last_chunk(&mut lease, records.into(), Utc::now(), next, false)
                .await
        });
        commit
    });
    let (_, results) =
        as_one_group(db, &store, slot_takers(&store, &extras), commits.collect()).await;
    let stats = store.group_stats();
    assert!(
        stats.largest_commit >= 12,
        "the twelve were one group: {stats:?}"
    );
    assert_eq!(
        stats.commit_fallbacks, 1,
        "and it was retried one by one: {stats:?}"
    );
    for (i, (result, lease)) in results.into_iter().zip(&leases).enumerate() {
        let id = lease.connection.id;
        let stored = store.record_ids(id, true).await.unwrap();
        let now = store.get(id).await.unwrap();
        if i == 7 {
            let err = result.unwrap_err();
            assert!(matches!(err, StoreError::Db(_)), "{err:?}");
            assert!(
                stored.is_empty(),
                "nothing of the failed transfer is written"
            );
            assert_eq!(now.fetched_through, None, "its cursor did not move");
            assert_eq!(now.last_sync_at, None, "its run did not end");
        } else {
            result.unwrap();
            assert_eq!(stored, ["r0", "r1", "r2"], "connection {i}");
            assert!(now.last_sync_at.is_some());
        }
    }
}

async fn a_failing_start_fails_only_its_own_transfer(db: &TestDb) {
    let store = db.store().await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(active(&store, &format!("s{i}"), "a", "r").await.id);
    }
    let mut extras = Vec::new();
    for i in 0..2 {
        extras.push(active(&store, &format!("x{i}"), "a", "r").await.id);
    }
    refuse(
        &store,
        "UPDATE",
        "connections",
        "NEW.user_id = 's5' AND NEW.sync_lease_token IS NOT NULL",
    )
    .await;
    let claimed = store.claim_due(100, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 12);
    let start = |c: &engine::store::Claimed| {
        let (store, c) = (store.clone(), c.clone());
        let start: BoxFuture<'static, _> =
            Box::pin(async move { (c.id, store.start_sync(c.id, c.version, LEASE).await) });
        start
    };
    let (first, rest): (Vec<_>, Vec<_>) = claimed.iter().partition(|c| extras.contains(&c.id));
    let (_, results) = as_one_group(
        db,
        &store,
        first.into_iter().map(start).collect(),
        rest.into_iter().map(start).collect(),
    )
    .await;
    let stats = store.group_stats();
    assert!(
        stats.largest_start >= 10,
        "the ten were one group: {stats:?}"
    );
    assert_eq!(
        stats.start_fallbacks, 1,
        "and it was retried one by one: {stats:?}"
    );
    for (id, started) in results {
        if id == ids[5] {
            assert!(matches!(started, Err(StoreError::Db(_))), "{started:?}");
        } else {
            let lease = started.unwrap().expect("started");
            assert_eq!(lease.connection.id, id);
        }
    }
}

/// The overlap and the late-change horizon read the same bad record again and again: it is
/// recorded once, with its reason, and counted once.
async fn a_bad_record_is_counted_once_however_often_it_is_read(db: &TestDb) {
    let store = db.store().await;
    let mut lease = leased(&store, "u1").await;
    let id = lease.connection.id;
    let through = Utc::now();
    // One id twice with different contents (counted), and once more identically (not).
    let mut window = records(1, 2);
    let mut changed = window[0].clone();
    let mut datum = changed.datum_value();
    datum["value"] = serde_json::json!(-1);
    changed.datum = MappedRecord::datum_of(&datum);
    window.push(changed.clone());
    window.push(changed);
    let first = Chunk {
        records: window,
        skipped: vec![skipped("k1"), skipped("k2"), skipped("k1")],
        window_start: None,
    };
    let stats = store
        .commit_chunk(&mut lease, first, Some(through), LEASE)
        .await
        .unwrap();
    assert_eq!(
        stats.newly_skipped, 2,
        "k1 twice in one window is one record"
    );
    let again = Chunk {
        records: records(1, 2),
        skipped: vec![skipped("k1"), skipped("k3")],
        window_start: None,
    };
    let (stats, connection) = store
        .commit_last_chunk(
            &mut lease,
            again,
            through,
            through + TimeDelta::hours(1),
            false,
        )
        .await
        .unwrap();
    assert_eq!(stats.newly_skipped, 1, "k1 was seen before");
    assert_eq!(connection.records_skipped, 3);
    assert_eq!(connection.records_conflicting, 1);
    assert_eq!(store.get(id).await.unwrap().records_skipped, 3);
    let kept = store.skipped_records(id, 10).await.unwrap();
    let mut keys: Vec<_> = kept.iter().map(|s| s.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["k1", "k2", "k3"]);
    assert!(kept.iter().all(|s| s.reason == "value is not a number"));
}

/// PostgreSQL's text cannot hold U+0000 and its JSON functions refuse `\u0000`; a partner
/// string with a NUL must be stored all the same (as U+FFFD), on both backends, with every
/// other record of the window.
async fn nul_characters_from_a_partner_are_stored_on_both_backends(db: &TestDb) {
    let store = db.store().await;
    let mut lease = leased(&store, "u1").await;
    let mut window = records(1, 25);
    let mut datum = window[3].datum_value();
    datum["transmitterId"] = serde_json::json!("ab\u{0}cd");
    datum["payload"] = serde_json::json!({"transmitterId": "ab\u{0}cd"});
    window[3].datum = MappedRecord::datum_of(&datum);
    let chunk = Chunk {
        records: window,
        skipped: vec![SkippedRecord {
            key: "bad\u{0}key".to_owned(),
            kind: "egv".to_owned(),
            partner_record_id: None,
            reason: "reason with \u{0}".to_owned(),
        }],
        window_start: None,
    };
    let now = Utc::now();
    let (stats, connection) = store
        .commit_last_chunk(&mut lease, chunk, now, now + TimeDelta::hours(1), false)
        .await
        .unwrap();
    assert_eq!(stats.inserted, 25);
    assert_eq!(connection.records_skipped, 1);
    let data = user_data(&store, "u1").await;
    assert_eq!(data.len(), 25);
    let odd = data.iter().find(|r| r.partner_record_id == "r3").unwrap();
    assert_eq!(odd.datum["transmitterId"], "ab\u{FFFD}cd");
    assert_eq!(odd.datum["payload"]["transmitterId"], "ab\u{FFFD}cd");
}

/// SQLite has one writer: a claim that finds the database locked by a long write (a big group
/// commit under load) waits its turn instead of failing the dispatcher's pass with "database
/// is locked" (the busy timeout was 5 s; this write holds the lock for 6 s).
async fn a_claim_waits_its_turn_behind_a_long_write(db: &TestDb) {
    let store = db.store().await;
    let conn = active(&store, "u1", "a", "r").await;
    let block = crate::WriteBlock::hold(db).await;
    let claim = {
        let store = store.clone();
        tokio::spawn(async move { store.claim_due(10, LEASE).await })
    };
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    block.release().await;
    let claimed = claim.await.unwrap().expect("the claim waited for the lock");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, conn.id);
}
