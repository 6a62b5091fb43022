//! The authorization server's state: codes, grants, tokens. Pure logic with the clock passed
//! in, so every strict rule is unit-tested without HTTP.
//!
//! A *grant* is what one consent created; every token descends from it. Revoking a grant (code
//! replay, refresh-token reuse, RFC 7009 revocation, partner-side revocation) kills all of its
//! tokens at once, as real servers do.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

use crate::{
    config::Flavor,
    stats::{RECENT_REVOCATIONS, RevocationCall, Stats},
};

/// Authorization codes live this long (sandbox clock).
pub const CODE_TTL: TimeDelta = TimeDelta::seconds(60);
/// The scope that yields a refresh token.
pub const OFFLINE_ACCESS: &str = "offline_access";

/// A validated authorization request, as carried through the consent page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthRequest {
    pub flavor: Flavor,
    pub client_id: String,
    pub redirect_uri: String,
    /// Normalized, space-separated.
    pub scope: String,
    pub state: String,
    pub code_challenge: String,
}

/// What an authorization-code token request presents.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CodeRedemption<'a> {
    /// The authenticated client.
    pub client_id: &'a str,
    pub code: &'a str,
    pub redirect_uri: &'a str,
    /// PKCE `code_verifier`.
    pub verifier: &'a str,
}

/// Tokens handed out by one successful token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issued {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: i64,
    pub scope: String,
}

/// Why a grant request failed (the HTTP layer adds status and JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrantError {
    InvalidGrant,
    InvalidScope,
}

/// Who a valid access token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub user: String,
    pub scope: String,
}

struct Code {
    request: AuthRequest,
    user: String,
    expires_at: DateTime<Utc>,
    /// Set once exchanged: a second exchange revokes this grant.
    redeemed: Option<u64>,
}

struct Grant {
    flavor: Flavor,
    client_id: String,
    user: String,
    scope: String,
    revoked: bool,
}

struct AccessToken {
    grant: u64,
    scope: String,
    expires_at: DateTime<Utc>,
}

struct RefreshToken {
    grant: u64,
    /// True once exchanged for a newer one; presenting it again is reuse.
    rotated: bool,
}

/// All authorization-server state, behind one mutex in `Sandbox`.
#[derive(Default)]
pub(crate) struct Store {
    codes: HashMap<String, Code>,
    grants: HashMap<u64, Grant>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    /// Access tokens left after the last pruning: the next prune waits until there are twice
    /// as many, so pruning costs O(1) per token issued, not a scan of every token each time (a
    /// million connections' refreshes would otherwise each scan a million tokens).
    access_after_prune: usize,
    next_grant: u64,
    pub stats: Stats,
    /// Data-API requests in flight per `Authorization` header value (for
    /// [`Stats::max_data_requests_in_flight_per_token`]); entries leave at zero.
    pub in_flight: HashMap<String, u64>,
}

impl Store {
    /// Issues a code after consent.
    pub fn issue_code(&mut self, request: &AuthRequest, user: &str, now: DateTime<Utc>) -> String {
        // Forget long-dead codes so a long benchmark does not grow without bound; a replay that
        // late fails anyway (unknown code).
        self.codes
            .retain(|_, c| c.expires_at + TimeDelta::minutes(10) > now);
        let code = random_token(32, 32);
        self.codes.insert(
            code.clone(),
            Code {
                request: request.clone(),
                user: user.to_owned(),
                expires_at: now + CODE_TTL,
                redeemed: None,
            },
        );
        self.stats.of_mut(request.flavor).authorizations += 1;
        code
    }

    /// Exchanges a code (RFC 6749 §4.1.3 with PKCE, RFC 7636 §4.6).
    pub fn exchange_code(
        &mut self,
        flavor: Flavor,
        presented: &CodeRedemption<'_>,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Result<Issued, GrantError> {
        let result = self.try_exchange(flavor, presented, now, ttl);
        self.count(flavor, &result, |s| s.code_exchanges += 1);
        result
    }

