//! Configuration layering, validation messages and development secrets.
//!
//! Every test passes an explicit environment ([`EnvVars::from_pairs`]) and keeps files in its own
//! temporary directory, so tests can run in parallel without touching process state.

use std::{net::SocketAddr, path::Path};

use base64::{Engine, engine::general_purpose::STANDARD};
use tributary::config::{CliOverrides, Config, ConfigError, EnvVars};
use workflows::partner::{ClientAuth, PartnerKind};

const JWT_SECRET: &str = "a-configured-jwt-secret-of-32-bytes!";

fn key_b64(byte: u8) -> String {
    STANDARD.encode([byte; 32])
}

/// Configured secrets, so that no development secrets file is written.
fn secrets() -> Vec<(String, String)> {
    vec![
        ("TRIBUTARY_AUTH__JWT_SECRET".into(), JWT_SECRET.into()),
        ("TRIBUTARY_CRYPTO__KEYS__K1".into(), key_b64(1)),
    ]
}

fn env(extra: &[(&str, &str)]) -> EnvVars {
    let mut pairs = secrets();
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    EnvVars::from_pairs(pairs)
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn load_err(file: Option<&Path>, env: EnvVars, cli: CliOverrides) -> (String, String) {
    let err = Config::load_from(file, env, cli).unwrap_err();
    let key = err.key().unwrap_or_default().to_owned();
    (key, err.to_string())
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

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
    assert_eq!(c.database.busy_timeout_ms, 5000);
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
        c.database.busy_timeout_ms, 5000,
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
        env(&[("TRIBUTARY_DEV_SECRET", "false")]),
        CliOverrides::default(),
    );
    assert_eq!(key, "dev_secret", "{msg}");

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
            &[("TRIBUTARY_WORKERS__MAX_RUN_SECS", "0")],
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

const PARTNERS: &str = r#"
[partners.dexcom]
display_name = "Dexcom"
kind = "dexcom"
client_id = "tributary"
client_secret = "s3cret"
authorize_url = "https://api.dexcom.com/v2/oauth2/login"
token_url = "https://api.dexcom.com/v2/oauth2/token"
redirect_url = "https://tributary.example.org/v1/oauth/dexcom/callback"
scopes = ["offline_access"]
api_base_url = "https://api.dexcom.com/"

[partners.acme-pump]
display_name = "ACME Pump"
kind = "pump"
client_id = "abc"
client_secret = "def"
client_auth = "client_secret_post"
authorize_url = "http://localhost:9000/pump/authorize"
token_url = "http://localhost:9000/pump/token"
revoke_url = "http://localhost:9000/pump/revoke"
redirect_url = "http://localhost:8080/v1/oauth/acme-pump/callback"
issuer = "http://localhost:9000/pump"
api_base_url = "http://localhost:9000/pump/api/"
request_timeout_secs = 5
"#;

#[test]
fn partner_tables_parse() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "p.toml", PARTNERS);
    let env = env(&[
        // A numeric client id from the environment stays a string, and arrays parse.
        ("TRIBUTARY_PARTNERS__DEXCOM__CLIENT_ID", "12345"),
        (
            "TRIBUTARY_PARTNERS__DEXCOM__SCOPES",
            "[offline_access, egv]",
        ),
    ]);
    let c = Config::load_from(Some(&file), env, CliOverrides::default()).unwrap();
    assert_eq!(
        c.partners.keys().collect::<Vec<_>>(),
        ["acme-pump", "dexcom"]
    );
    let dexcom = &c.partners["dexcom"];
    assert_eq!(dexcom.kind, PartnerKind::Dexcom);
    assert_eq!(dexcom.client_id, "12345");
    assert_eq!(dexcom.client_secret.expose(), "s3cret");
    assert_eq!(dexcom.client_auth, ClientAuth::ClientSecretBasic);
    assert_eq!(dexcom.scopes, ["offline_access", "egv"]);
    assert_eq!(dexcom.request_timeout_secs, 30);
    let pump = &c.partners["acme-pump"];
    assert_eq!(pump.kind, PartnerKind::Pump);
    assert_eq!(pump.client_auth, ClientAuth::ClientSecretPost);
    assert_eq!(pump.issuer.as_deref(), Some("http://localhost:9000/pump"));
    assert_eq!(pump.request_timeout_secs, 5);
}

