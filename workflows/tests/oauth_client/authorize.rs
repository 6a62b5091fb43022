use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};
use workflows::partner::{
    CallbackError, CallbackErrorKind, ClientAuth, PartnerClient, PartnerConfig, PartnerConfigError,
    classify_callback_error, hash_state,
};

use super::mock::{CLIENT_ID, NAME, config_for, secret};

#[tokio::test]
async fn authorization_request_has_s256_pkce_fresh_state_scope_and_exact_redirect() {
    let config = config_for("http://127.0.0.1:1", ClientAuth::ClientSecretBasic);
    let client = PartnerClient::new(NAME, config.clone()).unwrap();
    let first = client.authorization_request();
    let second = client.authorization_request();
    let url = &first.url;
    assert!(
        url.as_str()
            .starts_with("http://127.0.0.1:1/authorize?prompt=login&")
    );
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let get = |k: &str| {
        query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap()
    };
    assert_eq!(get("response_type"), "code");
    assert_eq!(get("client_id"), CLIENT_ID);
    assert_eq!(get("redirect_uri"), config.redirect_url.as_str());
    assert_eq!(get("scope"), "offline_access egv.read");
    assert_eq!(get("code_challenge_method"), "S256");
    assert_eq!(get("state"), first.state.expose());
    let verifier = first.pkce_verifier.expose();
    assert_eq!(verifier.len(), 43);
    assert_eq!(
        get("code_challenge"),
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    );
    // >= 128 bits: 32 random bytes.
    assert_eq!(
        URL_SAFE_NO_PAD.decode(first.state.expose()).unwrap().len(),
        32
    );
    assert_ne!(first.state, second.state);
    assert_ne!(first.pkce_verifier, second.pkce_verifier);
    assert_eq!(hash_state(first.state.expose()).len(), 64);
    let debug = format!("{first:?}");
    assert!(!debug.contains(first.state.expose()) && !debug.contains(verifier));
}

#[test]
fn callback_errors_are_classified() {
    use CallbackErrorKind::*;
    let cases = [
        ("access_denied", Declined),
        ("server_error", Retryable),
        ("temporarily_unavailable", Retryable),
        ("invalid_request", Configuration),
        ("unauthorized_client", Configuration),
        ("unsupported_response_type", Configuration),
        ("invalid_scope", Configuration),
        ("something_new", Configuration),
        ("ACCESS_DENIED", Configuration),
        ("", Configuration),
    ];
    for (code, kind) in cases {
        assert_eq!(classify_callback_error(code), kind, "{code}");
    }
}

#[test]
fn issuer_is_checked() {
    let mut config = config_for("http://127.0.0.1:1", ClientAuth::ClientSecretBasic);
    let client = PartnerClient::new(NAME, config.clone()).unwrap();
    assert_eq!(
        client.check_issuer(Some("https://auth.acme.example")),
        Ok(())
    );
    assert_eq!(client.check_issuer(None), Ok(()));
    let err = client
        .check_issuer(Some("https://evil.example"))
        .unwrap_err();
    assert!(matches!(err, CallbackError::IssuerMismatch { .. }));
    assert_eq!(err.code(), "issuer_mismatch");
    // Exact comparison: a trailing slash is a different issuer.
    assert!(
        client
            .check_issuer(Some("https://auth.acme.example/"))
            .is_err()
    );
    config.require_issuer = true;
    let strict = PartnerClient::new(NAME, config.clone()).unwrap();
    assert!(matches!(
        strict.check_issuer(None),
        Err(CallbackError::IssuerMissing { .. })
    ));
    config.require_issuer = false;
    config.issuer = None;
    let open = PartnerClient::new(NAME, config).unwrap();
    assert_eq!(open.check_issuer(Some("https://anything.example")), Ok(()));
}

#[test]
fn new_rejects_invalid_configuration() {
    let base = "http://127.0.0.1:1";
    let ok = config_for(base, ClientAuth::ClientSecretBasic);
    let reject = |name: &str, edit: &dyn Fn(&mut PartnerConfig)| {
        let mut config = ok.clone();
        edit(&mut config);
        PartnerClient::new(name, config).unwrap_err()
    };
    let url = |s: &str| url::Url::parse(s).unwrap();
    for path in [
        "/v1/oauth/other/callback",
        "/v1/oauth/acme/callback/",
        "/oauth/acme/callback",
        "/V1/oauth/acme/callback",
    ] {
        let err = reject(NAME, &|c| {
            c.redirect_url = url(&format!("https://t.example{path}"))
        });
        assert!(
            matches!(err, PartnerConfigError::RedirectPath { .. }),
            "{path}: {err}"
        );
    }
    // The same config under another partner's name: its path is not that partner's.
    assert!(matches!(
        reject("dexcom", &|_| {}),
        PartnerConfigError::RedirectPath { .. }
    ));
    assert!(matches!(
        reject("Bad Name", &|_| {}),
        PartnerConfigError::InvalidName(_)
    ));
    assert!(matches!(
        reject(NAME, &|c| c.client_id = " ".into()),
        PartnerConfigError::Empty { .. }
    ));
    assert!(matches!(
        reject(NAME, &|c| c.client_secret = secret("")),
        PartnerConfigError::Empty { .. }
    ));
    assert!(matches!(
        reject(NAME, &|c| c.token_url = url("ftp://x.example/token")),
        PartnerConfigError::InvalidUrl {
            field: "token_url",
            ..
        }
    ));
    assert!(matches!(
        reject(NAME, &|c| c.token_url =
            url("https://id:pw@x.example/token")),
        PartnerConfigError::InvalidUrl { .. }
    ));
    assert!(matches!(
        reject(NAME, &|c| c.redirect_url =
            url("https://t.example/v1/oauth/acme/callback#f")),
        PartnerConfigError::InvalidUrl { .. }
    ));
    assert!(matches!(
        reject(NAME, &|c| c.scopes = vec!["a b".into()]),
        PartnerConfigError::InvalidScope { .. }
    ));
    assert!(matches!(
        reject(NAME, &|c| c.request_timeout_secs = 0),
        PartnerConfigError::ZeroTimeout { .. }
    ));
    let no_issuer = |c: &mut PartnerConfig| {
        c.issuer = None;
        c.require_issuer = true;
    };
    assert!(matches!(
        reject(NAME, &no_issuer),
        PartnerConfigError::IssuerRequiredButMissing { .. }
    ));
    let client = PartnerClient::new(NAME, ok).unwrap();
    assert_eq!(client.name(), NAME);
    assert_eq!(client.config().client_id, CLIENT_ID);
}
