//! `tributary token`: only a verifiable JWT on stdout, signed with the development or the
//! configured secret, saying when it created new secrets, within the accepted lifetime.

use api::auth::{JwtKeys, Role};

use crate::{JWT_SECRET, KEY, stderr, stdout, tributary};

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

#[test]
fn clinician_tokens_carry_their_clinics() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TRIBUTARY_AUTH__JWT_SECRET", JWT_SECRET),
        ("TRIBUTARY_CRYPTO__KEYS__PROD", KEY),
        ("TRIBUTARY_DEV_SECRETS", "false"),
    ];
    let args = [
        "token",
        "--role",
        "clinician",
        "--subject",
        "dr-a",
        "--clinic",
        "c1",
        "--clinic",
        "c2",
    ];
    let out = tributary(dir.path(), &args, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let claims = JwtKeys::new(JWT_SECRET.as_bytes(), "tributary", "tributary")
        .verify(stdout(&out).trim())
        .unwrap();
    assert_eq!(claims.role, Role::Clinician);
    assert_eq!(claims.clinics, ["c1", "c2"]);

    for (bad, why) in [
        (
            vec!["token", "--role", "ops", "--subject", "o", "--clinic", "c1"],
            "--role clinician",
        ),
        (
            vec![
                "token",
                "--role",
                "clinician",
                "--subject",
                "d",
                "--clinic",
                "a/b",
            ],
            "invalid clinic id",
        ),
    ] {
        let out = tributary(dir.path(), &bad, &env);
        assert!(!out.status.success(), "{bad:?}");
        assert!(stdout(&out).is_empty(), "no token for {bad:?}");
        assert!(stderr(&out).contains(why), "{bad:?}: {}", stderr(&out));
    }
}
