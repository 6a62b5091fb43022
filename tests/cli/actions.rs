//! `tributary ops replay|pause|resume|pauses` against the database: a stuck connection is
//! replayed (journaled with the operator), a second replay changes nothing, a bad reason is a
//! usage error that writes nothing, and a paused partner is neither claimed nor replayed until
//! resumed.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use engine::testing::TestDb;
use sea_orm::{ConnectionTrait, Statement};

use crate::{stderr, stdout, tributary};

const ACCESS: &str = "cli-actions-access-token";

#[tokio::test]
async fn replay_and_pause_a_partner_from_the_command_line() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let id = crate::active_connection(&store, "alice", ACCESS).await;
    // Stuck: an expired lease left behind and the next transfer hours away.
    let backend = store.db().get_database_backend();
    store
        .db()
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "UPDATE connections SET sync_lease_until = $1, sync_lease_token = 'lost', \
             next_sync_at = $2 WHERE id = $3",
            [
                (Utc::now() - TimeDelta::minutes(10)).into(),
                (Utc::now() + TimeDelta::hours(6)).into(),
                id.to_string().into(),
            ],
        ))
        .await
        .unwrap();
    let lease = Duration::from_secs(60);
    assert!(store.claim_due(10, lease).await.unwrap().is_empty());

    let cwd = tempfile::tempdir().unwrap();
    let ops = |args: &[&str]| {
        let mut all = vec!["ops"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--database-url", db.url.as_str(), "--operator", "dana"]);
        let out = tributary(cwd.path(), &all, &[]);
        let (text, err) = (stdout(&out), stderr(&out));
        assert!(
            !text.contains(ACCESS) && !err.contains(ACCESS),
            "no token printed"
        );
        assert!(!err.contains("panicked"), "{err}");
        (out.status.code(), text, err)
    };
    let id_text = id.to_string();

    // A bad reason is a usage error: nothing is opened or written.
    let journal = store.journal(id).await.unwrap();
    let (code, _, err) = ops(&["replay", &id_text, "--reason", "asked by pat@example.org"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("email address") && !err.contains("pat@"),
        "{err}"
    );
    assert_eq!(store.journal(id).await.unwrap(), journal);

    let (code, text, err) = ops(&["replay", &id_text, "--reason", "lost job"]);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(text.contains("transfer due at"), "{text}");
    assert!(text.contains("lease left behind was cleared"), "{text}");
    let last = store.journal(id).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.event.as_str(), last.actor.as_str()),
        ("ops_replay", "ops:dana")
    );
    assert_eq!(last.reason.as_deref(), Some("lost job"));
    let (code, text, _) = ops(&["replay", &id_text, "--reason", "lost job"]);
    assert_eq!(code, Some(0));
    assert!(text.contains("nothing changed"), "{text}");
    assert_eq!(store.journal(id).await.unwrap().len(), journal.len() + 1);

    let (code, text, err) = ops(&["pause", "--partner", "sandbox-cgm", "--reason", "outage"]);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(text.contains("partner:sandbox-cgm is paused"), "{text}");
    let pauses = store.pauses().await.unwrap();
    assert_eq!(pauses.len(), 1);
    assert_eq!(
        (pauses[0].actor.as_str(), pauses[0].reason.as_str()),
        ("ops:dana", "outage")
    );
    assert!(
        store.claim_due(10, lease).await.unwrap().is_empty(),
        "paused: not claimed"
    );
    let (code, text, _) = ops(&["pauses"]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains("partner:sandbox-cgm") && text.contains("outage"),
        "{text}"
    );
    // The connection is paused by its partner: not replayed.
    let (code, _, err) = ops(&["replay", &id_text, "--reason", "try"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("paused"), "{err}");
    // Exactly one of an id, --partner or --all.
    let (code, _, _) = ops(&["pause", "--reason", "which?"]);
    assert_eq!(code, Some(2));

    let (code, text, err) = ops(&["resume", "--partner", "sandbox-cgm", "--reason", "over"]);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(text.contains("partner:sandbox-cgm is resumed"), "{text}");
    assert!(store.pauses().await.unwrap().is_empty());
    // Due (spread over the configured window, within it), and claimed once due.
    let c = store.get(id).await.unwrap();
    assert!(c.next_sync_at.unwrap() <= Utc::now() + TimeDelta::seconds(301));
    store.close().await;
    db.cleanup().await;
}
