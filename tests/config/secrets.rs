//! Development secrets: generated once, reused, never when configured or turned off.

use std::path::Path;

use tributary::config::{CliOverrides, Config, ConfigError, EnvVars};

use crate::{JWT_SECRET, env, load_err, write};

pub fn sqlite_url(dir: &Path) -> String {
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
