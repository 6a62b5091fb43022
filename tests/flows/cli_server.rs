//! `tributary ops bulk` and `tributary ops doctor` through a running server (`--server URL
//! --token T`): the same dry run, confirmation and report as against the database, acted on
//! by the server with the token's subject as actor, and the token never printed.

use api::auth::Role;
use engine::testing::TestDb;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;

use crate::helpers::{TestApp, cli, test_config};

engine::backend_tests!(
    a_bulk_pause_through_the_server_touches_what_its_dry_run_showed,
    the_doctor_finds_and_repairs_through_the_server,
);

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// `args` with `--server` and `--token` for `app`.
fn through(app: &TestApp, token: &str, args: &str) -> Vec<String> {
    let mut args = words(args);
    args.extend([
        "--server".to_owned(),
        app.base.clone(),
        "--token".to_owned(),
        token.to_owned(),
    ]);
    args
}

async fn a_bulk_pause_through_the_server_touches_what_its_dry_run_showed(db: &TestDb) {
    let app = TestApp::spawn(db).await;
    let mut shown = Vec::new();
    for user in ["ann", "ben"] {
        shown.push(TestApp::id(&app.connect_fully(user, "sandbox-cgm").await).to_string());
    }
    let other = TestApp::id(&app.connect_fully("cat", "sandbox-pump").await).to_string();
    let ops = app.token(Role::Ops, "olga");

    let (ok, out, err) = cli(through(
        &app,
        &ops,
        "ops bulk pause --partner sandbox-cgm --reason partner-maintenance --dry-run",
    ))
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("2 connection(s) match"), "{out}");
    assert!(shown.iter().all(|id| out.contains(id.as_str())), "{out}");
    assert!(!out.contains(&other), "{out}");
    assert!(
        !out.contains(&ops) && !err.contains(&ops),
        "no bearer token printed"
    );
    // The printed command confirms through the same server, the token left out.
    let confirm = out
        .lines()
        .find(|l| l.contains("--confirm"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        confirm.contains(&format!("--server '{}", app.base)),
        "{confirm}"
    );
    assert!(confirm.contains("--token <the same token>"), "{confirm}");
    let words: Vec<&str> = confirm.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "--confirm").unwrap();
    let token = words[at + 1].to_owned();

    // A connection that starts matching after the dry run is not touched.
    let late = TestApp::id(&app.connect_fully("dan", "sandbox-cgm").await).to_string();
    let confirmation =
        format!("ops bulk pause --confirm {token} --reason partner-maintenance --json");
    let (ok, out, err) = cli(through(&app, &ops, &confirmation)).await;
    assert!(ok, "{err}");
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (result["acted"].as_u64(), result["refused"].as_u64()),
        (Some(2), Some(0))
    );
    for id in &shown {
        assert_eq!(app.connection(id).await["paused"], true, "{id}");
        let events = app.events(id).await;
        assert!(
            events
                .iter()
                .any(|e| e["actor"].to_string().contains("olga")),
            "the token's subject is the actor: {events:?}"
        );
    }
    assert_eq!(app.connection(&late).await["paused"], false);
    assert_eq!(app.connection(&other).await["paused"], false);
    // Again: the same answer, nothing more done; as a table this time.
    let again = format!("ops bulk pause --confirm {token} --reason partner-maintenance");
    let (ok, out, err) = cli(through(&app, &ops, &again)).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("bulk pause: 2 acted on, 0 already so, 0 refused"),
        "{out}"
    );

    // Refused by the server: its code, a non-zero exit, nothing done.
    let (ok, _, err) = cli(through(
        &app,
        &ops,
        "ops bulk resume --confirm not-a-token-anyone-has --reason oops",
    ))
    .await;
    assert!(!ok);
    assert!(err.contains("404 bulk_plan_unknown"), "{err}");
    let user = app.token(Role::User, "ann");
    let (ok, _, err) = cli(through(
        &app,
        &user,
        "ops bulk pause --reason nope --dry-run",
    ))
    .await;
    assert!(!ok);
    assert!(err.contains("403 forbidden"), "{err}");
    assert_eq!(app.connection(&late).await["paused"], false);
    app.stop().await;
}

async fn the_doctor_finds_and_repairs_through_the_server(db: &TestDb) {
    let mut config = test_config(db);
    // Nothing runs behind the test's back: the violation stays until the doctor repairs it.
    config.workers.enabled = false;
    let app = TestApp::spawn_with(config).await;
    let id = TestApp::id(&app.connect_fully("eve", "sandbox-cgm").await).to_string();
    let ops = app.token(Role::Ops, "olga");

    let (ok, out, err) = cli(through(&app, &ops, "ops doctor")).await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with("doctor: every invariant holds (20 checked"),
        "{out}"
    );

    // The violation, by hand: an active connection with no next transfer.
    let store = app.workflows.store();
    store
        .db()
        .execute_raw(Statement::from_sql_and_values(
            store.db().get_database_backend(),
            "UPDATE connections SET next_sync_at = NULL WHERE id = $1",
            [id.clone().into()],
        ))
        .await
        .unwrap();
    let (ok, out, _) = cli(through(&app, &ops, "ops doctor")).await;
    assert!(!ok, "a violation remains: exit 1");
    assert!(out.contains("transfer_not_scheduled"), "{out}");
    assert!(out.contains(&format!("connections: {id}")), "{out}");
    assert!(
        out.contains("1 violation(s); `tributary ops doctor --repair`"),
        "{out}"
    );
    let (ok, json, _) = cli(through(&app, &ops, "ops doctor --json")).await;
    assert!(!ok);
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["violations"][0]["code"], "transfer_not_scheduled");
    assert_eq!(report["clean"], false);

    let (ok, out, err) = cli(through(&app, &ops, "ops doctor --repair")).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains(", repaired"), "{out}");
    assert!(out.contains("no violation remains"), "{out}");
    let connection = app.connection(&id).await;
    assert!(!connection["nextSyncAt"].is_null(), "{connection}");
    let events = app.events(&id).await;
    assert!(
        events
            .iter()
            .any(|e| e["actor"].to_string().contains("olga")),
        "the repair is journaled with the token's subject: {events:?}"
    );
    let (ok, out, err) = cli(through(&app, &ops, "ops doctor")).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("doctor: every invariant holds"), "{out}");
    app.stop().await;
}
