//! Authorization endpoint and consent page (RFC 6749 §4.1.1–4.1.2, RFC 7636, RFC 9207).
//!
//! An unknown client or unregistered redirect URI gets a 400 page and no redirect (redirecting
//! would make the sandbox an open redirector). Every other problem is reported to the client
//! by redirect, with `state` echoed and, for the pump, `iss`.

use poem::{Request, Response, http::StatusCode};
use url::Url;

use super::{Params, escape, html, read_form, redirect};
use crate::{Flavor, OFFLINE_ACCESS, PUMP_READ_SCOPE, Sandbox, oauth::AuthRequest};

/// Parameters carried from the authorization request through the consent form.
const CARRIED: [&str; 7] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// Why an authorization request is refused.
enum Rejection {
    /// Client or redirect URI cannot be trusted: show an error page.
    Page(&'static str),
    /// Tell the client via its redirect URI.
    Redirect {
        uri: String,
        state: Option<String>,
        error: &'static str,
        description: &'static str,
    },
}

/// `GET` authorization endpoint: consent page, or with auto-consent an immediate redirect.
pub(crate) async fn login(sb: Sandbox, flavor: Flavor, req: Request) -> Response {
    let params = Params::query(&req);
    let request = match validate(&sb, flavor, &params) {
        Ok(r) => r,
        Err(rejection) => return reject(&sb, flavor, rejection),
    };
    match sb.config().auto_consent_user.clone() {
        Some(user) => approve(&sb, &request, &user),
        None => html(StatusCode::OK, page(&sb, &request, None)),
    }
}

/// `POST` from the consent form: `user`, `decision=allow|deny`, and the carried parameters.
pub(crate) async fn consent(sb: Sandbox, flavor: Flavor, mut req: Request) -> Response {
    let Ok(params) = read_form(&mut req).await else {
        return error_page("The consent form must be posted as application/x-www-form-urlencoded.");
    };
    let request = match validate(&sb, flavor, &params) {
        Ok(r) => r,
        Err(rejection) => return reject(&sb, flavor, rejection),
    };
    match params.get("decision") {
        Some("deny") => {
            sb.store().stats.of_mut(flavor).denials += 1;
            let state = Some(request.state.clone());
            let rejection = Rejection::Redirect {
                uri: request.redirect_uri,
                state,
                error: "access_denied",
                description: "The user denied access.",
            };
            reject(&sb, flavor, rejection)
        }
        Some("allow") => match params.get("user").map(str::trim) {
            Some(user) if valid_user(user) => approve(&sb, &request, user),
            _ => {
                let msg = "Enter a partner user name (1 to 64 printable characters).";
                html(StatusCode::BAD_REQUEST, page(&sb, &request, Some(msg)))
            }
        },
        _ => error_page("The consent form needs decision=allow or decision=deny."),
    }
}

fn valid_user(user: &str) -> bool {
    !user.is_empty() && user.chars().count() <= 64 && !user.chars().any(char::is_control)
}

/// Issues a code and redirects back with `code`, `state` (and `iss` for the pump).
fn approve(sb: &Sandbox, request: &AuthRequest, user: &str) -> Response {
    let code = sb.store().issue_code(request, user, sb.now());
    let mut pairs = vec![("code", code.as_str()), ("state", request.state.as_str())];
    let issuer = sb.issuer(request.flavor);
    if let Some(iss) = &issuer {
        pairs.push(("iss", iss));
    }
    redirect(&with_query(&request.redirect_uri, &pairs))
}

fn reject(sb: &Sandbox, flavor: Flavor, rejection: Rejection) -> Response {
    match rejection {
        Rejection::Page(message) => error_page(message),
        Rejection::Redirect {
            uri,
            state,
            error,
            description,
        } => {
            let mut pairs = vec![("error", error), ("error_description", description)];
            if let Some(state) = &state {
                pairs.push(("state", state));
            }
            let issuer = sb.issuer(flavor);
            if let Some(iss) = &issuer {
                pairs.push(("iss", iss));
            }
            redirect(&with_query(&uri, &pairs))
        }
    }
}

/// Appends parameters to a registered redirect URI, keeping its own query.
fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = Url::parse(uri).expect("registered redirect URIs are absolute URLs");
    url.query_pairs_mut().extend_pairs(pairs);
    url.into()
}

