//! Configuration errors exit 2 naming the key, other tools' `TRIBUTARY_…` variables are not
//! configuration, and an unreachable database fails at once with its cause.

use crate::{contains_jwt, production_env, stderr, stdout, tributary};

#[test]
fn bad_configuration_exits_2_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = tributary(
        dir.path(),
        &["token", "--role", "ops", "--subject", "alice"],
        &[("TRIBUTARY_SERVER__LISTEN", "nowhere")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("invalid configuration: server.listen"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(stdout(&out).is_empty());

    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[database]\nurll = \"sqlite://x.db\"\n").unwrap();
    let out = tributary(
        dir.path(),
        &["serve", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("database.urll"), "{err}");
    assert!(err.contains("bad.toml"), "{err}");

    // The file can also come from TRIBUTARY_CONFIG.
    let out = tributary(
        dir.path(),
        &["migrate"],
        &[("TRIBUTARY_CONFIG", file.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("database.urll"));

    let out = tributary(dir.path(), &["migrate", "--config", "absent.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("absent.toml"));
}

#[test]
fn the_sandbox_is_refused_under_a_production_like_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = production_env();
    env.push(("TRIBUTARY_SANDBOX__ENABLED", "true"));
    // Every command loads the configuration as `serve` does; `migrate` would exit either way.
    let out = tributary(dir.path(), &["migrate"], &env);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("invalid configuration: sandbox.enabled"),
        "{err}"
    );
    assert!(err.contains("dev_secrets"), "names both keys: {err}");
    assert!(
        !dir.path().join("tributary.db").exists(),
        "nothing was opened"
    );
}

#[test]
fn out_of_range_numbers_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, key) in [
        (
            "TRIBUTARY_WORKERS__MAX_RUN_SECS",
            "99999999999999",
            "workers.max_run_secs",
        ),
        (
            "TRIBUTARY_WORKERS__CONCURRENCY",
            "500",
            "workers.concurrency",
        ),
    ] {
        // `token` loads the configuration as `serve` does, and exits either way.
        let out = tributary(
            dir.path(),
            &["token", "--role", "ops", "--subject", "me"],
            &[(var, value)],
        );
        assert_eq!(out.status.code(), Some(2), "{var}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("invalid configuration: {key}")),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn other_tools_variables_are_not_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = tributary(
        dir.path(),
        &["token", "--role", "ops", "--subject", "alice"],
        &[
            (
                "TRIBUTARY_TEST_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            ),
            ("TRIBUTARY_SOMETHING_ELSE", "x"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(contains_jwt(&stdout(&out)));
}

#[test]
fn unreachable_postgres_fails_at_once_with_its_cause() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("postgres://tributary:hunter2-password@127.0.0.1:{port}/nowhere");
    let dir = tempfile::tempdir().unwrap();
    let out = tributary(
        dir.path(),
        &["migrate", "--database-url", &url],
        &[("TRIBUTARY_DATABASE__CONNECT_TIMEOUT_SECS", "5")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let shown = format!("postgres://tributary:***@127.0.0.1:{port}/nowhere");
    assert!(
        err.contains(&format!("opening the database {shown}")),
        "says what it tries: {err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert_eq!(
        err.matches("Connection refused").count(),
        1,
        "the cause, once: {err}"
    );
}
