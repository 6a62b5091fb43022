//! Bearer-token authentication: HS256 JWTs minted by Tidepool (or by `tributary token` in
//! development) and verified on every API request.
//!
//! Only HS256 is accepted. The algorithm is pinned by us, never read from the token, so `alg: none`
//! and algorithm-confusion tokens fail before any claim is looked at. Issuer and audience are
//! checked so a token minted for another service that happens to share the secret is refused.
//!
//! Every failure to authenticate maps to the single stable code `unauthenticated`: telling a
//! caller *why* its token was refused (expired vs. bad signature) helps attackers more than
//! clients, and the detailed reason goes to the logs instead via [`AuthError`]'s `Display`.

use std::{fmt, str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `exp` and `nbf`, in seconds: the minting and verifying hosts' clocks
/// may differ.
pub const LEEWAY_SECS: i64 = 30;

/// Longest token lifetime accepted unless configured otherwise (`auth.max_token_lifetime_secs`).
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Longest subject accepted; subjects become database keys and log fields.
pub const MAX_SUBJECT_LEN: usize = 128;

/// What the caller is allowed to do. Carried in the `role` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A person connecting their own devices; may only touch their own connections.
    User,
    /// Another Tidepool service acting on behalf of users.
    Service,
    /// A clinician viewing connections of the patients they care for.
    Clinician,
    /// Operators: inspect and repair workflows.
    Ops,
}

impl Role {
    /// Every role, in a stable order (for help texts and tests).
    pub const ALL: [Role; 4] = [Role::User, Role::Service, Role::Clinician, Role::Ops];

    /// The claim value (`user`, `service`, `clinician`, `ops`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Service => "service",
            Role::Clinician => "clinician",
            Role::Ops => "ops",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or(AuthError::Malformed(format!("unknown role `{s}`")))
    }
}

/// The claims of a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the caller is: a Tidepool user id for [`Role::User`], a service or operator name
    /// otherwise. Non-empty, at most [`MAX_SUBJECT_LEN`] characters.
    pub sub: String,
    /// What the caller may do.
    pub role: Role,
    /// Who minted the token; must equal the configured issuer.
    pub iss: String,
    /// Who the token is for; must equal the configured audience.
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issue time, seconds since the Unix epoch; the token's lifetime is measured from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

impl Claims {
    /// Refuse the request unless the caller holds one of `allowed`.
    pub fn require_role(&self, allowed: &[Role]) -> Result<(), AuthError> {
        if allowed.contains(&self.role) {
            Ok(())
        } else {
            Err(AuthError::Forbidden { role: self.role })
        }
    }
}

/// Why a request was not authenticated or not authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("missing bearer token")]
    Missing,
    /// Not a well-formed JWT, wrong algorithm, missing claims, or an invalid subject.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The signature does not match our secret.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// `exp - iat` (or `exp - now` without `iat`) is longer than the configured maximum.
    #[error("token lifetime of {lifetime_secs} s exceeds the maximum of {max_secs} s")]
    LifetimeTooLong {
        /// The token's lifetime.
        lifetime_secs: i64,
        /// `auth.max_token_lifetime_secs`.
        max_secs: u64,
    },
    /// `iss` or `aud` is not ours.
    #[error("token not issued for this service: {0}")]
    WrongParty(&'static str),
    /// Authenticated, but the role may not perform this operation.
    #[error("role `{role}` may not perform this operation")]
    Forbidden {
        /// The caller's role.
        role: Role,
    },
}

impl AuthError {
    /// Stable machine-readable code for `application/problem+json` bodies.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Forbidden { .. } => "forbidden",
            _ => "unauthenticated",
        }
    }

    /// HTTP status for this error: 401 for authentication failures, 403 for authorization.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Forbidden { .. } => 403,
            _ => 401,
        }
    }
}

/// Check a subject before minting or after decoding.
pub fn validate_subject(subject: &str) -> Result<(), AuthError> {
    if subject.is_empty() {
        return Err(AuthError::Malformed("empty subject".into()));
    }
    if subject.chars().count() > MAX_SUBJECT_LEN {
        return Err(AuthError::Malformed(format!(
            "subject longer than {MAX_SUBJECT_LEN} characters"
        )));
    }
    Ok(())
}

