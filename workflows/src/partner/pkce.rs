//! Per-attempt secrets of an authorization request: the `state` (docs/oauth.md#state) and the
//! PKCE verifier and challenge (docs/oauth.md#pkce).

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use engine::secret::SecretString;
use oauth2::{PkceCodeChallenge, PkceCodeVerifier};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// Bytes of CSPRNG output behind each state and verifier: 256 bits, 43 base64url characters
/// (RFC 7636 §4.1's recommendation; twice the 128-bit floor worth having for `state`).
pub(crate) const RANDOM_BYTES: usize = 32;

/// 32 bytes from the thread-local CSPRNG (ChaCha, reseeded from the OS), base64url, no padding.
pub(crate) fn random_token() -> SecretString {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::new(URL_SAFE_NO_PAD.encode(bytes))
}

/// A fresh verifier and its S256 challenge (`BASE64URL(SHA256(verifier))`).
pub(crate) fn new_pkce() -> (PkceCodeChallenge, SecretString) {
    let verifier = random_token();
    let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
        verifier.expose().clone(),
    ));
    (challenge, verifier)
}

/// How `state` is stored (docs/oauth.md#state): SHA-256, lowercase hex. The callback's `state` is
/// hashed the same way and looked up; the raw value never touches the database. No salt is
/// needed: the input has 256 bits of entropy.
pub fn hash_state(state: &str) -> String {
    Sha256::digest(state.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_state_is_sha256_hex() {
        assert_eq!(
            hash_state("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn challenge_is_s256_of_verifier() {
        let (challenge, verifier) = new_pkce();
        assert_eq!(verifier.expose().len(), 43);
        assert_eq!(challenge.method().as_str(), "S256");
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose().as_bytes()));
        assert_eq!(challenge.as_str(), expected);
    }
}
