//! What poem's router cannot answer by itself: the `Allow` header of a 405, and paths whose
//! percent-escapes are not UTF-8.

use std::sync::Arc;

use poem::{
    Endpoint, IntoResponse, Request, Response,
    error::MethodNotAllowedError,
    http::{HeaderValue, Method, Uri, header, uri::PathAndQuery},
};
use serde_json::Value;

use crate::problem::Problem;

/// Methods in the order `Allow` lists them.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// Which methods each route answers, for the `Allow` header every 405 carries (RFC 9110
/// §15.5.6). Built from the OpenAPI document, so it lists exactly the documented methods, plus
/// `HEAD` wherever `GET` is (poem answers `HEAD` with the `GET` handler).
#[derive(Debug, Default)]
pub struct AllowedMethods {
    /// Path template segments (`None` for a `{parameter}`) and the methods of that path.
    routes: Vec<(Vec<Option<String>>, Vec<Method>)>,
}

impl AllowedMethods {
    /// The `paths` of an OpenAPI document.
    pub fn from_openapi(document: &Value) -> Self {
        let mut allowed = Self::default();
        for (path, item) in document["paths"].as_object().into_iter().flatten() {
            let methods = item
                .as_object()
                .into_iter()
                .flatten()
                .map(|(m, _)| m.as_str());
            allowed.add(path, methods);
        }
        allowed
    }

    /// Adds a route outside the document (`/openapi.json`).
    pub fn add<'a>(&mut self, template: &str, methods: impl IntoIterator<Item = &'a str>) {
        let segments = template
            .split('/')
            .map(|segment| {
                (!(segment.starts_with('{') && segment.ends_with('}'))).then(|| segment.to_owned())
            })
            .collect();
        let mut listed: Vec<Method> = methods
            .into_iter()
            .filter_map(|m| m.to_ascii_uppercase().parse().ok())
            .collect();
        if listed.contains(&Method::GET) {
            listed.push(Method::HEAD);
        }
        self.routes.push((segments, listed));
    }

    /// The `Allow` value for a request path, if any route matches it.
    pub fn allow(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        let mut methods = Vec::new();
        for (template, listed) in &self.routes {
            let matches = template.len() == segments.len()
                && template.iter().zip(&segments).all(|(t, s)| match t {
                    Some(literal) => literal == s,
                    None => !s.is_empty(),
                });
            if matches {
                methods.extend(listed.iter().cloned());
            }
        }
        let allow: Vec<&str> = METHODS
            .iter()
            .filter(|m| methods.contains(m))
            .map(Method::as_str)
            .collect();
        (!allow.is_empty()).then(|| allow.join(", "))
    }
}

/// A 405 from the router becomes a `method_not_allowed` problem with `Allow`.
pub async fn method_not_allowed<E: Endpoint>(
    endpoint: Arc<E>,
    req: Request,
    allowed: Arc<AllowedMethods>,
) -> poem::Result<Response> {
    let path = req.uri().path().to_owned();
    match endpoint.call(req).await {
        Err(err) if err.is::<MethodNotAllowedError>() => {
            let mut response = Problem::from_error(&err).into_response();
            if let Some(allow) = allowed
                .allow(&path)
                .and_then(|allow| HeaderValue::from_str(&allow).ok())
            {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            Ok(response)
        }
        result => result.map(IntoResponse::into_response),
    }
}

/// Reads a path segment whose percent-escapes are not UTF-8 (`/v1/users/%FF/connections`) as if
/// each bad sequence were U+FFFD. poem's router drops such a segment and answers a plain-text
/// 400 before any route sees it; read this way, the route's own validation answers (a problem
/// for an id, the callback's page for a partner name). [`crate::routes`] applies it; a server
/// that nests those routes under its own router applies it outside that router too.
#[derive(Debug, Default, Clone, Copy)]
pub struct LossyPaths;

impl<E: Endpoint> poem::Middleware<E> for LossyPaths {
    type Output = LossyPathsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        LossyPathsEndpoint { inner }
    }
}

/// The endpoint [`LossyPaths`] wraps.
pub struct LossyPathsEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for LossyPathsEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut req: Request) -> poem::Result<Self::Output> {
        if let Some(uri) = lossy(req.uri().path()).and_then(|path| with_path(req.uri(), &path)) {
            *req.uri_mut() = uri;
        }
        self.inner.call(req).await
    }
}

fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

/// The path with every segment that does not decode to UTF-8 re-encoded lossily; `None` when
/// every segment decodes.
fn lossy(path: &str) -> Option<String> {
    let mut changed = false;
    let segments: Vec<String> = path
        .split('/')
        .map(|segment| {
            let bytes = percent_decode(segment);
            if std::str::from_utf8(&bytes).is_ok() {
                segment.to_owned()
            } else {
                changed = true;
                percent_encode(&String::from_utf8_lossy(&bytes))
            }
        })
        .collect();
    changed.then(|| segments.join("/"))
}

fn percent_decode(segment: &str) -> Vec<u8> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_the_documented_methods() {
        let document = serde_json::json!({"paths": {
            "/v1/users/{userId}/connections": {"get": {}, "post": {}},
            "/v1/connections/{id}/sync": {"post": {}},
            "/healthz": {"get": {}},
        }});
        let mut allowed = AllowedMethods::from_openapi(&document);
        allowed.add("/openapi.json", ["get"]);
        assert_eq!(
            allowed.allow("/v1/users/alice/connections").as_deref(),
            Some("GET, HEAD, POST")
        );
        assert_eq!(
            allowed.allow("/v1/connections/x/sync").as_deref(),
            Some("POST")
        );
        assert_eq!(allowed.allow("/healthz").as_deref(), Some("GET, HEAD"));
        assert_eq!(allowed.allow("/openapi.json").as_deref(), Some("GET, HEAD"));
        for unknown in ["/v1/users//connections", "/v1/connections/x", "/nope", "/"] {
            assert_eq!(allowed.allow(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn invalid_utf8_escapes_become_replacement_characters() {
        assert_eq!(lossy("/v1/users/alice/connections"), None);
        assert_eq!(lossy("/v1/users/%c3%a9/connections"), None);
        assert_eq!(lossy("/v1/users/a%2Fb/connections"), None);
        assert_eq!(
            lossy("/v1/users/%FF/connections").as_deref(),
            Some("/v1/users/%EF%BF%BD/connections")
        );
        assert_eq!(
            lossy("/v1/oauth/a%FFb/callback").as_deref(),
            Some("/v1/oauth/a%EF%BF%BDb/callback")
        );
        // Other segments stay exactly as they came.
        assert_eq!(
            lossy("/x%2Fy/%c3/%zz").as_deref(),
            Some("/x%2Fy/%EF%BF%BD/%zz")
        );
    }
}
