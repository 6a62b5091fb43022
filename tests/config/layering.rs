//! Layers, unknown keys and bad values.

use base64::{Engine, engine::general_purpose::STANDARD};
use tributary::config::{CliOverrides, Config, ConfigError};

use crate::{JWT_SECRET, addr, env, key_b64, load_err, write};

#[test]
fn defaults_run_out_of_the_box() {
    let c = Config::load_from(None, env(&[]), CliOverrides::default()).unwrap();
    assert_eq!(c.server.listen, addr("127.0.0.1:8080"));
    assert_eq!(
        c.server.public_url.as_ref().unwrap().as_str(),
        "http://127.0.0.1:8080/"
    );
    assert_eq!(c.server.return_url, None);
    assert_eq!(c.server.max_body_bytes, 64 * 1024);
    assert_eq!(c.database.url, "sqlite://tributary.db");
    assert_eq!(c.database.max_connections, 10);
    assert_eq!(c.database.busy_timeout_ms, 30_000);
    assert_eq!(c.auth.jwt_secret.as_ref().unwrap().expose(), JWT_SECRET);
    assert_eq!(c.auth.jwt_issuer, "tributary");
    assert_eq!(c.auth.jwt_audience, "tributary");
    // Environment variable names are not case-preserving: ids are lowercased, and a single key
    // is the active one.
    assert_eq!(c.crypto.active_key_id.as_deref(), Some("k1"));
    assert_eq!(c.crypto.decoded_keys().unwrap()["k1"].expose(), &[1u8; 32]);
    assert_eq!(c.oauth.state_ttl_secs, 600);
    assert!(c.sandbox.enabled);
    assert_eq!(c.sandbox.auto_consent_user, None);
    assert!(c.partners.is_empty());
    assert!(c.dev_secrets);
    assert_eq!(c.log.filter, "info,sqlx=warn");
    assert!(!c.log.json);
    assert_eq!(c.workers.dispatch_lease_secs, 120);
    assert_eq!(c.workers.fetch_lease_secs, 300);
    assert_eq!(c.workers.max_run_secs, 120);
    assert_eq!(c.workers.stale_refresh_secs, 300);
    assert_eq!(c.workers.concurrency, 64);
    assert_eq!(c.workers.batch_size, 100);
    assert_eq!(c.workers.poll_interval_ms, 250);
    // One source for each default: the queue's own defaults are the configuration's.
    let queue = engine::jobs::QueueSettings::default();
    assert_eq!(queue.concurrency, c.workers.concurrency);
    assert_eq!(queue.batch_size, c.workers.batch_size);
    assert_eq!(
        queue.poll_interval,
        std::time::Duration::from_millis(c.workers.poll_interval_ms)
    );
    assert_eq!(c.database.connect_timeout_secs, 10);
    assert_eq!(c.dev_secrets_in_use, None);

    // Ready-made keys for the server.
    let keyring = c.crypto.keyring().unwrap();
    assert_eq!(keyring.active_key_id(), "k1");
    let jwt = c.auth.jwt_keys().unwrap();
    let token = jwt.mint(
        api::auth::Role::Ops,
        "alice",
        std::time::Duration::from_secs(60),
    );
    assert_eq!(jwt.verify(&token).unwrap().sub, "alice");
}

#[test]
fn toml_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "t.toml",
        r#"
        dev_secrets = false
        [server]
        listen = "0.0.0.0:7000"
        return_url = "https://app.tidepool.org/connected"
        [database]
        url = "postgres://u:p@db/tributary"
        max_connections = 4
        [oauth]
        state_ttl_secs = 120
        [sandbox]
        auto_consent_user = "alice"
        [log]
        json = true
        [workers]
        fetch_lease_secs = 3
        "#,
    );
    let c = Config::load_from(Some(&file), env(&[]), CliOverrides::default()).unwrap();
    assert_eq!(c.server.listen, addr("0.0.0.0:7000"));
    assert_eq!(
        c.server.public_url.unwrap().as_str(),
        "http://localhost:7000/"
    );
    assert_eq!(
        c.server.return_url.unwrap().as_str(),
        "https://app.tidepool.org/connected"
    );
    assert_eq!(c.database.url, "postgres://u:p@db/tributary");
    assert_eq!(c.database.max_connections, 4);
    assert_eq!(
        c.database.busy_timeout_ms, 30_000,
        "untouched keys keep defaults"
    );
    assert_eq!(c.oauth.state_ttl_secs, 120);
    assert_eq!(c.sandbox.auto_consent_user.as_deref(), Some("alice"));
    assert!(c.log.json);
    assert_eq!(c.workers.fetch_lease_secs, 3);
    assert_eq!(c.workers.max_run_secs, 120, "untouched keys keep defaults");
    assert!(!c.dev_secrets);
}