#[test]
fn partner_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            PARTNERS.replace("[partners.acme-pump]", "[partners.Acme_Pump]"),
            "partners.Acme_Pump",
        ),
        (
            PARTNERS.replace("kind = \"pump\"", "kind = \"insulin\""),
            "partners.acme-pump.kind",
        ),
        (
            PARTNERS.replace("request_timeout_secs = 5", "request_timeout = 5"),
            "partners.acme-pump.request_timeout",
        ),
        (
            PARTNERS.replace("client_id = \"abc\"\n", ""),
            "partners.acme-pump.client_id",
        ),
        (
            PARTNERS.replace("/v1/oauth/dexcom/callback", "/callback"),
            "partners.dexcom.redirect_url",
        ),
    ];
    for (i, (text, expected)) in cases.into_iter().enumerate() {
        let file = write(dir.path(), &format!("p{i}.toml"), &text);
        let (key, msg) = load_err(Some(&file), env(&[]), CliOverrides::default());
        assert_eq!(key, expected, "{msg}");
        assert!(
            msg.starts_with(&format!("invalid configuration: {expected}: ")),
            "{msg}"
        );
    }
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/app.db", dir.display())
}

#[test]
fn dev_secrets_are_generated_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let env = || EnvVars::from_pairs([("TRIBUTARY_DATABASE__URL", sqlite_url(dir.path()))]);
    let path = dir.path().join("app.secrets.toml");

    let first = Config::load_from(None, env(), CliOverrides::default()).unwrap();
    let in_use = first.dev_secrets_in_use.clone().unwrap();
    assert!(in_use.generated);
    assert!(in_use.jwt_secret);
    assert_eq!(in_use.path, path);
    let key_id = in_use.key_id.clone().unwrap();
    assert!(key_id.starts_with("dev-") && key_id.len() == "dev-yyyymmdd".len());
    assert_eq!(first.crypto.active_key_id.as_deref(), Some(key_id.as_str()));
    assert!(first.jwt_secret_bytes().unwrap().len() >= 32);
    assert_eq!(first.crypto.decoded_keys().unwrap().len(), 1);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }

    let second = Config::load_from(None, env(), CliOverrides::default()).unwrap();
    let in_use = second.dev_secrets_in_use.clone().unwrap();
    assert!(!in_use.generated);
    assert_eq!(second.jwt_secret_bytes(), first.jwt_secret_bytes());
    assert_eq!(second.crypto.active_key_id, first.crypto.active_key_id);
    assert_eq!(
        second.crypto.decoded_keys().unwrap()[&key_id].expose(),
        first.crypto.decoded_keys().unwrap()[&key_id].expose()
    );

    // The file is a valid partial configuration.
    let as_config = Config::load_from(
        Some(&path),
        EnvVars::from_pairs([("TRIBUTARY_DEV_SECRETS", "false")]),
        CliOverrides::default(),
    )
    .unwrap();
    assert_eq!(as_config.jwt_secret_bytes(), first.jwt_secret_bytes());
}

