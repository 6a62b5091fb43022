//! `tributary ops bulk` against the database: the dry run prints the count, the sample and the
//! command that confirms it; that command acts on exactly the connections shown (not on one
//! that started matching since), answers the same when run again, and exits 1 when some
//! connection was refused; usage errors exit 2 and write nothing.

use engine::{model::Actor, store::Reason, testing::TestDb};

use crate::{stderr, stdout, tributary};

const ACCESS: &str = "cli-bulk-access-token";

#[tokio::test]
async fn a_dry_run_prints_the_command_that_acts_on_exactly_what_it_showed() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let shown = [
        crate::active_connection(&store, "alice", ACCESS).await,
        crate::active_connection(&store, "bob", ACCESS).await,
    ];
    let cwd = tempfile::tempdir().unwrap();
    let ops = |args: &[&str]| {
        let mut all = vec!["ops", "bulk"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--database-url", db.url.as_str(), "--operator", "dana"]);
        let out = tributary(cwd.path(), &all, &[]);
        let (text, err) = (stdout(&out), stderr(&out));
        assert!(!text.contains(ACCESS) && !err.contains(ACCESS), "no token");
        assert!(!err.contains("panicked"), "{err}");
        (out.status.code(), text, err)
    };

    let (code, text, err) = ops(&[
        "pause",
        "--partner",
        "sandbox-cgm",
        "--state",
        "active",
        "--reason",
        "partner maintenance",
        "--dry-run",
    ]);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(text.contains("2 connection(s) match"), "{text}");
    for id in &shown {
        assert!(text.contains(&id.to_string()), "{text}");
    }
    let command = text
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("tributary ops bulk pause --confirm ")
        })
        .unwrap_or_else(|| panic!("no confirm command in {text}"))
        .trim();
    let token = command.split_whitespace().nth(5).unwrap().to_owned();
    assert_eq!(token.len(), 43, "{command}");
    assert!(
        command.contains("--reason 'partner maintenance'")
            && command.contains("--operator dana")
            && command.contains(&format!("--database-url '{}'", db.url)),
        "{command}"
    );
    for id in &shown {
        assert!(
            !store.get(*id).await.unwrap().paused,
            "a dry run acts on nothing"
        );
    }

    // After the dry run, one more connection matches the filter.
    let late = crate::active_connection(&store, "carl", ACCESS).await;
    let confirm = [
        "pause",
        "--confirm",
        token.as_str(),
        "--reason",
        "partner maintenance",
    ];
    let (code, text, err) = ops(&confirm);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(
        text.contains("2 acted on, 0 already so, 0 refused, 0 gone"),
        "{text}"
    );
    for id in &shown {
        assert!(store.get(*id).await.unwrap().paused);
        let last = store.journal(*id).await.unwrap().pop().unwrap();
        assert_eq!(
            (last.event.as_str(), last.actor.as_str()),
            ("ops_pause", "ops:dana")
        );
    }
    assert!(
        !store.get(late).await.unwrap().paused,
        "not shown: untouched"
    );
    let journal = store.journal(shown[0]).await.unwrap().len();
    let (code, again, _) = ops(&confirm);
    assert_eq!((code, again), (Some(0), text));
    assert_eq!(store.journal(shown[0]).await.unwrap().len(), journal);

    // Another action with this token, and usage errors.
    let (code, _, err) = ops(&["resume", "--confirm", &token, "--reason", "x"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a bulk resume"), "{err}");
    let (code, _, err) = ops(&[
        "pause",
        "--confirm",
        &token,
        "--user",
        "bob",
        "--reason",
        "x",
    ]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = ops(&["pause", "--reason", "neither dry run nor confirm"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = ops(&["explode", "--dry-run", "--reason", "x"]);
    assert_eq!(code, Some(2), "{err}");

    // JSON, and a refusal: exit 1.
    store
        .fail_by_operator(
            late,
            &Actor::new("ops", "dana"),
            &Reason::parse("closed").unwrap(),
        )
        .await
        .unwrap();
    let (code, text, err) = ops(&[
        "pause",
        "--user",
        "carl",
        "--reason",
        "x",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let plan: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(plan["count"], 1);
    assert_eq!(plan["sample"][0]["state"], "failed");
    let token = plan["confirmationToken"].as_str().unwrap();
    let (code, text, err) = ops(&["pause", "--confirm", token, "--reason", "x", "--json"]);
    assert_eq!(code, Some(1), "{err}");
    let result: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(result["refused"], 1);
    assert_eq!(result["refusals"][0]["code"], "invalid_transition");
    db.cleanup().await;
}
