//! Unit tests of the authorization-server rules, without HTTP.

use chrono::TimeZone;

use super::*;

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 1, 12, 0, 0).unwrap()
}

fn request(flavor: Flavor, scope: &str) -> AuthRequest {
    AuthRequest {
        flavor,
        client_id: "c".into(),
        redirect_uri: "http://app/cb".into(),
        scope: scope.into(),
        state: "s".into(),
        code_challenge: s256(VERIFIER),
    }
}

fn redeem<'a>(
    client_id: &'a str,
    code: &'a str,
    redirect_uri: &'a str,
    verifier: &'a str,
) -> CodeRedemption<'a> {
    CodeRedemption {
        client_id,
        code,
        redirect_uri,
        verifier,
    }
}

fn ttl() -> TimeDelta {
    TimeDelta::hours(2)
}

fn granted(store: &mut Store) -> Issued {
    let code = store.issue_code(&request(Flavor::Cgm, OFFLINE_ACCESS), "alice", now());
    store
        .exchange_code(
            Flavor::Cgm,
            &redeem("c", &code, "http://app/cb", VERIFIER),
            now(),
            ttl(),
        )
        .unwrap()
}

#[test]
fn rfc7636_appendix_b_example() {
    assert_eq!(
        s256(VERIFIER),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn code_is_bound_to_client_redirect_verifier_and_time() {
    let mut store = Store::default();
    let req = request(Flavor::Cgm, OFFLINE_ACCESS);
    let code = store.issue_code(&req, "alice", now());
    let ex = |s: &mut Store, client: &str, uri: &str, v: &str, at| {
        s.exchange_code(Flavor::Cgm, &redeem(client, &code, uri, v), at, ttl())
    };
    assert_eq!(
        ex(&mut store, "other", "http://app/cb", VERIFIER, now()),
        Err(GrantError::InvalidGrant)
    );
    assert_eq!(
        ex(&mut store, "c", "http://app/cb/", VERIFIER, now()),
        Err(GrantError::InvalidGrant)
    );
    assert_eq!(
        ex(&mut store, "c", "http://app/cb", "wrong", now()),
        Err(GrantError::InvalidGrant)
    );
    let late = now() + CODE_TTL;
    assert_eq!(
        ex(&mut store, "c", "http://app/cb", VERIFIER, late),
        Err(GrantError::InvalidGrant)
    );
    assert!(
        store
            .exchange_code(
                Flavor::Pump,
                &redeem("c", &code, "http://app/cb", VERIFIER),
                now(),
                ttl()
            )
            .is_err()
    );
    let ok = ex(&mut store, "c", "http://app/cb", VERIFIER, now()).unwrap();
    assert!(ok.refresh_token.is_some());
    assert_eq!(ok.expires_in, 7200);
}

#[test]
fn replayed_code_revokes_the_grant() {
    let mut store = Store::default();
    let code = store.issue_code(&request(Flavor::Cgm, OFFLINE_ACCESS), "alice", now());
    let issued = store
        .exchange_code(
            Flavor::Cgm,
            &redeem("c", &code, "http://app/cb", VERIFIER),
            now(),
            ttl(),
        )
        .unwrap();
    assert!(
        store
            .authenticate(Flavor::Cgm, &issued.access_token, now())
            .is_some()
    );
    let again = store.exchange_code(
        Flavor::Cgm,
        &redeem("c", &code, "http://app/cb", VERIFIER),
        now(),
        ttl(),
    );
    assert_eq!(again, Err(GrantError::InvalidGrant));
    assert!(
        store
            .authenticate(Flavor::Cgm, &issued.access_token, now())
            .is_none()
    );
    let refresh = issued.refresh_token.unwrap();
    assert!(
        store
            .refresh(Flavor::Cgm, "c", &refresh, None, now(), ttl())
            .is_err()
    );
    let stats = store.snapshot();
    assert_eq!(
        (
            stats.cgm.code_replays,
            stats.cgm.revoked_grants,
            stats.cgm.live_grants
        ),
        (1, 1, 0)
    );
}

#[test]
fn rotation_and_reuse_detection() {
    let mut store = Store::default();
    let first = granted(&mut store);
    let old = first.refresh_token.unwrap();
    let second = store
        .refresh(Flavor::Cgm, "c", &old, None, now(), ttl())
        .unwrap();
    let current = second.refresh_token.unwrap();
    assert_ne!(current, old);
    assert_ne!(second.access_token, first.access_token);
    // The old one again: reuse, and the whole grant dies.
    assert_eq!(
        store.refresh(Flavor::Cgm, "c", &old, None, now(), ttl()),
        Err(GrantError::InvalidGrant)
    );
    assert_eq!(
        store.refresh(Flavor::Cgm, "c", &current, None, now(), ttl()),
        Err(GrantError::InvalidGrant)
    );
    assert!(
        store
            .authenticate(Flavor::Cgm, &second.access_token, now())
            .is_none()
    );
    let s = store.snapshot().cgm;
    assert_eq!(
        (
            s.refreshes,
            s.rotations,
            s.reuse_detections,
            s.invalid_grants
        ),
        (1, 1, 1, 2)
    );
}

#[test]
fn refresh_scope_may_only_narrow() {
    let mut store = Store::default();
    let code = store.issue_code(
        &request(Flavor::Pump, "pump.read offline_access"),
        "p",
        now(),
    );
    let issued = store
        .exchange_code(
            Flavor::Pump,
            &redeem("c", &code, "http://app/cb", VERIFIER),
            now(),
            ttl(),
        )
        .unwrap();
    let rt = issued.refresh_token.unwrap();
    let wider = store.refresh(
        Flavor::Pump,
        "c",
        &rt,
        Some("pump.read pump.write"),
        now(),
        ttl(),
    );
    assert_eq!(wider, Err(GrantError::InvalidScope));
    let narrow = store
        .refresh(Flavor::Pump, "c", &rt, Some("pump.read"), now(), ttl())
        .unwrap();
    assert_eq!(narrow.scope, "pump.read");
    assert!(
        narrow.refresh_token.is_none(),
        "no offline_access, no refresh token"
    );
}

#[test]
fn access_tokens_expire_and_are_flavor_bound() {
    let mut store = Store::default();
    let issued = granted(&mut store);
    let at = &issued.access_token;
    assert_eq!(
        store.authenticate(Flavor::Cgm, at, now()).unwrap().user,
        "alice"
    );
    assert!(store.authenticate(Flavor::Pump, at, now()).is_none());
    assert!(store.authenticate(Flavor::Cgm, at, now() + ttl()).is_none());
}

#[test]
fn revocation_kills_the_grant_only_for_its_client() {
    let mut store = Store::default();
    let issued = granted(&mut store);
    let rt = issued.refresh_token.clone().unwrap();
    store.revoke(Flavor::Cgm, "intruder", &rt, Some("refresh_token"), now());
    assert!(
        store
            .authenticate(Flavor::Cgm, &issued.access_token, now())
            .is_some()
    );
    store.revoke(Flavor::Cgm, "c", "garbage", None, now());
    store.revoke(Flavor::Cgm, "c", &rt, Some("refresh_token"), now());
    assert!(
        store
            .authenticate(Flavor::Cgm, &issued.access_token, now())
            .is_none()
    );
    let s = store.snapshot().cgm;
    assert_eq!(s.revocations, 3);
    assert_eq!(s.revoked_grants, 1);
    let last = s.recent_revocations.back().unwrap();
    assert_eq!(last.token_type_hint.as_deref(), Some("refresh_token"));
    assert_eq!(last.token_kind.as_deref(), Some("refresh_token"));
    assert!(last.revoked_grant);
    assert_eq!(s.recent_revocations[1].token_kind, None);
}

#[test]
fn partner_side_revocation() {
    let mut store = Store::default();
    let a = granted(&mut store);
    let b = granted(&mut store);
    assert_eq!(store.revoke_user(Flavor::Pump, "alice"), 0);
    assert_eq!(store.revoke_user(Flavor::Cgm, "alice"), 2);
    for issued in [a, b] {
        assert!(
            store
                .authenticate(Flavor::Cgm, &issued.access_token, now())
                .is_none()
        );
        let rt = issued.refresh_token.unwrap();
        assert_eq!(
            store.refresh(Flavor::Cgm, "c", &rt, None, now(), ttl()),
            Err(GrantError::InvalidGrant)
        );
    }
    assert_eq!(store.snapshot().cgm.partner_revocations, 2);
}

#[test]
fn tokens_vary_in_length() {
    let mut store = Store::default();
    let lengths: std::collections::HashSet<usize> = (0..20)
        .map(|_| granted(&mut store).access_token.len())
        .collect();
    assert!(lengths.len() > 3, "{lengths:?}");
}
