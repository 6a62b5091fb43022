//! What a token claims and what a request presents: roles, claims, why a request was not
//! authenticated or not authorized, and the checks of a subject and of an `Authorization` header.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

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
    /// The clinics a clinician belongs to (their invitations are the only ones they see);
    /// ignored for other roles. Each id is 1–128 characters of `[A-Za-z0-9._-]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clinics: Vec<String>,
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

/// Most clinics one token may name.
pub const MAX_CLINICS: usize = 64;

/// Check the clinics of a token before minting or after decoding.
pub fn validate_clinics(clinics: &[String]) -> Result<(), AuthError> {
    if clinics.len() > MAX_CLINICS {
        return Err(AuthError::Malformed(format!(
            "more than {MAX_CLINICS} clinics"
        )));
    }
    match clinics
        .iter()
        .find(|c| !engine::invitation::valid_clinic_id(c))
    {
        Some(bad) => Err(AuthError::Malformed(format!(
            "invalid clinic id {bad:?} (1-128 characters of A-Z a-z 0-9 . _ -)"
        ))),
        None => Ok(()),
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
