//! HS256 signing and verification keys: minting tokens, and verifying signature, algorithm,
//! issuer, audience, expiry and not-before within the leeway, lifetime and subject.

use std::{fmt, time::Duration};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};

use super::claims::{AuthError, Claims, Role, validate_clinics, validate_subject};

/// Clock skew tolerated on `exp` and `nbf`, in seconds: the minting and verifying hosts' clocks
/// may differ.
pub const LEEWAY_SECS: i64 = 30;

/// Longest token lifetime accepted unless configured otherwise (`auth.max_token_lifetime_secs`).
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Signing and verification keys plus the expected issuer and audience.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    audience: String,
    max_lifetime: Duration,
    validation: Validation,
    /// HMAC-SHA256 of a fixed label under the secret: the root of [`Self::derive_key`], so the
    /// secret itself is kept by the `jsonwebtoken` keys only.
    derivation: [u8; 32],
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("secret", &"[redacted]")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_lifetime", &self.max_lifetime)
            .finish()
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

impl JwtKeys {
    /// Keys for HS256 with `secret` (the configuration enforces ≥ 32 bytes), accepting tokens
    /// that live at most [`DEFAULT_MAX_LIFETIME`] (see [`Self::with_max_lifetime`]).
    pub fn new(secret: &[u8], issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        // Time claims are checked in `verify_at` against an injected clock, so tests are
        // deterministic.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            max_lifetime: DEFAULT_MAX_LIFETIME,
            validation,
            derivation: hmac_sha256(secret, b"tributary key derivation"),
        }
    }

    /// A key for `purpose` derived from the JWT secret (HMAC-SHA256), e.g. the ops console's
    /// CSRF tokens: every process sharing the secret derives the same key, and a key for one
    /// purpose tells nothing of the secret or of another purpose's key.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        hmac_sha256(&self.derivation, purpose.as_bytes())
    }

    /// Refuse tokens whose lifetime exceeds `max`: a leaked long-lived token would otherwise
    /// stay usable for as long as its minter chose (see docs/api.md#roles-and-bearer-tokens).
    #[must_use]
    pub fn with_max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = max;
        self
    }

    /// The longest token lifetime accepted.
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    /// Mint a token valid for `ttl` from now. The caller checks `subject` with
    /// [`validate_subject`] first; a token with an invalid subject is refused by [`Self::verify`].
    pub fn mint(&self, role: Role, subject: &str, ttl: Duration) -> String {
        self.mint_at(role, subject, ttl, Utc::now())
    }

    /// [`Self::mint`] with an explicit issue time.
    pub fn mint_at(&self, role: Role, subject: &str, ttl: Duration, now: DateTime<Utc>) -> String {
        self.mint_for_clinics_at(role, subject, &[], ttl, now)
    }

    /// [`Self::mint`] for a clinician of `clinics` (checked with [`validate_clinics`] first).
    pub fn mint_for_clinics(
        &self,
        role: Role,
        subject: &str,
        clinics: &[String],
        ttl: Duration,
    ) -> String {
        self.mint_for_clinics_at(role, subject, clinics, ttl, Utc::now())
    }

    fn mint_for_clinics_at(
        &self,
        role: Role,
        subject: &str,
        clinics: &[String],
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> String {
        let iat = now.timestamp();
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            sub: subject.to_owned(),
            role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: iat.saturating_add(ttl_secs),
            iat: Some(iat),
            nbf: None,
            clinics: clinics.to_vec(),
        };
        // HMAC signing of a plain struct cannot fail: no key parsing, and serde_json
        // serializes these fields infallibly.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims is infallible")
    }

    /// Verify signature, algorithm, issuer, audience, expiry, not-before, lifetime and subject.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, Utc::now())
    }

    /// [`Self::verify`] against an explicit current time.
    pub fn verify_at(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidIssuer => AuthError::WrongParty("issuer"),
                ErrorKind::InvalidAudience => AuthError::WrongParty("audience"),
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Malformed(e.to_string()),
            })?;
        let claims = data.claims;
        let now = now.timestamp();
        if claims.exp.saturating_add(LEEWAY_SECS) < now {
            return Err(AuthError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS))
        {
            return Err(AuthError::NotYetValid);
        }
        let lifetime_secs = claims.exp.saturating_sub(claims.iat.unwrap_or(now));
        let max_secs = self.max_lifetime.as_secs();
        if u64::try_from(lifetime_secs).is_ok_and(|lifetime| lifetime > max_secs) {
            return Err(AuthError::LifetimeTooLong {
                lifetime_secs,
                max_secs,
            });
        }
        validate_subject(&claims.sub)?;
        validate_clinics(&claims.clinics)?;
        Ok(claims)
    }
}
