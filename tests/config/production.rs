//! Production-like configuration (`dev_secrets = false`) never mounts the sandbox, and the
//! repair timer of a stuck refresh is a setting like the other repair bounds.

use std::time::Duration;

use tributary::{
    config::{CliOverrides, Config},
    serve::Application,
};

use crate::{env, load_err, write};

#[test]
fn without_dev_secrets_the_sandbox_is_off_unless_asked_for() {
    let c = Config::load_from(
        None,
        env(&[("TRIBUTARY_DEV_SECRETS", "false")]),
        CliOverrides::default(),
    )
    .unwrap();
    assert!(!c.sandbox.enabled);

    let c = Config::load_from(None, env(&[]), CliOverrides::default()).unwrap();
    assert!(c.sandbox.enabled, "development mode keeps it on");
}

#[test]
fn asking_for_the_sandbox_without_dev_secrets_names_both_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "prod.toml",
        "dev_secrets = false\n[sandbox]\nenabled = true\n",
    );
    let from_file = load_err(Some(&file), env(&[]), CliOverrides::default());
    let from_env = load_err(
        None,
        env(&[
            ("TRIBUTARY_DEV_SECRETS", "false"),
            ("TRIBUTARY_SANDBOX__ENABLED", "true"),
        ]),
        CliOverrides::default(),
    );
    for (key, msg) in [from_file, from_env] {
        assert_eq!(key, "sandbox.enabled", "{msg}");
        assert!(msg.contains("dev_secrets"), "{msg}");
    }

    // --no-sandbox is always fine.
    let c = Config::load_from(
        Some(&file),
        env(&[]),
        CliOverrides {
            no_sandbox: true,
            ..CliOverrides::default()
        },
    )
    .unwrap();
    assert!(!c.sandbox.enabled);
}

fn sqlite_config(dir: &std::path::Path, extra: &[(&str, &str)]) -> Config {
    let url = format!("sqlite://{}/t.db", dir.display());
    let mut vars = vec![
        ("TRIBUTARY_DATABASE__URL", url.as_str()),
        ("TRIBUTARY_SERVER__LISTEN", "127.0.0.1:0"),
    ];
    vars.extend_from_slice(extra);
    Config::load_from(None, env(&vars), CliOverrides::default()).unwrap()
}

#[tokio::test]
async fn a_config_built_in_code_cannot_mount_the_sandbox_either() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    config.dev_secrets = false;
    config.sandbox.enabled = true;
    let err = Application::build(config).await.err().expect("refused");
    assert!(err.to_string().contains("sandbox.enabled"), "{err:#}");
}

#[tokio::test]
async fn worker_timers_reach_the_workflows() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(
        dir.path(),
        &[
            ("TRIBUTARY_WORKERS__STALE_REFRESH_SECS", "42"),
            ("TRIBUTARY_WORKERS__DISPATCH_LEASE_SECS", "43"),
            ("TRIBUTARY_WORKERS__FETCH_LEASE_SECS", "44"),
            ("TRIBUTARY_WORKERS__MAX_RUN_SECS", "45"),
            ("TRIBUTARY_OAUTH__STATE_TTL_SECS", "46"),
        ],
    );
    let app = Application::build(config).await.unwrap();
    let settings = app.workflows().settings();
    assert_eq!(settings.stale_refresh_after, Duration::from_secs(42));
    assert_eq!(settings.transfer.dispatch_lease, Duration::from_secs(43));
    assert_eq!(settings.transfer.fetch_lease, Duration::from_secs(44));
    assert_eq!(settings.transfer.max_run, Duration::from_secs(45));
    assert_eq!(settings.state_ttl, Duration::from_secs(46));
    app.workflows().store().clone().close().await;
}
