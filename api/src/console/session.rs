//! Signing in to the console (docs/console.md#console): an `ops` bearer token, typed once
//! into the sign-in form, is kept in a cookie (`HttpOnly`, `SameSite=Strict`, `Path=/ops`,
//! `Secure` when the public URL is `https`) that holds the token itself, so there is no
//! server-side session to store or share between processes, and the cookie lives exactly as
//! long as the token. Every request verifies it as the API verifies a bearer token.
//!
//! Forms that change anything carry a CSRF token: HMAC-SHA256 of the cookie's value under a
//! key derived from the JWT secret, checked in constant time on every `POST`. A `POST` whose
//! `Origin` header is present and not the server's own is refused before anything else. The
//! token is never logged, never put in a URL and never written into a page.

use hmac::{Hmac, Mac as _};
use poem::{
    Request, Response,
    http::{StatusCode, header},
    web::{Data, Form},
};
use serde::Deserialize;
use sha2::Sha256;

use super::{
    BASE, Console,
    html::{self, esc},
};
use crate::auth::{Claims, Role};

/// The cookie's name.
pub const COOKIE: &str = "tributary_ops";

/// A signed-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    claims: Claims,
    csrf: String,
}

impl Session {
    pub fn subject(&self) -> &str {
        &self.claims.sub
    }

    /// The journal's actor: `ops:<subject>`.
    pub fn actor(&self) -> engine::model::Actor {
        engine::model::Actor::new(self.claims.role.as_str(), &self.claims.sub)
    }

    /// The session's CSRF token (also what binds other sealed values to the session).
    pub fn csrf_value(&self) -> &str {
        &self.csrf
    }

    /// The hidden form field every state-changing form carries.
    pub fn csrf_field(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            esc(&self.csrf)
        )
    }

    /// Whether `submitted` is this session's CSRF token (compared in constant time).
    pub fn csrf_ok(&self, submitted: Option<&str>) -> bool {
        let (Some(submitted), Ok(expected)) = (
            submitted.and_then(|s| hex::decode(s).ok()),
            hex::decode(&self.csrf),
        ) else {
            return false;
        };
        expected.len() == submitted.len()
            && expected
                .iter()
                .zip(&submitted)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

fn csrf_token(key: &[u8; 32], cookie: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(b"ops-console-csrf:");
    mac.update(cookie.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Console {
    /// The operator signed in on this request, if any: the cookie's token verified, `ops` role.
    pub fn session(&self, req: &Request) -> Option<Session> {
        let token = cookie(req, COOKIE)?;
        let claims = self.jwt.verify(token).ok()?;
        (claims.role == Role::Ops).then(|| Session {
            claims,
            csrf: csrf_token(&self.csrf_key, token),
        })
    }

    /// Whether a `POST` may be served: no `Origin`, or the server's own (the public URL's, or
    /// the one the request's `Host` names, for a console opened under another name).
    pub fn origin_ok(&self, req: &Request) -> bool {
        let Some(origin) = req.headers().get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if origin == self.origin {
            return true;
        }
        let scheme = if self.secure { "https" } else { "http" };
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| origin == format!("{scheme}://{host}"))
    }

    fn set_cookie(&self, value: &str, max_age: i64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{COOKIE}={value}; Path={BASE}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
        )
    }
}

/// 403: a form from elsewhere, or without this session's CSRF token. Nothing was done.
pub fn forbidden(session: Option<&Session>) -> Response {
    html::page(
        StatusCode::FORBIDDEN,
        "Refused",
        session,
        "",
        None,
        "<h1>Refused</h1><p>This form did not come from this console, or it has expired \
         (signed in again since). Nothing was changed. Go back, reload the page and try again.</p>",
    )
}

/// Sends a request without a session to the sign-in page.
pub fn to_login() -> Response {
    html::see_other(&format!("{BASE}/login"))
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let error = error.map_or_else(String::new, |e| {
        format!(
            "<p class=\"flash refused\" role=\"alert\" id=\"login-error\">{}</p>",
            esc(e)
        )
    });
    let body = format!(
        "<h1>Sign in</h1>{error}<form class=\"card narrow\" method=\"post\" action=\"{BASE}/login\">\
         <p><label for=\"token\">Operator token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required \
         autofocus spellcheck=\"false\" aria-describedby=\"token-help\"></p>\
         <p id=\"token-help\" class=\"help\">A bearer token with the <code>ops</code> role, e.g. from \
         <code>tributary token --role ops --subject NAME</code>. It is kept in a cookie of this \
         console only, until it expires or you sign out.</p>\
         <p><button type=\"submit\">Sign in</button></p></form>"
    );
    html::page(status, "Sign in", None, "", None, &body)
}

#[poem::handler]
pub fn login_form() -> Response {
    login_page(StatusCode::OK, None)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: Option<String>,
}

#[poem::handler]
pub fn login(
    req: &Request,
    Data(console): Data<&Console>,
    Form(form): Form<LoginForm>,
) -> Response {
    if !console.origin_ok(req) {
        return forbidden(None);
    }
    let token = form.token.as_deref().map(str::trim).unwrap_or_default();
    let claims = match console.jwt.verify(token) {
        Ok(claims) => claims,
        Err(err) => {
            tracing::info!(reason = %err, "console sign-in refused");
            return login_page(
                StatusCode::UNAUTHORIZED,
                Some(
                    "That token is not valid here (expired, malformed or signed for another service).",
                ),
            );
        }
    };
    if claims.role != Role::Ops {
        return login_page(
            StatusCode::FORBIDDEN,
            Some("That token is valid but not an operator's: the console needs the ops role."),
        );
    }
    let max_age = (claims.exp - chrono::Utc::now().timestamp()).max(0);
    let mut response = html::see_other(BASE);
    if let Ok(value) = console.set_cookie(token, max_age).parse() {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

#[poem::handler]
pub fn logout(
    req: &Request,
    Data(console): Data<&Console>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !console.origin_ok(req) {
        return forbidden(None);
    }
    let Some(session) = console.session(req) else {
        return to_login();
    };
    if !session.csrf_ok(form.csrf.as_deref()) {
        return forbidden(Some(&session));
    }
    let mut response = to_login();
    if let Ok(value) = console.set_cookie("", 0).parse() {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
