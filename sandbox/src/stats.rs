//! Counters that let tests observe the partner side: rotations, reuse detection, revocation
//! calls, data requests. Served as JSON by `GET /admin/stats`.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Flavor;

/// How many revoke-endpoint calls `recent_revocations` keeps per flavor.
pub const RECENT_REVOCATIONS: usize = 50;

/// One call to a revocation endpoint. The token itself is never recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationCall {
    /// Sandbox clock at the call.
    pub at: DateTime<Utc>,
    /// The `token_type_hint` sent, if any.
    pub token_type_hint: Option<String>,
    /// What the token turned out to be: `refresh_token`, `access_token`, or `None` if unknown
    /// (or issued to another client).
    pub token_kind: Option<String>,
    /// True when the call revoked a live grant.
    pub revoked_grant: bool,
}

/// Counters of one partner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlavorStats {
    /// Authorization codes issued (consent allowed or auto-consent).
    pub authorizations: u64,
    /// Consents denied by the user.
    pub denials: u64,
    /// Successful code exchanges.
    pub code_exchanges: u64,
    /// Codes presented a second time (each revoked the grant issued from the code).
    pub code_replays: u64,
    /// Successful refresh-token grants.
    pub refreshes: u64,
    /// Refresh tokens replaced by a new one.
    pub rotations: u64,
    /// Rotated refresh tokens presented again (each revoked its grant).
    pub reuse_detections: u64,
    /// Token-endpoint answers `invalid_grant`.
    pub invalid_grants: u64,
    /// Calls to the revocation endpoint.
    pub revocations: u64,
    /// Grants revoked for any reason (revocation, replay, reuse, partner side).
    pub revoked_grants: u64,
    /// Grants revoked partner-side (admin `revoke_user`).
    pub partner_revocations: u64,
    /// Requests to the data API (including rejected ones).
    pub data_requests: u64,
    /// Grants currently live.
    pub live_grants: u64,
    /// Latest revocation-endpoint calls, oldest first.
    pub recent_revocations: VecDeque<RevocationCall>,
}

/// Counters of both partners.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub cgm: FlavorStats,
    pub pump: FlavorStats,
    /// Requests answered by an injected fault (5xx, 429, 503, malformed body).
    pub faults_injected: u64,
    /// The most data-API requests ever in flight at once with one `Authorization` header (one
    /// access token: one connection), from arrival to response, latency included. A client
    /// that runs at most one transfer per connection at a time, sending its requests one
    /// after another, keeps it at 1 (tests of concurrent workers read it).
    #[serde(default)]
    pub max_data_requests_in_flight_per_token: u64,
}

impl Stats {
    /// The counters of one partner.
    pub fn of(&self, flavor: Flavor) -> &FlavorStats {
        match flavor {
            Flavor::Cgm => &self.cgm,
            Flavor::Pump => &self.pump,
        }
    }

    pub(crate) fn of_mut(&mut self, flavor: Flavor) -> &mut FlavorStats {
        match flavor {
            Flavor::Cgm => &mut self.cgm,
            Flavor::Pump => &mut self.pump,
        }
    }
}
