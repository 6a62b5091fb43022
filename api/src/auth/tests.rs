//! Minting and verification: round trips, expiry, not-before and lifetimes, foreign, tampered
//! and forged tokens, subjects, roles, the bearer header, redaction.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

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
