//! `[email]`, `[clinics]` and `[webhooks]`: the development mail directory exists only in
//! development mode, and every unsafe or malformed value names its key.

use tributary::config::{CliOverrides, Config, delivery};
use workflows::deliver::email::EmailTransport;

use crate::{env, load_err};

/// A runtime: an SMTP transport starts its connection pool when it is built.
#[tokio::test]
async fn the_mail_directory_is_a_development_convenience() {
    let dev = Config::load_from(
        None,
        env(&[("TRIBUTARY_DATABASE__URL", "sqlite://data/app.db")]),
        CliOverrides::default(),
    )
    .unwrap();
    let (settings, _) = delivery(&dev).unwrap();
    let (email, _) = settings.email.expect("development mode writes emails");
    match email.transport {
        EmailTransport::Directory(dir) => assert_eq!(dir, std::path::Path::new("data/app.mail")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        settings.links.invite,
        "http://127.0.0.1:8080/connect/{partner}?invitation={id}"
    );

    let prod = Config::load_from(
        None,
        env(&[("TRIBUTARY_DEV_SECRETS", "false")]),
        CliOverrides::default(),
    )
    .unwrap();
    let (settings, _) = delivery(&prod).unwrap();
    assert!(
        settings.email.is_none(),
        "no relay, production-like: no email at all"
    );
    assert!(!settings.outbox().email, "and no notice is queued");

    let relay = Config::load_from(
        None,
        env(&[
            ("TRIBUTARY_DEV_SECRETS", "false"),
            ("TRIBUTARY_EMAIL__RELAY", "smtp.example.org"),
            (
                "TRIBUTARY_EMAIL__FROM",
                "Tidepool <no-reply@tidepool.example>",
            ),
            (
                "TRIBUTARY_EMAIL__INVITE_LINK",
                "https://app.example/c/{partner}?i={id}",
            ),
            ("TRIBUTARY_CLINICS__C1__NAME", "North"),
            ("TRIBUTARY_CLINICS__C1__CONTACT_EMAIL", "care@north.example"),
        ]),
        CliOverrides::default(),
    )
    .unwrap();
    let (settings, _) = delivery(&relay).unwrap();
    assert!(settings.outbox().clinic_contacts.contains("c1"));
    let (email, _) = settings.email.unwrap();
    assert!(matches!(
        email.transport,
        EmailTransport::Smtp { port: 587, .. }
    ));
}

#[test]
fn unsafe_or_malformed_values_name_their_key() {
    let relay = ("TRIBUTARY_EMAIL__RELAY", "smtp.example.org");
    let from = ("TRIBUTARY_EMAIL__FROM", "no-reply@tidepool.example");
    let link = ("TRIBUTARY_EMAIL__INVITE_LINK", "https://app.example/c/{id}");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    for (vars, key, says) in [
        (
            vec![relay, from, link, ("TRIBUTARY_EMAIL__TLS", "none")],
            "email.tls",
            "loopback",
        ),
        (vec![relay, link], "email.from", "required"),
        (vec![relay, from], "email.invite_link", "required"),
        (
            vec![("TRIBUTARY_EMAIL__USERNAME", "u")],
            "email.username",
            "both",
        ),
        (
            vec![("TRIBUTARY_EMAIL__FROM", "not an address")],
            "email.from",
            "not an email address",
        ),
        (
            vec![
                ("TRIBUTARY_CLINICS__C1__NAME", "N"),
                ("TRIBUTARY_CLINICS__C1__CONTACT_EMAIL", "x"),
            ],
            "clinics.c1.contact_email",
            "@",
        ),
        (
            vec![
                ("TRIBUTARY_WEBHOOKS__WEB__URL", "http://hooks.example/x"),
                ("TRIBUTARY_WEBHOOKS__WEB__SECRET", secret),
            ],
            "webhooks.web.url",
            "https://",
        ),
        (
            vec![
                ("TRIBUTARY_WEBHOOKS__WEB__URL", "https://hooks.example/x"),
                ("TRIBUTARY_WEBHOOKS__WEB__SECRET", "plain"),
            ],
            "webhooks.web.secret",
            "whsec_",
        ),
    ] {
        let (got, message) = load_err(None, env(&vars), CliOverrides::default());
        assert_eq!(got, key, "{message}");
        assert!(message.contains(says), "{key}: {message}");
    }
    // Plain http and `tls = none` are fine on loopback.
    Config::load_from(
        None,
        env(&[
            ("TRIBUTARY_EMAIL__RELAY", "127.0.0.1"),
            ("TRIBUTARY_EMAIL__TLS", "none"),
            from,
            link,
            (
                "TRIBUTARY_WEBHOOKS__WEB__URL",
                "http://127.0.0.1:9000/hooks",
            ),
            ("TRIBUTARY_WEBHOOKS__WEB__SECRET", secret),
        ]),
        CliOverrides::default(),
    )
    .unwrap();
}
