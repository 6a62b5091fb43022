//! `tributary ops summary` and `tributary ops list`: the fleet of a database made by hand, as
//! tables and as the API's JSON, filters and pages, and bad filters refused.

use chrono::{TimeDelta, Utc};
use engine::testing::TestDb;
use sea_orm::{ConnectionTrait, Statement};

use crate::{stderr, stdout, tributary};

const ACCESS: &str = "cli-inspect-access-token";

/// An active connection of `user`; its next transfer `due_minutes` from now.
async fn connection(store: &engine::Store, user: &str, due_minutes: i64) -> String {
    let id = crate::active_connection(store, user, ACCESS).await;
    let backend = store.db().get_database_backend();
    let due = Utc::now() + TimeDelta::minutes(due_minutes);
    store
        .db()
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "UPDATE connections SET next_sync_at = $1 WHERE id = $2",
            [due.into(), id.to_string().into()],
        ))
        .await
        .unwrap();
    id.to_string()
}

#[tokio::test]
async fn summary_and_list_show_the_fleet_and_its_stuck_connections() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let late = connection(&store, "alice", -30).await;
    let fine = connection(&store, "bob", 60).await;
    let mut both = [late.clone(), fine.clone()];
    both.sort();

    let cwd = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--database-url", db.url.as_str()]);
        let out = tributary(cwd.path(), &all, &[]);
        let (text, err) = (stdout(&out), stderr(&out));
        assert!(
            !text.contains(ACCESS) && !err.contains(ACCESS),
            "no token printed"
        );
        assert!(!err.contains("panicked"), "{err}");
        (out.status.code(), text, err)
    };

    let (code, text, err) = run(&["ops", "summary"]);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(text.contains("2 connections, 0 paused, 1 stuck"), "{text}");
    assert!(
        text.contains("1 due now, 1 overdue (oldest due 30m"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("transfer_overdue") && l.contains(" 1 ")),
        "{text}"
    );

    let (code, text, _) = run(&["ops", "summary", "--json"]);
    assert_eq!(code, Some(0));
    let summary: serde_json::Value = serde_json::from_str(&text).expect("JSON on stdout");
    assert_eq!(summary["total"], 2);
    assert_eq!(summary["stuckConnections"], 1);
    assert_eq!(summary["stuck"][2]["reason"], "transfer_overdue");
    assert_eq!(summary["stuck"][2]["count"], 1);

    let (code, text, _) = run(&["ops", "list"]);
    assert_eq!(code, Some(0));
    let row = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(row(&late).ends_with("transfer_overdue"), "{text}");
    assert!(
        row(&fine).contains(" active ") && row(&fine).ends_with(" -"),
        "{text}"
    );
    assert!(text.contains("2 connection(s)\n"), "{text}");

    let (code, text, _) = run(&["ops", "list", "--stuck", "true", "--json"]);
    assert_eq!(code, Some(0));
    let page: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page["connections"].as_array().unwrap().len(), 1);
    assert_eq!(page["connections"][0]["id"], late.as_str());
    assert_eq!(
        page["connections"][0]["stuckReasons"][0],
        "transfer_overdue"
    );
    assert_eq!(page["nextCursor"], serde_json::Value::Null);

    // One at a time: the table names the next page's cursor.
    let (code, text, _) = run(&["ops", "list", "--limit", "1"]);
    assert_eq!(code, Some(0));
    assert!(text.lines().any(|l| l.starts_with(&both[0])), "{text}");
    let cursor = text
        .split("more: --cursor ")
        .nth(1)
        .expect("a next page")
        .trim()
        .to_owned();
    let (code, text, _) = run(&["ops", "list", "--limit", "1", "--cursor", &cursor, "--json"]);
    assert_eq!(code, Some(0), "{text}");
    let page: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page["connections"][0]["id"], both[1].as_str());
    assert_eq!(page["nextCursor"], serde_json::Value::Null);

    // Bad filters: usage errors (2) for unknown values, 1 for a contradiction or a bad cursor.
    for args in [
        &["ops", "list", "--reason", "bored"][..],
        &["ops", "list", "--state", "sleeping"],
        &["ops", "list", "--limit", "0"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
    }
    let (code, _, err) = run(&[
        "ops",
        "list",
        "--stuck",
        "false",
        "--reason",
        "transfer_overdue",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot be combined with stuck=false"), "{err}");
    let (code, _, err) = run(&["ops", "list", "--cursor", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--cursor"), "{err}");
    db.cleanup().await;
}