#[test]
fn configured_secrets_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let generated = Config::load_from(
        None,
        EnvVars::from_pairs([("TRIBUTARY_DATABASE__URL", url.as_str())]),
        CliOverrides::default(),
    )
    .unwrap();

    // JWT secret configured: only the key comes from the file.
    let c = Config::load_from(
        None,
        EnvVars::from_pairs([
            ("TRIBUTARY_DATABASE__URL", url.as_str()),
            ("TRIBUTARY_AUTH__JWT_SECRET", JWT_SECRET),
        ]),
        CliOverrides::default(),
    )
    .unwrap();
    assert_eq!(c.jwt_secret_bytes(), Some(JWT_SECRET.as_bytes()));
    assert_eq!(c.crypto.active_key_id, generated.crypto.active_key_id);
    let in_use = c.dev_secrets_in_use.unwrap();
    assert!(!in_use.jwt_secret);
    assert!(in_use.key_id.is_some());

    // Both configured: the file is not consulted.
    let c = Config::load_from(
        None,
        env(&[("TRIBUTARY_DATABASE__URL", url.as_str())]),
        CliOverrides::default(),
    )
    .unwrap();
    assert_eq!(c.jwt_secret_bytes(), Some(JWT_SECRET.as_bytes()));
    assert_eq!(c.crypto.active_key_id.as_deref(), Some("k1"));
    assert_eq!(c.dev_secrets_in_use, None);
}

#[test]
fn without_dev_secrets_missing_secrets_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let (key, msg) = load_err(
        None,
        EnvVars::from_pairs([
            ("TRIBUTARY_DATABASE__URL", url.as_str()),
            ("TRIBUTARY_DEV_SECRETS", "false"),
        ]),
        CliOverrides::default(),
    );
    assert_eq!(key, "auth.jwt_secret");
    assert!(msg.contains("TRIBUTARY_AUTH__JWT_SECRET"), "{msg}");

    let (key, msg) = load_err(
        None,
        EnvVars::from_pairs([
            ("TRIBUTARY_DATABASE__URL", url.as_str()),
            ("TRIBUTARY_DEV_SECRETS", "false"),
            ("TRIBUTARY_AUTH__JWT_SECRET", JWT_SECRET),
        ]),
        CliOverrides::default(),
    );
    assert_eq!(key, "crypto.keys");
    assert!(msg.contains("TRIBUTARY_CRYPTO__ACTIVE_KEY_ID"), "{msg}");
    assert!(
        !dir.path().join("app.secrets.toml").exists(),
        "nothing is generated when dev_secrets is off"
    );
}

#[test]
fn corrupt_secrets_file_is_reported_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "app.secrets.toml",
        "[auth]\njwt_secret = \"short\"\n",
    );
    let err = Config::load_from(
        None,
        EnvVars::from_pairs([("TRIBUTARY_DATABASE__URL", sqlite_url(dir.path()))]),
        CliOverrides::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::DevSecrets { .. }), "{err}");
    assert!(err.to_string().contains("app.secrets.toml"), "{err}");
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        "[auth]\njwt_secret = \"short\"\n"
    );
}

#[test]
fn max_token_lifetime_is_validated_and_applied() {
    use std::time::Duration;

    let c = Config::load_from(None, env(&[]), CliOverrides::default()).unwrap();
    assert_eq!(c.auth.max_token_lifetime_secs, 86_400);
    assert_eq!(
        c.auth.jwt_keys().unwrap().max_lifetime(),
        Duration::from_secs(86_400)
    );
    for bad in ["0", "59", "2592001"] {
        let (key, msg) = load_err(
            None,
            env(&[("TRIBUTARY_AUTH__MAX_TOKEN_LIFETIME_SECS", bad)]),
            CliOverrides::default(),
        );
        assert_eq!(key, "auth.max_token_lifetime_secs", "{msg}");
        assert!(msg.contains("between 60 (a minute) and 2592000"), "{msg}");
    }
    let c = Config::load_from(
        None,
        env(&[("TRIBUTARY_AUTH__MAX_TOKEN_LIFETIME_SECS", "600")]),
        CliOverrides::default(),
    )
    .unwrap();
    let jwt = c.auth.jwt_keys().unwrap();
    assert_eq!(jwt.max_lifetime(), Duration::from_secs(600));
    let ok = jwt.mint(api::auth::Role::Ops, "op", Duration::from_secs(600));
    assert!(jwt.verify(&ok).is_ok());
    let long = jwt.mint(api::auth::Role::Ops, "op", Duration::from_secs(601));
    assert!(jwt.verify(&long).is_err());
}