#[test]
fn env_overrides_toml() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "t.toml",
        r#"
        [server]
        listen = "10.0.0.1:1000"
        public_url = "https://tributary.example.org/"
        [database]
        max_connections = 4
        [log]
        json = false
        "#,
    );
    let env = env(&[
        ("TRIBUTARY_SERVER__LISTEN", "0.0.0.0:9000"),
        ("TRIBUTARY_DATABASE__MAX_CONNECTIONS", "3"),
        ("TRIBUTARY_DATABASE__URL", "postgres://u:p@db/t"),
        ("TRIBUTARY_LOG__JSON", "true"),
        ("TRIBUTARY_LOG__FILTER", "debug"),
        // Read by the CLI for --config; not a configuration key.
        ("TRIBUTARY_CONFIG", "/nonexistent.toml"),
        ("UNRELATED", "ignored"),
    ]);
    let c = Config::load_from(Some(&file), env, CliOverrides::default()).unwrap();
    assert_eq!(c.server.listen, addr("0.0.0.0:9000"));
    assert_eq!(
        c.server.public_url.unwrap().as_str(),
        "https://tributary.example.org/",
        "TOML value kept where env says nothing"
    );
    assert_eq!(c.database.max_connections, 3);
    assert_eq!(c.database.url, "postgres://u:p@db/t");
    assert!(c.log.json);
    assert_eq!(c.log.filter, "debug");
}

#[test]
fn cli_overrides_env() {
    let env = env(&[
        ("TRIBUTARY_SERVER__LISTEN", "0.0.0.0:9000"),
        ("TRIBUTARY_DATABASE__URL", "postgres://env/db"),
        ("TRIBUTARY_SANDBOX__ENABLED", "true"),
    ]);
    let cli = CliOverrides {
        listen: Some(addr("127.0.0.1:9100")),
        database_url: Some("postgres://cli/db".into()),
        no_sandbox: true,
    };
    let c = Config::load_from(None, env, cli).unwrap();
    assert_eq!(c.server.listen, addr("127.0.0.1:9100"));
    assert_eq!(c.database.url, "postgres://cli/db");
    assert!(!c.sandbox.enabled);
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "t.toml", "[server]\nlisen = \"0.0.0.0:1\"\n");
    let (key, msg) = load_err(Some(&file), env(&[]), CliOverrides::default());
    assert_eq!(key, "server.lisen", "{msg}");
    assert!(
        msg.starts_with("invalid configuration: server.lisen: unknown key"),
        "{msg}"
    );
    assert!(msg.contains("t.toml"), "names the file: {msg}");

    let (key, msg) = load_err(
        None,
        env(&[("TRIBUTARY_SERVER__LISEN", "0.0.0.0:1")]),
        CliOverrides::default(),
    );
    assert_eq!(key, "server.lisen", "{msg}");
    assert!(
        msg.contains("TRIBUTARY_SERVER__LISEN"),
        "names the variable: {msg}"
    );

    let (key, msg) = load_err(
        None,
        env(&[("TRIBUTARY_DEV_SECRETS__X", "false")]),
        CliOverrides::default(),
    );
    assert_eq!(key, "dev_secrets", "{msg}");

    let file = write(dir.path(), "u.toml", "[servre]\nlisten = \"0.0.0.0:1\"\n");
    let (key, _) = load_err(Some(&file), env(&[]), CliOverrides::default());
    assert_eq!(key, "servre");
}

