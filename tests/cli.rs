//! The built binary: help, minting a development token, and configuration errors.
//!
//! Each run gets its own working directory and an environment without `TRIBUTARY_…` variables,
//! so the developer's shell cannot change the outcome.

use std::{
    path::Path,
    process::{Command, Output},
};

use api::auth::{JwtKeys, Role};

fn tributary(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tributary"));
    command.args(args).current_dir(dir);
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("TRIBUTARY_")
        {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_BACKTRACE");
    command.envs(env.iter().copied());
    command.output().expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

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
fn token_prints_only_a_verifiable_jwt() {
    let dir = tempfile::tempdir().unwrap();
    let out = tributary(
        dir.path(),
        &[
            "token",
            "--role",
            "ops",
            "--subject",
            "alice",
            "--ttl",
            "1h",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("WARNING"),
        "dev secrets are announced"
    );

    let printed = stdout(&out);
    let token = printed.trim_end_matches('\n');
    assert_eq!(
        printed.lines().count(),
        1,
        "only the token on stdout: {printed:?}"
    );

    let secrets = std::fs::read_to_string(dir.path().join("tributary.secrets.toml")).unwrap();
    let secrets: toml::Table = toml::from_str(&secrets).unwrap();
    let secret = secrets["auth"]["jwt_secret"].as_str().unwrap();
    let claims = JwtKeys::new(secret.as_bytes(), "tributary", "tributary")
        .verify(token)
        .unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.role, Role::Ops);
    assert_eq!(claims.exp - claims.iat.unwrap(), 3600);

    // The second run reuses the same secret.
    let again = tributary(
        dir.path(),
        &["token", "--role", "user", "--subject", "bob"],
        &[],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    let claims = JwtKeys::new(secret.as_bytes(), "tributary", "tributary")
        .verify(stdout(&again).trim())
        .unwrap();
    assert_eq!(claims.role, Role::User);
}

#[test]
fn token_uses_the_configured_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "configured-secret-configured-secret!";
    let key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let out = tributary(
        dir.path(),
        &["token", "--role", "service", "--subject", "svc"],
        &[
            ("TRIBUTARY_AUTH__JWT_SECRET", secret),
            ("TRIBUTARY_AUTH__JWT_ISSUER", "tidepool"),
            ("TRIBUTARY_CRYPTO__KEYS__PROD", key),
            ("TRIBUTARY_DEV_SECRETS", "false"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "no warning: {}", stderr(&out));
    let claims = JwtKeys::new(secret.as_bytes(), "tidepool", "tributary")
        .verify(stdout(&out).trim())
        .unwrap();
    assert_eq!(claims.role, Role::Service);
    assert!(!dir.path().join("tributary.secrets.toml").exists());
}

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

#[test]
fn token_lifetimes_stay_within_what_the_service_accepts() {
    let dir = tempfile::tempdir().unwrap();
    // The default `--ttl` (24 h) is accepted by a service with the default maximum.
    let out = tributary(
        dir.path(),
        &["token", "--role", "user", "--subject", "alice"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let secrets = std::fs::read_to_string(dir.path().join("tributary.secrets.toml")).unwrap();
    let secrets: toml::Table = toml::from_str(&secrets).unwrap();
    let secret = secrets["auth"]["jwt_secret"].as_str().unwrap();
    let claims = JwtKeys::new(secret.as_bytes(), "tributary", "tributary")
        .verify(stdout(&out).trim())
        .unwrap();
    assert_eq!(claims.exp - claims.iat.unwrap(), 24 * 3600);

    // A longer one is refused up front, naming the key that bounds it.
    for (ttl, env) in [
        ("2d", &[][..]),
        (
            "11m",
            &[("TRIBUTARY_AUTH__MAX_TOKEN_LIFETIME_SECS", "600")][..],
        ),
    ] {
        let out = tributary(
            dir.path(),
            &["token", "--role", "ops", "--subject", "a", "--ttl", ttl],
            env,
        );
        assert_eq!(out.status.code(), Some(2), "{ttl}: {}", stderr(&out));
        assert!(stdout(&out).is_empty());
        assert!(
            stderr(&out).contains("auth.max_token_lifetime_secs"),
            "{}",
            stderr(&out)
        );
    }
}
