//! The doctor's report-only violations (docs/operations.md#doctor): a journal that disagrees
//! with its row, or an active connection without tokens, is reported, and a repair leaves it
//! exactly as it was.

use engine::{store::DoctorCode as C, testing::TestDb};
use sea_orm::Value;

use crate::{
    active,
    doctor::{check, now, only, repair},
    sql,
};

engine::backend_tests!(unrepairable_violations_are_reported_and_left_alone);

/// A report-only violation: the code, how to make it, how to undo it (`true`: binds now as $2).
type Unrepairable = (C, &'static str, &'static [(&'static str, bool)]);

async fn unrepairable_violations_are_reported_and_left_alone(db: &TestDb) {
    let store = db.store().await;
    // Each undone by hand before the next, so that the next case is found alone.
    let cases: [Unrepairable; 5] = [
        (
            C::ActiveWithoutTokens,
            "UPDATE connections SET token_ciphertext = NULL, token_key_id = NULL WHERE id = $1",
            &[
                (
                    "UPDATE connections SET state = 'failed', next_sync_at = NULL, \
                     refresh_due_at = NULL, token_expires_at = NULL, version = 3 WHERE id = $1",
                    false,
                ),
                (JOURNAL_FAILED, true),
            ],
        ),
        (
            C::JournalGap,
            "DELETE FROM connection_events WHERE connection_id = $1 AND seq = 1",
            &[(JOURNAL_FIRST, true)],
        ),
        (
            C::JournalVersionMismatch,
            "UPDATE connections SET version = version + 5 WHERE id = $1",
            &[("UPDATE connections SET version = 2 WHERE id = $1", false)],
        ),
        (
            C::JournalStateMismatch,
            "UPDATE connection_events SET to_state = 'revoked' WHERE connection_id = $1 AND seq = 2",
            &[(
                "UPDATE connection_events SET to_state = 'active' WHERE connection_id = $1 AND seq = 2",
                false,
            )],
        ),
        (
            C::JournalChainBroken,
            "UPDATE connection_events SET from_state = 'invited' WHERE connection_id = $1 AND seq = 2",
            &[(
                "UPDATE connection_events SET from_state = 'authorizing' \
                 WHERE connection_id = $1 AND seq = 2",
                false,
            )],
        ),
    ];
    for (k, (code, breaks, undo)) in cases.into_iter().enumerate() {
        let c = active(&store, &format!("u{k}"), "a", "r").await;
        let id = c.id.to_string();
        sql(&store, breaks, vec![id.clone().into()]).await;
        only(&check(&store).await, code, &id, 0, 1);
        let journal = store.journal(c.id).await.unwrap();
        let report = repair(&store).await;
        only(&report, code, &id, 0, 1);
        assert!(!report.is_clean() && code.repair().is_none());
        assert_eq!(store.journal(c.id).await.unwrap(), journal, "left alone");
        for (text, with_now) in undo {
            let mut values: Vec<Value> = vec![id.clone().into()];
            if *with_now {
                values.push(now().into());
            }
            sql(&store, text, values).await;
        }
        let left = check(&store).await;
        assert!(left.findings.is_empty(), "{code} undone: {left:#?}");
    }
}

const JOURNAL_FIRST: &str = "INSERT INTO connection_events \
     (connection_id, seq, from_state, to_state, event, actor, details, at) \
     VALUES ($1, 1, NULL, 'authorizing', 'start_authorization', 'test', '{}', $2)";

const JOURNAL_FAILED: &str = "INSERT INTO connection_events \
     (connection_id, seq, from_state, to_state, event, actor, details, at) \
     VALUES ($1, 3, 'active', 'failed', 'fail', 'test', '{}', $2)";