    fn try_exchange(
        &mut self,
        flavor: Flavor,
        presented: &CodeRedemption<'_>,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Result<Issued, GrantError> {
        let CodeRedemption {
            client_id,
            code,
            redirect_uri,
            verifier,
        } = *presented;
        let entry = self.codes.get(code).ok_or(GrantError::InvalidGrant)?;
        if entry.request.flavor != flavor || entry.request.client_id != client_id {
            return Err(GrantError::InvalidGrant);
        }
        if let Some(grant) = entry.redeemed {
            // RFC 6749 §4.1.2: a code used twice revokes what it issued.
            self.stats.of_mut(flavor).code_replays += 1;
            self.revoke_grant(grant);
            return Err(GrantError::InvalidGrant);
        }
        let valid = now < entry.expires_at
            && entry.request.redirect_uri == redirect_uri
            && s256(verifier) == entry.request.code_challenge;
        if !valid {
            return Err(GrantError::InvalidGrant);
        }
        let user = entry.user.clone();
        let scope = entry.request.scope.clone();
        let grant_id = self.next_grant;
        self.next_grant += 1;
        if let Some(entry) = self.codes.get_mut(code) {
            entry.redeemed = Some(grant_id);
        }
        let grant = Grant {
            flavor,
            client_id: client_id.to_owned(),
            user,
            scope: scope.clone(),
            revoked: false,
        };
        self.grants.insert(grant_id, grant);
        Ok(self.issue_tokens(grant_id, flavor, &scope, now, ttl))
    }