/// Extract the token from an `Authorization` header value (`Bearer <token>`, scheme
/// case-insensitive per RFC 9110 §11.1).
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::Missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// Signing and verification keys plus the expected issuer and audience.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    audience: String,
    max_lifetime: Duration,
    validation: Validation,
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
        }
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
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> JwtKeys {
        JwtKeys::new(SECRET, "tributary", "tributary")
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    /// base64url without padding, enough to forge tokens in tests.
    fn b64url(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn claims_json(role: &str, exp: i64) -> String {
        format!(
            r#"{{"sub":"alice","role":"{role}","iss":"tributary","aud":"tributary","exp":{exp},"iat":0}}"#
        )
    }

    #[test]
    fn round_trip() {
        let token = keys().mint_at(Role::Clinician, "alice", Duration::from_secs(3600), t0());
        let claims = keys().verify_at(&token, t0()).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.role, Role::Clinician);
        assert_eq!(claims.iss, "tributary");
        assert_eq!(claims.aud, "tributary");
        assert_eq!(claims.iat, Some(t0().timestamp()));
        assert_eq!(claims.nbf, None);
        assert_eq!(claims.exp, t0().timestamp() + 3600);
    }

    #[test]
    fn verify_uses_the_real_clock() {
        let token = keys().mint(Role::Ops, "bob", Duration::from_secs(60));
        assert_eq!(keys().verify(&token).unwrap().role, Role::Ops);
    }

    #[test]
    fn expired_is_rejected_after_the_leeway() {
        let token = keys().mint_at(Role::User, "alice", Duration::from_secs(60), t0());
        let exp = t0() + chrono::Duration::seconds(60);
        assert!(keys().verify_at(&token, exp).is_ok());
        let within = exp + chrono::Duration::seconds(LEEWAY_SECS);
        assert!(keys().verify_at(&token, within).is_ok());
        let after = within + chrono::Duration::seconds(1);
        let err = keys().verify_at(&token, after).unwrap_err();
        assert_eq!(err, AuthError::Expired);
        assert_eq!(err.code(), "unauthenticated");
    }

    /// A correctly signed token with exactly these claims.
    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn claims_at(exp: i64, iat: Option<i64>, nbf: Option<i64>) -> serde_json::Value {
        let mut claims = serde_json::json!({
            "sub": "alice", "role": "user", "iss": "tributary", "aud": "tributary", "exp": exp,
        });
        if let Some(iat) = iat {
            claims["iat"] = iat.into();
        }
        if let Some(nbf) = nbf {
            claims["nbf"] = nbf.into();
        }
        claims
    }

    #[test]
    fn not_before_is_checked_with_the_leeway() {
        let now = t0().timestamp();
        let exp = now + 3600;
        for nbf in [now - 3600, now, now + LEEWAY_SECS] {
            let token = signed(claims_at(exp, Some(now), Some(nbf)));
            let claims = keys().verify_at(&token, t0()).unwrap();
            assert_eq!(claims.nbf, Some(nbf));
        }
        let token = signed(claims_at(exp, Some(now), Some(now + LEEWAY_SECS + 1)));
        let err = keys().verify_at(&token, t0()).unwrap_err();
        assert_eq!(err, AuthError::NotYetValid);
        assert_eq!(err.code(), "unauthenticated");
        // The same token is good once its time has come.
        let later = t0() + chrono::Duration::seconds(1);
        assert!(keys().verify_at(&token, later).is_ok());
    }

    #[test]
    fn lifetimes_over_the_maximum_are_rejected() {
        let now = t0().timestamp();
        let max = DEFAULT_MAX_LIFETIME.as_secs() as i64;
        let ok = signed(claims_at(now + max, Some(now), None));
        assert!(keys().verify_at(&ok, t0()).is_ok());
        let long = signed(claims_at(now + max + 1, Some(now), None));
        assert_eq!(
            keys().verify_at(&long, t0()).unwrap_err(),
            AuthError::LifetimeTooLong {
                lifetime_secs: max + 1,
                max_secs: max as u64,
            }
        );
        // An old `iat` does not make a token acceptable for longer.
        let old = signed(claims_at(now + 60, Some(now - max), None));
        assert!(matches!(
            keys().verify_at(&old, t0()),
            Err(AuthError::LifetimeTooLong { .. })
        ));
        // Without `iat`, what is left of the token's life counts.
        let no_iat = signed(claims_at(now + max, None, None));
        assert_eq!(keys().verify_at(&no_iat, t0()).unwrap().iat, None);
        let no_iat_long = signed(claims_at(now + max + 1, None, None));
        assert!(keys().verify_at(&no_iat_long, t0()).is_err());
        // A configured maximum replaces the default, and minted tokens within it pass.
        let short = keys().with_max_lifetime(Duration::from_secs(600));
        assert_eq!(short.max_lifetime(), Duration::from_secs(600));
        let token = short.mint_at(Role::Ops, "op", Duration::from_secs(600), t0());
        assert!(short.verify_at(&token, t0()).is_ok());
        let token = short.mint_at(Role::Ops, "op", Duration::from_secs(601), t0());
        assert!(matches!(
            short.verify_at(&token, t0()),
            Err(AuthError::LifetimeTooLong { .. })
        ));
        let token = keys().mint_at(Role::Ops, "op", DEFAULT_MAX_LIFETIME, t0());
        assert!(keys().verify_at(&token, t0()).is_ok());
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let other = JwtKeys::new(
            b"another-secret-another-secret-xx",
            "tributary",
            "tributary",
        );
        let token = other.mint_at(Role::Ops, "alice", Duration::from_secs(60), t0());
        let err = keys().verify_at(&token, t0()).unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
        assert_eq!(err.code(), "unauthenticated");
    }

    #[test]
    fn wrong_audience_and_issuer_are_rejected() {
        let other_aud = JwtKeys::new(SECRET, "tributary", "someone-else");
        let token = other_aud.mint_at(Role::Ops, "alice", Duration::from_secs(60), t0());
        let err = keys().verify_at(&token, t0()).unwrap_err();
        assert_eq!(err, AuthError::WrongParty("audience"));
        assert_eq!(err.code(), "unauthenticated");

        let other_iss = JwtKeys::new(SECRET, "elsewhere", "tributary");
        let token = other_iss.mint_at(Role::Ops, "alice", Duration::from_secs(60), t0());
        assert_eq!(
            keys().verify_at(&token, t0()).unwrap_err(),
            AuthError::WrongParty("issuer")
        );
    }

    #[test]
    fn tampered_payload_is_rejected() {
        let token = keys().mint_at(Role::User, "alice", Duration::from_secs(60), t0());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64url(claims_json("ops", t0().timestamp() + 60).as_bytes());
        parts[1] = &forged;
        let err = keys().verify_at(&parts.join("."), t0()).unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
        assert_eq!(err.code(), "unauthenticated");
    }

    #[test]
    fn alg_none_is_rejected() {
        let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64url(claims_json("ops", t0().timestamp() + 60).as_bytes());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            let err = keys().verify_at(&token, t0()).unwrap_err();
            assert!(matches!(err, AuthError::Malformed(_)), "{err:?}");
            assert_eq!(err.code(), "unauthenticated");
        }
    }

    #[test]
    fn other_hmac_algorithms_are_rejected() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({
                "sub": "alice", "role": "ops", "iss": "tributary", "aud": "tributary",
                "exp": t0().timestamp() + 60, "iat": 0
            }),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(
            keys().verify_at(&token, t0()),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        for token in ["", "abc", "a.b.c", "....."] {
            let err = keys().verify_at(token, t0()).unwrap_err();
            assert_eq!(err.code(), "unauthenticated", "{token:?}: {err:?}");
        }
    }

    #[test]
    fn subject_limits() {
        assert!(validate_subject("").is_err());
        assert!(validate_subject(&"x".repeat(MAX_SUBJECT_LEN)).is_ok());
        assert!(validate_subject(&"x".repeat(MAX_SUBJECT_LEN + 1)).is_err());

        let token = keys().mint_at(Role::User, "", Duration::from_secs(60), t0());
        assert!(matches!(
            keys().verify_at(&token, t0()),
            Err(AuthError::Malformed(_))
        ));
        let long = "y".repeat(MAX_SUBJECT_LEN + 1);
        let token = keys().mint_at(Role::User, &long, Duration::from_secs(60), t0());
        assert!(keys().verify_at(&token, t0()).is_err());
    }

    #[test]
    fn roles_parse_and_authorize() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
        }
        assert!("admin".parse::<Role>().is_err());

        let token = keys().mint_at(Role::User, "alice", Duration::from_secs(60), t0());
        let claims = keys().verify_at(&token, t0()).unwrap();
        assert!(claims.require_role(&[Role::User, Role::Service]).is_ok());
        let err = claims.require_role(&[Role::Ops]).unwrap_err();
        assert_eq!(err.code(), "forbidden");
        assert_eq!(err.status(), 403);
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(Some("bearer  abc ")).unwrap(), "abc");
        assert_eq!(bearer_token(None).unwrap_err(), AuthError::Missing);
        assert_eq!(
            bearer_token(Some("Basic abc")).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            bearer_token(Some("Bearer ")).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(AuthError::Missing.code(), "unauthenticated");
        assert_eq!(AuthError::Missing.status(), 401);
    }

    #[test]
    fn debug_redacts_the_secret() {
        let debug = format!("{:?}", keys());
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
    }
}
