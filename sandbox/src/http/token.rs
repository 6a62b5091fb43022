//! Token endpoint (RFC 6749 §3.2, §4.1.3, §6) and revocation endpoint (RFC 7009), both with
//! strict client authentication: only the registered method is accepted.

use base64::{Engine, engine::general_purpose::STANDARD};
use poem::{
    Request, Response,
    http::{HeaderValue, StatusCode, header},
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{FormError, Params, error_json, json, read_form};
use crate::{
    ClientAuthMethod, ClientRegistration, Flavor, Sandbox,
    oauth::{CodeRedemption, GrantError, Issued},
};

/// `POST` token endpoint.
pub(crate) async fn token(sb: Sandbox, flavor: Flavor, mut req: Request) -> Response {
    let (params, client) = match authenticated_form(&sb, flavor, &mut req).await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let now = sb.now();
    let ttl = sb.access_ttl();
    let result = match params.get("grant_type") {
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required.",
            );
        }
        Some("authorization_code") => {
            let (Some(code), Some(redirect_uri), Some(verifier)) = (
                params.get("code"),
                params.get("redirect_uri"),
                params.get("code_verifier"),
            ) else {
                let msg = "code, redirect_uri and code_verifier are required.";
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", msg);
            };
            let presented = CodeRedemption {
                client_id: &client.client_id,
                code,
                redirect_uri,
                verifier,
            };
            sb.store().exchange_code(flavor, &presented, now, ttl)
        }
        Some("refresh_token") => {
            let Some(refresh) = params.get("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is required.",
                );
            };
            sb.store().refresh(
                flavor,
                &client.client_id,
                refresh,
                params.get("scope"),
                now,
                ttl,
            )
        }
        Some(_) => {
            let msg = "Only authorization_code and refresh_token are supported.";
            return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", msg);
        }
    };
    match result {
        Ok(issued) => no_store(json(StatusCode::OK, &token_body(flavor, &issued))),
        // Generic descriptions: clients must branch on `error` only.
        Err(GrantError::InvalidGrant) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The grant is invalid, expired or revoked.",
        ),
        Err(GrantError::InvalidScope) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "The scope exceeds the grant.",
        ),
    }
}

/// `POST` revocation endpoint: 200 for any token once the client is authenticated.
pub(crate) async fn revoke(sb: Sandbox, flavor: Flavor, mut req: Request) -> Response {
    let (params, client) = match authenticated_form(&sb, flavor, &mut req).await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let Some(token) = params.get("token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required.",
        );
    };
    let now = sb.now();
    sb.store().revoke(
        flavor,
        &client.client_id,
        token,
        params.get("token_type_hint"),
        now,
    );
    Response::builder().status(StatusCode::OK).finish()
}

/// The token response. The CGM adds the extra fields of Dexcom's documented example, so a
/// client that does not ignore unknown fields fails here rather than in production.
fn token_body(flavor: Flavor, issued: &Issued) -> serde_json::Value {
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    });
    if let Some(rt) = &issued.refresh_token {
        body["refresh_token"] = json!(rt);
    }
    if flavor == Flavor::Cgm {
        body["refresh_expires_in"] = json!(31_536_000);
        body["not-before-policy"] = json!(0);
        body["session_state"] = json!(uuid::Uuid::new_v4().to_string());
    }
    body
}

/// Reads the form and authenticates the client with its registered method.
async fn authenticated_form(
    sb: &Sandbox,
    flavor: Flavor,
    req: &mut Request,
) -> Result<(Params, ClientRegistration), Response> {
    let params = read_form(req).await.map_err(|e| {
        let msg = match e {
            FormError::ContentType => "The body must be application/x-www-form-urlencoded.",
            FormError::Body => "The body could not be read.",
        };
        oauth_error(StatusCode::BAD_REQUEST, "invalid_request", msg)
    })?;
    if let Some(name) = params.first_repeated() {
        let msg = format!("Parameter {name} is repeated.");
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &msg,
        ));
    }
    let basic = req.header(header::AUTHORIZATION.as_str()).map(parse_basic);
    let client = authenticate(sb, flavor, basic, &params).map_err(AuthFailure::into_response)?;
    Ok((params, client))
}

/// Why client authentication failed.
enum AuthFailure {
    /// RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
    TwoMethods,
    /// Unknown client, wrong secret or wrong method; `basic` adds `WWW-Authenticate`.
    Invalid { basic: bool },
}

impl AuthFailure {
    fn into_response(self) -> Response {
        match self {
            AuthFailure::TwoMethods => {
                let msg = "Use exactly one client authentication method.";
                oauth_error(StatusCode::BAD_REQUEST, "invalid_request", msg)
            }
            AuthFailure::Invalid { basic } => invalid_client(basic),
        }
    }
}

fn authenticate(
    sb: &Sandbox,
    flavor: Flavor,
    basic: Option<Option<(String, String)>>,
    params: &Params,
) -> Result<ClientRegistration, AuthFailure> {
    let body_secret = params.get("client_secret");
    let (id, secret, method) = match (basic, body_secret) {
        (Some(_), Some(_)) => return Err(AuthFailure::TwoMethods),
        (Some(None), None) => return Err(AuthFailure::Invalid { basic: true }),
        (Some(Some((id, secret))), None) => {
            if params.get("client_id").is_some_and(|body_id| body_id != id) {
                return Err(AuthFailure::Invalid { basic: true });
            }
            (id, secret, ClientAuthMethod::Basic)
        }
        (None, Some(secret)) => {
            let id = params
                .get("client_id")
                .ok_or(AuthFailure::Invalid { basic: false })?;
            (id.to_owned(), secret.to_owned(), ClientAuthMethod::Post)
        }
        (None, None) => return Err(AuthFailure::Invalid { basic: false }),
    };
    let basic = method == ClientAuthMethod::Basic;
    sb.config()
        .client(flavor, &id)
        .filter(|c| c.auth_method == method && same_secret(&c.client_secret, &secret))
        .cloned()
        .ok_or(AuthFailure::Invalid { basic })
}

/// Compares digests so the comparison time does not depend on how much of the secret matches.
fn same_secret(expected: &str, given: &str) -> bool {
    Sha256::digest(expected.as_bytes()) == Sha256::digest(given.as_bytes())
}

/// `Some(None)` when the header is present but not valid Basic credentials.
fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded before being joined.
    Some((form_decode(id)?, form_decode(secret)?))
}

fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn invalid_client(basic: bool) -> Response {
    let mut resp = oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "Client authentication failed.",
    );
    if basic {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sandbox\""),
        );
    }
    resp
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    no_store(error_json(status, code, description))
}

/// RFC 6749 §5.1: token responses must not be cached.
fn no_store(mut resp: Response) -> Response {
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = format!("Basic {}", STANDARD.encode("my%20id:s%3Acret+x"));
        assert_eq!(
            parse_basic(&header),
            Some(("my id".into(), "s:cret x".into()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(form_decode("%zz"), None);
    }
}
