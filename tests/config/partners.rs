//! Partner tables.

use tributary::config::{CliOverrides, Config};
use workflows::partner::{ClientAuth, PartnerKind};

use crate::{env, load_err, write};

pub const PARTNERS: &str = r#"
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

/// One partner-name rule (`engine::ids::PartnerName::parse`), with one wording, for the
/// configuration and the partner client alike.
#[test]
fn partner_names_follow_the_one_rule() {
    let dir = tempfile::tempdir().unwrap();
    let rule = engine::ids::IdError::PartnerName.to_string();
    for name in ["Acme", "acme_pump", "-acme", &"p".repeat(33)] {
        let text = PARTNERS
            .replace("[partners.acme-pump]", &format!("[partners.{name}]"))
            .replace(
                "/v1/oauth/acme-pump/callback",
                &format!("/v1/oauth/{name}/callback"),
            );
        let file = write(dir.path(), "names.toml", &text);
        let (key, msg) = load_err(Some(&file), env(&[]), CliOverrides::default());
        assert_eq!(key, format!("partners.{name}"), "{msg}");
        assert!(msg.ends_with(&rule), "{msg}");

        let config = Config::load_from(
            Some(&write(dir.path(), "ok.toml", PARTNERS)),
            env(&[]),
            CliOverrides::default(),
        )
        .unwrap()
        .partners["acme-pump"]
            .clone();
        let err = workflows::partner::PartnerClient::new(name, config)
            .map(|_| ())
            .expect_err("the client refuses the name too");
        assert!(err.to_string().contains(&rule), "{err}");
    }
}
