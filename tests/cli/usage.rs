//! Help lists every command and option; usage errors exit 2 before configuration is loaded.

use crate::{stderr, stdout, tributary};

#[test]
fn help_lists_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = tributary(dir.path(), &["--help"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = stdout(&out);
    for needle in [
        "serve",
        "migrate",
        "sandbox",
        "token",
        "--config",
        "TRIBUTARY_",
    ] {
        assert!(help.contains(needle), "`{needle}` missing from:\n{help}");
    }

    let out = tributary(dir.path(), &["token", "--help"], &[]);
    assert!(out.status.success());
    let help = stdout(&out);
    for needle in ["--role", "--subject", "--ttl", "clinician", "24h"] {
        assert!(help.contains(needle), "`{needle}` missing from:\n{help}");
    }

    let out = tributary(dir.path(), &["serve", "--help"], &[]);
    assert!(out.status.success());
    let help = stdout(&out);
    for needle in ["--listen", "--database-url", "--no-sandbox"] {
        assert!(help.contains(needle), "`{needle}` missing from:\n{help}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["token", "--role", "admin", "--subject", "alice"][..],
        &["token", "--role", "ops", "--subject", ""],
        &[
            "token",
            "--role",
            "ops",
            "--subject",
            "a",
            "--ttl",
            "forever",
        ],
        &["frobnicate"],
    ] {
        let out = tributary(dir.path(), args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
    assert!(
        !dir.path().join("tributary.secrets.toml").exists(),
        "usage errors are caught before configuration is loaded"
    );
}
