//! The environment namespace: only `TRIBUTARY_<top-level key>…` is configuration, and partner
//! names have a spelling a shell accepts.

use tributary::config::{CliOverrides, Config};

use crate::{env, load_err, partners::PARTNERS, write};

#[test]
fn other_tributary_variables_are_ignored() {
    let c = Config::load_from(
        None,
        env(&[
            // The README's own test instructions export this one.
            (
                "TRIBUTARY_TEST_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            ),
            // Another tool's variables, nested or not; the CLI's own TRIBUTARY_CONFIG.
            ("TRIBUTARY_HOME", "/opt/tributary"),
            ("TRIBUTARY_OTHER__THING", "1"),
            ("TRIBUTARY_CONFIG", "/nonexistent.toml"),
            ("TRIBUTARY_LOG__FILTER", "debug"),
        ]),
        CliOverrides::default(),
    )
    .unwrap();
    assert_eq!(c.log.filter, "debug", "known sections are still read");
}

#[test]
fn unknown_keys_of_known_sections_are_still_errors() {
    for (var, expected) in [
        ("TRIBUTARY_SERVER__LISEN", "server.lisen"),
        ("TRIBUTARY_WORKERS__CONCURRENCYY", "workers.concurrencyy"),
        ("TRIBUTARY_DEV_SECRETS", "dev_secrets"),
    ] {
        let (key, msg) = load_err(None, env(&[(var, "maybe")]), CliOverrides::default());
        assert_eq!(key, expected, "{var}: {msg}");
        assert!(msg.contains(var), "names the variable: {msg}");
    }
}

#[test]
fn partner_names_with_dashes_have_an_underscore_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "p.toml", PARTNERS);
    let c = Config::load_from(
        Some(&file),
        env(&[
            ("TRIBUTARY_PARTNERS__ACME_PUMP__CLIENT_SECRET", "from-env"),
            (
                "TRIBUTARY_PARTNERS__ACME_PUMP__TRANSFER__BACKFILL_DAYS",
                "7",
            ),
        ]),
        CliOverrides::default(),
    )
    .unwrap();
    assert_eq!(
        c.partners.keys().collect::<Vec<_>>(),
        ["acme-pump", "dexcom"],
        "no partner `acme_pump` appears"
    );
    let pump = &c.partners["acme-pump"];
    assert_eq!(pump.client_secret.expose(), "from-env");
    assert_eq!(pump.transfer.backfill_days, 7);

    // A bad value is reported with the variable as it was spelled.
    let (key, msg) = load_err(
        Some(&file),
        env(&[(
            "TRIBUTARY_PARTNERS__ACME_PUMP__REQUEST_TIMEOUT_SECS",
            "soon",
        )]),
        CliOverrides::default(),
    );
    assert_eq!(key, "partners.acme-pump.request_timeout_secs", "{msg}");
    assert!(
        msg.contains("TRIBUTARY_PARTNERS__ACME_PUMP__REQUEST_TIMEOUT_SECS"),
        "{msg}"
    );
}