/// Checks an authorization request against the registration and the strict rules.
fn validate(sb: &Sandbox, flavor: Flavor, params: &Params) -> Result<AuthRequest, Rejection> {
    let client = match params.get("client_id") {
        Some(id) if !params.is_repeated("client_id") => sb.config().client(flavor, id),
        _ => None,
    }
    .ok_or(Rejection::Page("Unknown client_id."))?;
    let redirect_uri = params
        .get("redirect_uri")
        .filter(|_| !params.is_repeated("redirect_uri"))
        // Byte-identical comparison (RFC 9700 §4.1.3): no normalization, no prefix matching.
        .filter(|uri| client.redirect_uris.iter().any(|r| r == uri) && Url::parse(uri).is_ok())
        .ok_or(Rejection::Page(
            "redirect_uri is not registered for this client.",
        ))?
        .to_owned();
    let state = params.get("state").filter(|_| !params.is_repeated("state"));
    let fail = |error, description| Rejection::Redirect {
        uri: redirect_uri.clone(),
        state: state.map(str::to_owned),
        error,
        description,
    };
    if params.first_repeated().is_some() {
        return Err(fail("invalid_request", "A parameter is repeated."));
    }
    let state = state.ok_or_else(|| fail("invalid_request", "state is required."))?;
    match params.get("response_type") {
        None => return Err(fail("invalid_request", "response_type is required.")),
        Some("code") => {}
        Some(_) => {
            return Err(fail(
                "unsupported_response_type",
                "Only response_type=code is supported.",
            ));
        }
    }
    if params.get("code_challenge_method") != Some("S256") {
        return Err(fail(
            "invalid_request",
            "PKCE with code_challenge_method=S256 is required.",
        ));
    }
    let challenge = params
        .get("code_challenge")
        .filter(|c| {
            c.len() == 43
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .ok_or_else(|| {
            fail(
                "invalid_request",
                "code_challenge must be a base64url SHA-256 (43 chars).",
            )
        })?;
    let scope = normalize_scope(flavor, params.get("scope"))
        .ok_or_else(|| fail("invalid_scope", "Unknown scope requested."))?;
    Ok(AuthRequest {
        flavor,
        client_id: client.client_id.clone(),
        redirect_uri,
        scope,
        state: state.to_owned(),
        code_challenge: challenge.to_owned(),
    })
}

/// The granted scope string: the requested known scopes in canonical order, or all of the
/// partner's scopes when none are requested. `None` for an unknown scope.
fn normalize_scope(flavor: Flavor, requested: Option<&str>) -> Option<String> {
    let known: &[&str] = match flavor {
        Flavor::Cgm => &[OFFLINE_ACCESS],
        Flavor::Pump => &[PUMP_READ_SCOPE, OFFLINE_ACCESS],
    };
    let Some(requested) = requested else {
        return Some(known.join(" "));
    };
    let asked: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
    if asked.iter().any(|s| !known.contains(s)) {
        return None;
    }
    let granted: Vec<&str> = known
        .iter()
        .copied()
        .filter(|k| asked.contains(k))
        .collect();
    Some(granted.join(" "))
}

fn error_page(message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><title>Authorization error</title></head><body>\
         <h1>Authorization error</h1><p>{}</p></body></html>",
        escape(message)
    );
    html(StatusCode::BAD_REQUEST, body)
}

/// The consent page: a user-name field, Allow and Deny, and the request in hidden fields.
fn page(sb: &Sandbox, request: &AuthRequest, error: Option<&str>) -> String {
    let (partner, path) = match request.flavor {
        Flavor::Cgm => ("Sandbox CGM (Dexcom-like)", "/cgm/v2/oauth2/consent"),
        Flavor::Pump => ("Sandbox Pump", "/pump/oauth/consent"),
    };
    let action = format!(
        "{}{path}",
        sb.config().public_base_url.as_str().trim_end_matches('/')
    );
    let values = [
        request.client_id.as_str(),
        request.redirect_uri.as_str(),
        "code",
        request.scope.as_str(),
        request.state.as_str(),
        request.code_challenge.as_str(),
        "S256",
    ];
    let hidden: String = CARRIED
        .iter()
        .zip(values)
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                escape(value)
            )
        })
        .collect();
    let error = error
        .map(|e| format!("<p class=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{partner}: authorize</title></head>\n\
         <body><h1>{partner}</h1>\n<p><b>{client}</b> asks to read your data (scope: <code>{scope}</code>).</p>\n\
         {error}<form method=\"post\" action=\"{action}\">\n{hidden}\
         <label>Partner user name <input type=\"text\" name=\"user\" autofocus></label>\n\
         <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\n\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\n</form>\n\
         <p><small>Development sandbox: any user name works; data are synthetic.</small></p></body></html>\n",
        client = escape(&request.client_id),
        scope = escape(&request.scope),
        action = escape(&action),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_checked_and_normalized() {
        assert_eq!(
            normalize_scope(Flavor::Cgm, None).unwrap(),
            "offline_access"
        );
        assert_eq!(
            normalize_scope(Flavor::Cgm, Some("offline_access")).unwrap(),
            "offline_access"
        );
        assert!(normalize_scope(Flavor::Cgm, Some("offline_access egv")).is_none());
        let pump = normalize_scope(Flavor::Pump, Some("offline_access  pump.read")).unwrap();
        assert_eq!(pump, "pump.read offline_access");
    }
}