#[test]
fn bad_values_are_errors_that_name_the_key() {
    let (key, msg) = load_err(
        None,
        env(&[("TRIBUTARY_SERVER__LISTEN", "not-an-address")]),
        CliOverrides::default(),
    );
    assert_eq!(key, "server.listen");
    assert!(
        msg.starts_with("invalid configuration: server.listen: invalid socket address syntax"),
        "{msg}"
    );
    assert!(msg.contains("TRIBUTARY_SERVER__LISTEN"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "t.toml",
        "[database]\nmax_connections = \"many\"\n",
    );
    let (key, msg) = load_err(Some(&file), env(&[]), CliOverrides::default());
    assert_eq!(key, "database.max_connections", "{msg}");

    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("TRIBUTARY_AUTH__JWT_SECRET", "short")],
            "auth.jwt_secret",
        ),
        (
            &[("TRIBUTARY_CRYPTO__KEYS__K1", "c2hvcnQ=")],
            "crypto.keys.k1",
        ),
        (&[("TRIBUTARY_CRYPTO__KEYS__K1", "%%%")], "crypto.keys.k1"),
        (
            &[("TRIBUTARY_CRYPTO__ACTIVE_KEY_ID", "k2")],
            "crypto.active_key_id",
        ),
        (
            &[("TRIBUTARY_DATABASE__URL", "mysql://x/y")],
            "database.url",
        ),
        (
            &[("TRIBUTARY_DATABASE__MAX_CONNECTIONS", "0")],
            "database.max_connections",
        ),
        (
            &[("TRIBUTARY_SERVER__PUBLIC_URL", "ftp://x/")],
            "server.public_url",
        ),
        (&[("TRIBUTARY_LOG__JSON", "perhaps")], "log.json"),
        (
            &[("TRIBUTARY_LOG__FILTER", "info,foo=verbose")],
            "log.filter",
        ),
        (
            &[("TRIBUTARY_WORKERS__DISPATCH_LEASE_SECS", "0")],
            "workers.dispatch_lease_secs",
        ),
        (
            &[("TRIBUTARY_WORKERS__FETCH_LEASE_SECS", "0")],
            "workers.fetch_lease_secs",
        ),
        (
            &[("TRIBUTARY_WORKERS__MAX_RUN_SECS", "315360001")],
            "workers.max_run_secs",
        ),
        (
            &[("TRIBUTARY_WORKERS__FETCH_LEASE_SECS", "soon")],
            "workers.fetch_lease_secs",
        ),
        (
            &[("TRIBUTARY_SANDBOX__MAX_WINDOW_DAYS", "0")],
            "sandbox.max_window_days",
        ),
        (
            &[("TRIBUTARY_SANDBOX__REQUEST_TIMEOUT_SECS", "0")],
            "sandbox.request_timeout_secs",
        ),
    ];
    for (vars, expected) in cases {
        let (key, msg) = load_err(None, env(vars), CliOverrides::default());
        assert_eq!(&key, expected, "{vars:?}: {msg}");
        assert!(msg.contains(expected), "{msg}");
    }

    // Two keys and no active one is ambiguous.
    let (key, _) = load_err(
        None,
        env(&[("TRIBUTARY_CRYPTO__KEYS__K2", &key_b64(2))]),
        CliOverrides::default(),
    );
    assert_eq!(key, "crypto.active_key_id");
}

#[test]
fn error_messages_do_not_contain_secrets() {
    let secret = "tiny-secret";
    let (_, msg) = load_err(
        None,
        env(&[("TRIBUTARY_AUTH__JWT_SECRET", secret)]),
        CliOverrides::default(),
    );
    assert!(!msg.contains(secret), "{msg}");
    let key = STANDARD.encode([7u8; 16]);
    let (_, msg) = load_err(
        None,
        env(&[("TRIBUTARY_CRYPTO__KEYS__K1", &key)]),
        CliOverrides::default(),
    );
    assert!(!msg.contains(&key), "{msg}");
}

#[test]
fn missing_config_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Config::load_from(
        Some(&dir.path().join("absent.toml")),
        env(&[]),
        CliOverrides::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::File { .. }), "{err}");
    assert!(err.to_string().contains("absent.toml"));
}
