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
//!
//! # Layout
//! - `claims.rs`: roles, claims, the errors, subject and `Authorization` header checks.
//! - `keys.rs`: [`JwtKeys`], minting and verifying, the time and lifetime rules.
//! - `tests.rs`: unit tests of both.

mod claims;
mod keys;
#[cfg(test)]
mod tests;

pub use claims::{
    AuthError, Claims, MAX_CLINICS, MAX_SUBJECT_LEN, Role, bearer_token, validate_clinics,
    validate_subject,
};
pub use keys::{DEFAULT_MAX_LIFETIME, JwtKeys, LEEWAY_SECS};
