//! HTTP surface: the route table and small helpers shared by the handlers. Handlers are plain
//! `async fn(Sandbox, Request) -> Response` so every rejection is shaped by us (OAuth JSON,
//! HTML pages), never by a framework extractor's default error.

mod admin;
mod authorize;
mod cgm_api;
mod cursor;
mod guard;
mod pump_api;
mod token;

use std::{collections::BTreeMap, future::Future};

use poem::{
    Endpoint, Request, Response, Route, get,
    http::{StatusCode, header},
    post,
};
use serde::Serialize;

use self::guard::Guard;
use crate::{Flavor, Sandbox, faults::EndpointClass};

/// Largest request body read (forms are tiny; this bounds a misbehaving client).
const BODY_LIMIT: usize = 64 * 1024;

pub(crate) fn routes(sb: &Sandbox) -> Route {
    use EndpointClass::{Authorize, Data, Revoke, Token};
    use Flavor::{Cgm, Pump};
    Route::new()
        .at("/", get(ep(sb, admin::index)))
        .at(
            "/cgm/v2/oauth2/login",
            get(Guard::new(
                sb,
                Authorize,
                ep(sb, |s, r| authorize::login(s, Cgm, r)),
            )),
        )
        .at(
            "/cgm/v2/oauth2/consent",
            post(Guard::new(
                sb,
                Authorize,
                ep(sb, |s, r| authorize::consent(s, Cgm, r)),
            )),
        )
        .at(
            "/cgm/v2/oauth2/token",
            post(Guard::new(
                sb,
                Token,
                ep(sb, |s, r| token::token(s, Cgm, r)),
            )),
        )
        .at(
            "/cgm/v2/oauth2/revoke",
            post(Guard::new(
                sb,
                Revoke,
                ep(sb, |s, r| token::revoke(s, Cgm, r)),
            )),
        )
        .at(
            "/cgm/v3/users/self/:kind",
            get(Guard::new(sb, Data, ep(sb, cgm_api::handle))),
        )
        .at(
            "/pump/oauth/authorize",
            get(Guard::new(
                sb,
                Authorize,
                ep(sb, |s, r| authorize::login(s, Pump, r)),
            )),
        )
        .at(
            "/pump/oauth/consent",
            post(Guard::new(
                sb,
                Authorize,
                ep(sb, |s, r| authorize::consent(s, Pump, r)),
            )),
        )
        .at(
            "/pump/oauth/token",
            post(Guard::new(
                sb,
                Token,
                ep(sb, |s, r| token::token(s, Pump, r)),
            )),
        )
        .at(
            "/pump/oauth/revoke",
            post(Guard::new(
                sb,
                Revoke,
                ep(sb, |s, r| token::revoke(s, Pump, r)),
            )),
        )
        .at(
            "/pump/v1/users/self/:kind",
            get(Guard::new(sb, Data, ep(sb, pump_api::handle))),
        )
        .at(
            "/admin/faults",
            get(ep(sb, admin::get_faults))
                .put(ep(sb, admin::put_faults))
                .patch(ep(sb, admin::patch_faults))
                .delete(ep(sb, admin::delete_faults)),
        )
        .at(
            "/admin/users/:flavor/:user/revoke",
            post(ep(sb, admin::revoke_user)),
        )
        .at(
            "/admin/clock",
            get(ep(sb, admin::get_clock)).put(ep(sb, admin::put_clock)),
        )
        .at("/admin/stats", get(ep(sb, admin::stats)))
}

/// An endpoint from a handler that receives the sandbox and the request.
fn ep<F, Fut>(sb: &Sandbox, f: F) -> impl Endpoint<Output = Response> + 'static
where
    F: Fn(Sandbox, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let sb = sb.clone();
    poem::endpoint::make(move |req| f(sb.clone(), req))
}

/// Decoded query or form parameters. OAuth forbids repeating a parameter (RFC 6749 §3.1), so
/// repeated names are kept aside for the handler to reject.
#[derive(Debug, Default)]
pub(crate) struct Params {
    map: BTreeMap<String, String>,
    repeated: Vec<String>,
}

impl Params {
    pub fn parse(raw: &str) -> Self {
        let mut params = Params::default();
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            if params.map.contains_key(k.as_ref()) {
                params.repeated.push(k.into_owned());
            } else {
                params.map.insert(k.into_owned(), v.into_owned());
            }
        }
        params
    }

    pub fn query(req: &Request) -> Self {
        Params::parse(req.uri().query().unwrap_or(""))
    }

    /// A non-empty value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn is_repeated(&self, name: &str) -> bool {
        self.repeated.iter().any(|r| r == name)
    }

    pub fn first_repeated(&self) -> Option<&str> {
        self.repeated.first().map(String::as_str)
    }
}

/// Why a form body could not be read.
pub(crate) enum FormError {
    /// Not `application/x-www-form-urlencoded`.
    ContentType,
    /// Unreadable, too large, or not UTF-8.
    Body,
}

/// Reads a form-encoded body.
pub(crate) async fn read_form(req: &mut Request) -> Result<Params, FormError> {
    let is_form = req
        .content_type()
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| {
            ct.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(FormError::ContentType);
    }
    let bytes = req
        .take_body()
        .into_bytes_limit(BODY_LIMIT)
        .await
        .map_err(|_| FormError::Body)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| FormError::Body)?;
    Ok(Params::parse(text))
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).expect("our response types serialize");
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(bytes)
}

/// `{"error": code, "error_description": description}`.
pub(crate) fn error_json(status: StatusCode, code: &str, description: &str) -> Response {
    json(
        status,
        &serde_json::json!({ "error": code, "error_description": description }),
    )
}

/// An HTML page.
pub(crate) fn html(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// A 302 to `location`.
pub(crate) fn redirect(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .finish()
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
