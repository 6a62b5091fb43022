//! `tributary ops show` and `tributary ops refetch` straight against a database: the view
//! of one connection (table and the API's JSON), and the re-fetch's rewind journaled with the
//! operator; refused ones exit 1 with the refusal's code.

use chrono::{TimeDelta, Utc};
use engine::testing::TestDb;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;

use crate::{active_connection, stderr, stdout, tributary};

const ACCESS: &str = "cli-show-access-token";

#[tokio::test]
async fn show_and_refetch_against_the_database() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let id = active_connection(&store, "alice", ACCESS).await;
    let cwd = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--database-url", db.url.as_str()]);
        tributary(cwd.path(), &all, &[])
    };
    let id_text = id.to_string();

    let out = run(&["ops", "show", &id_text]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains(&format!("connection {id}")), "{text}");
    assert!(text.contains("state active"), "{text}");
    assert!(text.contains("authorized"), "{text}");
    assert!(text.contains("fetched nothing"), "{text}");
    assert!(text.contains("never_fetched"), "{text}");
    assert!(!text.contains(ACCESS));
    let out = run(&["ops", "show", &id_text, "--json"]);
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["connection"]["id"], id_text.as_str());
    assert_eq!(view["journal"].as_array().unwrap().len(), 2, "{view}");
    assert!(view["coverage"]["fetched"].is_null());
    assert_eq!(view["stuck"], serde_json::json!([]));
    // Overdue by hand: the view names the reason, and the table the way out.
    let backend = store.db().get_database_backend();
    let overdue = "UPDATE connections SET next_sync_at = $1 WHERE id = $2";
    let values = [
        (Utc::now() - TimeDelta::hours(2)).into(),
        id_text.clone().into(),
    ];
    let statement = Statement::from_sql_and_values(backend, overdue, values);
    store.db().execute_raw(statement).await.unwrap();
    let out = run(&["ops", "show", &id_text, "--json"]);
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        view["stuck"],
        serde_json::json!(["transfer_overdue"]),
        "{view}"
    );
    let text = stdout(&run(&["ops", "show", &id_text]));
    assert!(text.contains("stuck transfer_overdue"), "{text}");

    let (start, end) = (
        (Utc::now() - TimeDelta::days(3)).to_rfc3339(),
        (Utc::now() - TimeDelta::days(2)).to_rfc3339(),
    );
    let refetch = |extra: &[&str]| {
        let mut args = vec![
            "ops",
            "refetch",
            &id_text,
            "--start",
            &start,
            "--end",
            &end,
            "--reason",
            "partner backfilled",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    // Never fetched: refused, exit 1, the code named.
    let out = refetch(&["--operator", "tester"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not_fetched_yet"), "{}", stderr(&out));
    // A dry run needs the server (the partner is reached by its clients).
    let out = refetch(&["--dry-run"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--server"), "{}", stderr(&out));

    // As if a transfer had fetched through now: the re-fetch rewinds, once.
    let backend = store.db().get_database_backend();
    store
        .db()
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "UPDATE connections SET fetched_through = $1, fetched_from = $2 WHERE id = $3",
            [
                Utc::now().into(),
                (Utc::now() - TimeDelta::days(30)).into(),
                id_text.clone().into(),
            ],
        ))
        .await
        .unwrap();
    let out = refetch(&["--operator", "tester"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("cursor rewound"), "{}", stdout(&out));
    let out = refetch(&["--operator", "tester"]);
    assert!(stdout(&out).contains("nothing changed"), "{}", stdout(&out));
    let journal = store.journal(id).await.unwrap();
    let refetches: Vec<_> = journal
        .iter()
        .filter(|e| e.event == engine::store::REFETCH_EVENT)
        .collect();
    assert_eq!(refetches.len(), 1, "{journal:?}");
    assert_eq!(refetches[0].actor, "ops:tester");
    let row = store.get(id).await.unwrap();
    assert_eq!(row.fetched_through.unwrap().to_rfc3339(), start);
    db.cleanup().await;
}