    /// A refresh-token grant with rotation and reuse detection (RFC 9700 §4.14.2).
    pub fn refresh(
        &mut self,
        flavor: Flavor,
        client_id: &str,
        token: &str,
        scope: Option<&str>,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Result<Issued, GrantError> {
        let result = self.try_refresh(flavor, client_id, token, scope, now, ttl);
        self.count(flavor, &result, |s| {
            s.refreshes += 1;
            s.rotations += 1;
        });
        result
    }

    fn try_refresh(
        &mut self,
        flavor: Flavor,
        client_id: &str,
        token: &str,
        scope: Option<&str>,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Result<Issued, GrantError> {
        let rt = self.refresh.get(token).ok_or(GrantError::InvalidGrant)?;
        let grant_id = rt.grant;
        let rotated = rt.rotated;
        let grant = self.grants.get(&grant_id).ok_or(GrantError::InvalidGrant)?;
        if grant.flavor != flavor || grant.client_id != client_id || grant.revoked {
            return Err(GrantError::InvalidGrant);
        }
        if rotated {
            self.stats.of_mut(flavor).reuse_detections += 1;
            self.revoke_grant(grant_id);
            return Err(GrantError::InvalidGrant);
        }
        let granted: Vec<&str> = grant.scope.split(' ').collect();
        let scope = match scope {
            None => grant.scope.clone(),
            Some(s) if s.split(' ').all(|x| granted.contains(&x)) => s.to_owned(),
            Some(_) => return Err(GrantError::InvalidScope),
        };
        if let Some(rt) = self.refresh.get_mut(token) {
            rt.rotated = true;
        }
        Ok(self.issue_tokens(grant_id, flavor, &scope, now, ttl))
    }

    fn issue_tokens(
        &mut self,
        grant: u64,
        flavor: Flavor,
        scope: &str,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Issued {
        // Drop access tokens dead for a day; they would only answer 401 anyway.
        if self.access.len() >= (2 * self.access_after_prune).max(1024) {
            self.access
                .retain(|_, a| a.expires_at + TimeDelta::days(1) > now);
            self.access_after_prune = self.access.len();
        }
        let access_token = match flavor {
            // JWT-shaped but opaque, like Dexcom's; lengths vary so clients cannot assume one.
            Flavor::Cgm => format!(
                "{}.{}.{}",
                random_token(18, 30),
                random_token(60, 200),
                random_token(32, 43)
            ),
            Flavor::Pump => random_token(24, 64),
        };
        self.access.insert(
            access_token.clone(),
            AccessToken {
                grant,
                scope: scope.to_owned(),
                expires_at: now + ttl,
            },
        );
        let offline = scope.split(' ').any(|s| s == OFFLINE_ACCESS);
        let refresh_token = offline.then(|| {
            let token = random_token(32, 80);
            self.refresh.insert(
                token.clone(),
                RefreshToken {
                    grant,
                    rotated: false,
                },
            );
            token
        });
        Issued {
            access_token,
            refresh_token,
            expires_in: ttl.num_seconds(),
            scope: scope.to_owned(),
        }
    }

    /// **Development only** (benchmark seeding): creates a grant for `user` without the
    /// consent and code exchange, and issues an access token living `ttl` (plus a refresh
    /// token). Unlike [`Store::exchange_code`] it does not sweep dead access tokens, so seeding
    /// many grants stays linear.
    pub fn seed_grant(
        &mut self,
        flavor: Flavor,
        client_id: &str,
        user: &str,
        scope: &str,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> (String, String) {
        let grant = self.next_grant;
        self.next_grant += 1;
        self.grants.insert(
            grant,
            Grant {
                flavor,
                client_id: client_id.to_owned(),
                user: user.to_owned(),
                scope: scope.to_owned(),
                revoked: false,
            },
        );
        let access_token = random_token(24, 40);
        self.access.insert(
            access_token.clone(),
            AccessToken {
                grant,
                scope: scope.to_owned(),
                expires_at: now + ttl,
            },
        );
        let refresh_token = random_token(32, 40);
        self.refresh.insert(
            refresh_token.clone(),
            RefreshToken {
                grant,
                rotated: false,
            },
        );
        (access_token, refresh_token)
    }

    /// RFC 7009 revocation: records the call; a refresh or access token issued to this client
    /// revokes its whole grant. Unknown tokens are fine (the caller answers 200 regardless).
    pub fn revoke(
        &mut self,
        flavor: Flavor,
        client_id: &str,
        token: &str,
        hint: Option<&str>,
        now: DateTime<Utc>,
    ) {
        let found = if let Some(rt) = self.refresh.get(token) {
            Some(("refresh_token", rt.grant))
        } else {
            self.access.get(token).map(|a| ("access_token", a.grant))
        };
        let owned = found.filter(|(_, g)| {
            self.grants
                .get(g)
                .is_some_and(|g| g.flavor == flavor && g.client_id == client_id)
        });
        let revoked_grant = owned.is_some_and(|(_, g)| self.revoke_grant(g));
        let stats = self.stats.of_mut(flavor);
        stats.revocations += 1;
        stats.recent_revocations.push_back(RevocationCall {
            at: now,
            token_type_hint: hint.map(str::to_owned),
            token_kind: owned.map(|(k, _)| k.to_owned()),
            revoked_grant,
        });
        while stats.recent_revocations.len() > RECENT_REVOCATIONS {
            stats.recent_revocations.pop_front();
        }
    }

    /// Partner-side revocation of every grant of `user`; returns how many were live.
    pub fn revoke_user(&mut self, flavor: Flavor, user: &str) -> u64 {
        let ids: Vec<u64> = self
            .grants
            .iter()
            .filter(|(_, g)| g.flavor == flavor && g.user == user && !g.revoked)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.revoke_grant(*id);
        }
        self.stats.of_mut(flavor).partner_revocations += ids.len() as u64;
        ids.len() as u64
    }

    /// Checks a bearer token for the data API of `flavor`.
    pub fn authenticate(
        &self,
        flavor: Flavor,
        token: &str,
        now: DateTime<Utc>,
    ) -> Option<Principal> {
        let at = self.access.get(token)?;
        let grant = self.grants.get(&at.grant)?;
        (grant.flavor == flavor && !grant.revoked && now < at.expires_at).then(|| Principal {
            user: grant.user.clone(),
            scope: at.scope.clone(),
        })
    }

    /// A snapshot of the counters, with live grants counted now.
    pub fn snapshot(&self) -> Stats {
        let mut stats = self.stats.clone();
        for flavor in [Flavor::Cgm, Flavor::Pump] {
            stats.of_mut(flavor).live_grants = self
                .grants
                .values()
                .filter(|g| g.flavor == flavor && !g.revoked)
                .count() as u64;
        }
        stats
    }

    /// Marks a grant revoked; true if it was live.
    fn revoke_grant(&mut self, id: u64) -> bool {
        match self.grants.get_mut(&id) {
            Some(g) if !g.revoked => {
                g.revoked = true;
                let flavor = g.flavor;
                self.stats.of_mut(flavor).revoked_grants += 1;
                true
            }
            _ => false,
        }
    }

    fn count<T>(
        &mut self,
        flavor: Flavor,
        result: &Result<T, GrantError>,
        ok: impl FnOnce(&mut crate::stats::FlavorStats),
    ) {
        let stats = self.stats.of_mut(flavor);
        match result {
            Ok(_) => ok(stats),
            Err(GrantError::InvalidGrant) => stats.invalid_grants += 1,
            Err(GrantError::InvalidScope) => {}
        }
    }
}

/// PKCE S256 (RFC 7636 §4.2): base64url(SHA-256(verifier)), no padding.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// base64url of a random number of random bytes in `[min, max]`.
fn random_token(min: usize, max: usize) -> String {
    let mut rng = rand::rng();
    let mut bytes = vec![0u8; rng.random_range(min..=max)];
    rng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
#[path = "oauth_tests.rs"]
mod tests;
