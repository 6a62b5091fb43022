//! `tributary ops doctor`: a violation made by hand is listed (table and JSON) with exit 1,
//! `--repair` fixes it with exit 0 and the operator in the journal, a clean database exits 0,
//! and a violation that is only reported keeps the exit status at 1.

use engine::testing::TestDb;
use sea_orm::{ConnectionTrait, Statement};

use crate::{contains_jwt, stderr, stdout, tributary};

const ACCESS: &str = "cli-doctor-access-token";

async fn sql(store: &engine::Store, text: &str, id: &str) {
    let backend = store.db().get_database_backend();
    store
        .db()
        .execute_raw(Statement::from_sql_and_values(
            backend,
            text,
            [id.to_owned().into()],
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn doctor_lists_repairs_and_exits_by_what_remains() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let id = crate::active_connection(&store, "alice", ACCESS).await;
    let id = id.to_string();
    sql(
        &store,
        "UPDATE connections SET next_sync_at = NULL WHERE id = $1",
        &id,
    )
    .await;

    let cwd = tempfile::tempdir().unwrap();
    let doctor = |extra: &[&str]| {
        let mut args = vec!["ops", "doctor", "--database-url", db.url.as_str()];
        args.extend_from_slice(extra);
        let out = tributary(cwd.path(), &args, &[]);
        let (text, err) = (stdout(&out), stderr(&out));
        assert!(
            !text.contains(ACCESS) && !err.contains(ACCESS),
            "no token printed"
        );
        assert!(
            !contains_jwt(&text) && !err.contains("panicked"),
            "{text}{err}"
        );
        (out.status.code(), text, err)
    };

    let (code, text, err) = doctor(&[]);
    assert_eq!(code, Some(1), "{text}{err}");
    assert!(
        text.contains("transfer_not_scheduled") && text.contains(&id),
        "{text}"
    );
    assert!(err.contains("1 violation(s) remain"), "{err}");

    let (code, text, _) = doctor(&["--json"]);
    assert_eq!(code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&text).expect("JSON on stdout");
    assert_eq!(report["clean"], false);
    assert_eq!(report["violations"][0]["code"], "transfer_not_scheduled");
    assert_eq!(report["violations"][0]["sample"][0], id.as_str());

    let (code, text, err) = doctor(&["--repair", "--operator", "dana"]);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(text.contains("no violation remains"), "{text}");
    let journal = store.journal(id.parse().unwrap()).await.unwrap();
    assert_eq!(journal.last().unwrap().actor, "ops:dana");
    assert!(
        store
            .get(id.parse().unwrap())
            .await
            .unwrap()
            .next_sync_at
            .is_some()
    );

    let (code, text, _) = doctor(&[]);
    assert_eq!(code, Some(0));
    assert!(text.contains("every invariant holds"), "{text}");

    // Only reported, never repaired: the exit status says it remains.
    sql(
        &store,
        "UPDATE connections SET version = version + 5 WHERE id = $1",
        &id,
    )
    .await;
    let (code, text, _) = doctor(&["--repair", "--json"]);
    assert_eq!(code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let violation = &report["violations"][0];
    assert_eq!(violation["code"], "journal_version_mismatch");
    assert_eq!(
        (&violation["repaired"], &violation["remaining"]),
        (&0.into(), &1.into())
    );
    assert!(violation["repair"].is_null());
    store.close().await;
    db.cleanup().await;
}
