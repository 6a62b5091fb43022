//! The built binary: help, minting a development token, and configuration errors.
//!
//! Each run gets its own working directory and an environment without `TRIBUTARY_…` variables,
//! so the developer's shell cannot change the outcome.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use api::auth::{JwtKeys, Role};

fn tributary(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(dir, args, env).output().expect("the binary runs")
}

fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
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
    command
}

/// Starts a long-running command, collects its stderr until a line contains `until` (or the
/// process ends), then kills it. Returns what it printed on stderr.
fn run_until(dir: &Path, args: &[&str], env: &[(&str, &str)], until: &str) -> String {
    let mut child = command(dir, args, env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let (lines, received) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    // Only a guard against a hung child: the line normally comes within seconds.
    while let Ok(line) = received.recv_timeout(Duration::from_secs(120)) {
        printed.push_str(&line);
        printed.push('\n');
        if line.contains(until) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    printed
}

/// A JWT's header (`{"alg":…` / `{"typ":…` in base64url) anywhere in `text`.
fn contains_jwt(text: &str) -> bool {
    text.contains("eyJ")
}

const JWT_SECRET: &str = "configured-secret-configured-secret!";
const KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

/// A production-like environment: explicit secrets, no development secrets.
fn production_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("TRIBUTARY_AUTH__JWT_SECRET", JWT_SECRET),
        ("TRIBUTARY_CRYPTO__KEYS__PROD", KEY),
        ("TRIBUTARY_DEV_SECRETS", "false"),
    ]
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
    let secret = JWT_SECRET;
    let out = tributary(
        dir.path(),
        &["token", "--role", "service", "--subject", "svc"],
        &[
            ("TRIBUTARY_AUTH__JWT_SECRET", secret),
            ("TRIBUTARY_AUTH__JWT_ISSUER", "tidepool"),
            ("TRIBUTARY_CRYPTO__KEYS__PROD", KEY),
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
fn serve_prints_a_token_only_with_development_secrets() {
    let listening = "Tributary is listening on";
    for extra in [&[][..], &["--no-sandbox"]] {
        let dir = tempfile::tempdir().unwrap();
        let args = [&["serve", "--listen", "127.0.0.1:0"][..], extra].concat();
        let printed = run_until(dir.path(), &args, &production_env(), "Bearer");
        assert!(printed.contains(listening), "{args:?}: {printed}");
        assert!(
            !contains_jwt(&printed),
            "{args:?}: a token was printed: {printed}"
        );
        assert!(!printed.contains("/sandbox/"), "{args:?}: {printed}");
        assert!(!printed.contains("sandbox-cgm"), "{args:?}: {printed}");
    }

    // Development mode: the banner's token is there (and it is what the first check looks for).
    let dir = tempfile::tempdir().unwrap();
    let printed = run_until(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[],
        "export TOKEN=",
    );
    assert!(contains_jwt(&printed), "{printed}");
    assert!(
        printed.contains("partners sandbox-cgm, sandbox-pump"),
        "{printed}"
    );
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
fn token_elsewhere_says_it_created_new_secrets() {
    let server_dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    // The "server" created its secrets beside its database.
    let first = tributary(
        server_dir.path(),
        &["token", "--role", "ops", "--subject", "me"],
        &[],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let secrets = server_dir.path().join("tributary.secrets.toml");
    assert!(secrets.exists());

    // In another directory, without the server's database URL: new secrets, and it says so.
    let out = tributary(
        elsewhere.path(),
        &["token", "--role", "ops", "--subject", "me"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let created = std::fs::canonicalize(elsewhere.path())
        .unwrap()
        .join("tributary.secrets.toml");
    assert!(err.contains(&created.display().to_string()), "where: {err}");
    assert!(err.contains("new ones were created"), "{err}");
    assert!(err.contains("will reject this token"), "{err}");
    assert_eq!(stdout(&out).lines().count(), 1, "only the token on stdout");

    // Given the server's database URL, it finds the server's secrets and says nothing more.
    let url = format!("sqlite://{}/tributary.db", server_dir.path().display());
    let out = tributary(
        elsewhere.path(),
        &[
            "token",
            "--role",
            "ops",
            "--subject",
            "me",
            "--database-url",
            &url,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("new ones were created"),
        "{}",
        stderr(&out)
    );
    let table: toml::Table = toml::from_str(&std::fs::read_to_string(&secrets).unwrap()).unwrap();
    let secret = table["auth"]["jwt_secret"].as_str().unwrap();
    JwtKeys::new(secret.as_bytes(), "tributary", "tributary")
        .verify(stdout(&out).trim())
        .expect("signed with the server's secret");
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

#[tokio::test]
async fn standalone_sandbox_serves_the_configured_tributary() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9555\"\n").unwrap();
    let mut child = command(
        dir.path(),
        &[
            "--config",
            file.to_str().unwrap(),
            "sandbox",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Reads stderr to the end (a closed pipe would kill the sandbox at its next log line).
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(rest.split_whitespace().next().unwrap().to_owned());
            }
        }
    });
    // Only a guard against a hung child: the line normally comes within a second.
    let url = tokio::time::timeout(Duration::from_secs(120), rx)
        .await
        .expect("the sandbox starts")
        .unwrap();
    let index = async { reqwest::get(&url).await?.json::<serde_json::Value>().await }.await;
    let _ = child.kill();
    let _ = child.wait();
    let index = index.unwrap();
    let uris = index["clients"][0]["redirect_uris"].to_string();
    assert!(
        uris.contains("http://127.0.0.1:9555/v1/oauth/sandbox-cgm/callback"),
        "{index}"
    );
    assert!(!uris.contains(":8080"), "{index}");
    assert!(
        !dir.path().join("tributary.secrets.toml").exists(),
        "the sandbox needs no secrets"
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
