//! Start-up checks of a partner's configuration: fail at boot, not at a user's first connect.

use engine::schedule::SyncPolicy;
use url::Url;

use super::{
    config::{MAX_MAX_TOKEN_BYTES, MAX_REFRESH_TIMEOUT_SECS, PartnerConfig},
    error::PartnerConfigError,
};

/// The callback path for a partner (one path per partner, so a response can only ever be
/// attributed to the partner whose path it arrived on).
pub fn callback_path(name: &str) -> String {
    format!("/v1/oauth/{name}/callback")
}

/// Checks everything about `config` that can be checked without the network, and returns the
/// sync policy in force (the kind's, with the configured overrides).
pub(crate) fn validate(
    name: &str,
    config: &PartnerConfig,
) -> Result<SyncPolicy, PartnerConfigError> {
    if engine::ids::PartnerName::parse(name).is_err() {
        return Err(PartnerConfigError::InvalidName(name.to_owned()));
    }
    let partner = || name.to_owned();

    let urls = [
        ("authorize_url", Some(&config.authorize_url)),
        ("token_url", Some(&config.token_url)),
        ("revoke_url", config.revoke_url.as_ref()),
        ("redirect_url", Some(&config.redirect_url)),
        ("api_base_url", Some(&config.api_base_url)),
    ];
    for (field, url) in urls {
        if url.is_some_and(|url| !is_plain_http_url(url)) {
            return Err(PartnerConfigError::InvalidUrl {
                partner: partner(),
                field,
            });
        }
    }

    let expected = callback_path(name);
    if config.redirect_url.path() != expected {
        return Err(PartnerConfigError::RedirectPath {
            partner: partner(),
            expected,
            found: config.redirect_url.path().to_owned(),
        });
    }

    if config.client_id.trim().is_empty() {
        return Err(PartnerConfigError::Empty {
            partner: partner(),
            field: "client_id",
        });
    }
    if config.client_secret.expose().is_empty() {
        return Err(PartnerConfigError::Empty {
            partner: partner(),
            field: "client_secret",
        });
    }
    if let Some(scope) = config.scopes.iter().find(|s| !is_scope_token(s)) {
        return Err(PartnerConfigError::InvalidScope {
            partner: partner(),
            scope: scope.clone(),
        });
    }
    if config.request_timeout_secs == 0 {
        return Err(PartnerConfigError::ZeroTimeout { partner: partner() });
    }
    let refresh = config.refresh_timeout().as_secs();
    if refresh < config.request_timeout_secs || refresh > MAX_REFRESH_TIMEOUT_SECS {
        return Err(PartnerConfigError::RefreshTimeout {
            partner: partner(),
            refresh,
            request: config.request_timeout_secs,
            max: MAX_REFRESH_TIMEOUT_SECS,
        });
    }
    if !(1..=MAX_MAX_TOKEN_BYTES).contains(&config.max_token_bytes) {
        return Err(PartnerConfigError::MaxTokenBytes {
            partner: partner(),
            value: config.max_token_bytes,
            max: MAX_MAX_TOKEN_BYTES,
        });
    }
    match &config.issuer {
        Some(issuer) if issuer.is_empty() => {
            return Err(PartnerConfigError::Empty {
                partner: partner(),
                field: "issuer",
            });
        }
        None if config.require_issuer => {
            return Err(PartnerConfigError::IssuerRequiredButMissing { partner: partner() });
        }
        _ => {}
    }
    config
        .sync_policy()
        .map_err(|reason| PartnerConfigError::Sync {
            partner: partner(),
            reason,
        })
}

/// Absolute http(s) with a host, no userinfo (credentials never in URLs,
/// docs/oauth.md#client-authentication), no fragment
/// (RFC 6749 §3.1, §3.1.2).
fn is_plain_http_url(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.fragment().is_none()
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}
