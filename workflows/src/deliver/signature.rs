//! Webhook signing per the Standard Webhooks specification: every delivery carries
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`, a space-separated
//! list of `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`. Following the
//! specification exactly (rather than a scheme of our own) lets receivers verify Tributary's
//! deliveries with any of its libraries.
//!
//! Secrets are written `whsec_<base64 of the key bytes>`, the form those libraries accept.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;

/// The prefix of a secret's text form.
const PREFIX: &str = "whsec_";
/// Key bounds from the specification: below 24 bytes a key is too guessable; above 64 bytes
/// HMAC-SHA256 would hash it first, so longer keys add nothing and hint at a pasting mistake.
const MIN_KEY: usize = 24;
const MAX_KEY: usize = 64;
/// Bytes in a generated key: the specification's recommended size.
const GENERATED_KEY: usize = 32;

/// A webhook signing secret (`whsec_<base64>`). Debug prints `WebhookSecret(***)`; there is
/// deliberately no Display, so the key cannot end up in a log line by accident.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

/// Why a secret's text was refused. Variants never carry the text itself: it is a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("a webhook secret starts with `whsec_`")]
    MissingPrefix,
    #[error("a webhook secret is `whsec_` followed by standard base64")]
    NotBase64,
    #[error("a webhook secret needs at least {MIN_KEY} key bytes, this one has {0}")]
    TooShort(usize),
    #[error("a webhook secret has at most {MAX_KEY} key bytes, this one has {0}")]
    TooLong(usize),
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`. Surrounding whitespace is ignored, since secrets are often
    /// pasted into configuration with a trailing newline.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        match key.len() {
            n if n < MIN_KEY => Err(SecretError::TooShort(n)),
            n if n > MAX_KEY => Err(SecretError::TooLong(n)),
            _ => Ok(Self { key }),
        }
    }

    /// A new random secret of 32 bytes, with its `whsec_…` text (for `tributary` to print
    /// when asked; it is the only time the text is shown).
    pub fn generate() -> (Self, String) {
        let mut key = vec![0u8; GENERATED_KEY];
        // The thread RNG is a CSPRNG seeded from the OS, fit for key material.
        rand::rng().fill_bytes(&mut key);
        let text = format!("{PREFIX}{}", STANDARD.encode(&key));
        (Self { key }, text)
    }

    /// The `webhook-signature` header value for this message: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        // The signed content is `{id}.{timestamp}.{body}`, the body as the exact bytes sent:
        // re-serialising it would change the signature.
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The three headers of a delivery, in order: `("webhook-id", id)`,
/// `("webhook-timestamp", timestamp)`, `("webhook-signature", signature)`.
pub fn headers(
    secret: &WebhookSecret,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", secret.sign(id, timestamp, body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's published test vector. It comes from outside
    // this code base: a vector we signed ourselves would only prove we agree with ourselves.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn spec_secret() -> WebhookSecret {
        WebhookSecret::parse(SPEC_SECRET).unwrap()
    }

    #[test]
    fn reproduces_the_specification_test_vector() {
        assert_eq!(
            spec_secret().sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn headers_are_id_timestamp_signature_in_order() {
        let headers = headers(&spec_secret(), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(
            headers,
            [
                ("webhook-id", SPEC_ID.to_owned()),
                ("webhook-timestamp", "1614265330".to_owned()),
                ("webhook-signature", SPEC_SIGNATURE.to_owned()),
            ]
        );
    }

    #[test]
    fn any_change_to_the_message_changes_the_signature() {
        let secret = spec_secret();
        let changed = [
            secret.sign(SPEC_ID, SPEC_TIMESTAMP, br#"{"test": 2432232315}"#),
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJel", SPEC_TIMESTAMP, SPEC_BODY),
            secret.sign(SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_BODY),
        ];
        for signature in &changed {
            assert_ne!(signature, SPEC_SIGNATURE);
        }
        let (other, _) = WebhookSecret::generate();
        assert_ne!(
            other.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn generated_secrets_round_trip_and_differ() {
        let (secret, text) = WebhookSecret::generate();
        assert!(text.starts_with("whsec_"));
        let parsed = WebhookSecret::parse(&text).unwrap();
        assert_eq!(parsed.key.len(), 32);
        assert_eq!(parsed.key, secret.key);
        assert_eq!(parsed.sign("a", 1, b"b"), secret.sign("a", 1, b"b"));
        let (_, again) = WebhookSecret::generate();
        assert_ne!(text, again);
    }

    #[test]
    fn parse_refuses_malformed_secrets() {
        let b64 = |n: usize| STANDARD.encode(vec![7u8; n]);
        assert_eq!(
            WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::MissingPrefix
        );
        assert_eq!(
            WebhookSecret::parse(&format!("wh_{}", b64(32))).unwrap_err(),
            SecretError::MissingPrefix
        );
        assert_eq!(
            WebhookSecret::parse("whsec_not base64!").unwrap_err(),
            SecretError::NotBase64
        );
        assert_eq!(
            WebhookSecret::parse("whsec_").unwrap_err(),
            SecretError::TooShort(0)
        );
        assert_eq!(
            WebhookSecret::parse(&format!("whsec_{}", b64(23))).unwrap_err(),
            SecretError::TooShort(23)
        );
        assert_eq!(
            WebhookSecret::parse(&format!("whsec_{}", b64(65))).unwrap_err(),
            SecretError::TooLong(65)
        );
        // The bounds themselves are accepted, and a pasted trailing newline is forgiven.
        assert!(WebhookSecret::parse(&format!("whsec_{}", b64(24))).is_ok());
        assert!(WebhookSecret::parse(&format!("whsec_{}\n", b64(64))).is_ok());
    }

    #[test]
    fn errors_and_debug_never_show_the_key() {
        let secret = spec_secret();
        assert_eq!(format!("{secret:?}"), "WebhookSecret(***)");
        assert_eq!(format!("{secret:#?}"), "WebhookSecret(***)");
        let error = WebhookSecret::parse("whsec_c2hvcnQ=").unwrap_err();
        assert!(!error.to_string().contains("c2hvcnQ"));
        assert!(!format!("{error:?}").contains("c2hvcnQ"));
    }
}
