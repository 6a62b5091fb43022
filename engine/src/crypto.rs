//! Authenticated encryption of token material at rest (docs/oauth.md#tokens-at-rest):
//! AES-256-GCM, a fresh random 96-bit nonce per message, the connection id (and a purpose
//! label) as associated data so a ciphertext copied onto another row does not decrypt, and a
//! key id stored beside each ciphertext so keys can rotate: new data use the active key, old
//! data stay readable while their key is configured.

use std::collections::BTreeMap;

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use rand::RngCore;

use crate::secret::Secret;

const NONCE_LEN: usize = 12;

/// The set of data-encryption keys, by id, and the one used for new data.
#[derive(Clone)]
pub struct Keyring {
    active: String,
    keys: BTreeMap<String, Secret<[u8; 32]>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the active key id {0:?} is not among the configured keys")]
    UnknownActiveKey(String),
    #[error("no key with id {0:?} is configured: data encrypted under it cannot be read")]
    UnknownKey(String),
    #[error("ciphertext failed authentication (wrong key, wrong row, or tampered)")]
    Authentication,
}

/// A ciphertext and the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    /// nonce ‖ ciphertext ‖ tag
    pub blob: Vec<u8>,
}

impl Keyring {
    pub fn new(
        active: impl Into<String>,
        keys: impl IntoIterator<Item = (String, [u8; 32])>,
    ) -> Result<Self, CryptoError> {
        let active = active.into();
        let keys: BTreeMap<_, _> = keys
            .into_iter()
            .map(|(id, k)| (id, Secret::new(k)))
            .collect();
        if !keys.contains_key(&active) {
            return Err(CryptoError::UnknownActiveKey(active));
        }
        Ok(Self { active, keys })
    }

    /// A keyring with one random key, for tests.
    pub fn random_for_tests() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self::new("test", [("test".to_owned(), key)]).expect("active key is present")
    }

    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Sealed {
        let key = self.keys[&self.active].expose();
        let cipher = Aes256Gcm::new(key.into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Sealed {
            key_id: self.active.clone(),
            blob,
        }
    }

    pub fn open(&self, key_id: &str, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_owned()))?
            .expose();
        if blob.len() < NONCE_LEN {
            return Err(CryptoError::Authentication);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Authentication)?;
        Aes256Gcm::new(key.into())
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding_to_associated_data() {
        let ring = Keyring::random_for_tests();
        let sealed = ring.seal(b"tokens:c1", b"secret-token");
        assert!(!sealed.blob.windows(12).any(|w| w == b"secret-token"));
        assert_eq!(
            ring.open(&sealed.key_id, &sealed.blob, b"tokens:c1")
                .unwrap(),
            b"secret-token"
        );
        assert!(matches!(
            ring.open(&sealed.key_id, &sealed.blob, b"tokens:c2"),
            Err(CryptoError::Authentication)
        ));
        let mut tampered = sealed.blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(ring.open(&sealed.key_id, &tampered, b"tokens:c1").is_err());
    }

    #[test]
    fn rotation_keeps_old_data_readable() {
        let old = Keyring::new("k1", [("k1".to_owned(), [1u8; 32])]).unwrap();
        let sealed = old.seal(b"a", b"x");
        let rotated = Keyring::new(
            "k2",
            [("k1".to_owned(), [1u8; 32]), ("k2".to_owned(), [2u8; 32])],
        )
        .unwrap();
        assert_eq!(
            rotated.open(&sealed.key_id, &sealed.blob, b"a").unwrap(),
            b"x"
        );
        assert_eq!(rotated.seal(b"a", b"y").key_id, "k2");
        let without_old = Keyring::new("k2", [("k2".to_owned(), [2u8; 32])]).unwrap();
        assert!(matches!(
            without_old.open(&sealed.key_id, &sealed.blob, b"a"),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn active_key_must_exist() {
        assert!(Keyring::new("nope", [("k1".to_owned(), [0u8; 32])]).is_err());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let ring = Keyring::new("k1", [("k1".to_owned(), [7u8; 32])]).unwrap();
        let shown = format!("{ring:?}");
        assert!(shown.contains("k1") && !shown.contains("7, 7"));
    }
}
