//! The ops console (docs/console.md#console): server-rendered HTML pages at `/ops`, in the
//! same process as the API, for operators signed in with an `ops` token. No script at all:
//! forms post and redirect, charts are inline SVG drawn here, the one stylesheet is served
//! from here (nothing is fetched from elsewhere; the Content-Security-Policy says so).
//!
//! Not part of the OpenAPI document: these are plain poem routes, nested under `/ops` by the
//! server next to the API.
//!
//! # Layout
//! - `session.rs`: sign-in and sign-out, the cookie, CSRF tokens, the `Origin` check.
//! - `html.rs`: escaping, the page frame, formatters.
//! - `summary.rs`: `/ops`, the summary with its charts; `charts.rs`: the SVG charts;
//!   `samples.rs`: the in-process ring buffer of summaries the charts "over time" draw.
//! - `list.rs`: `/ops/connections`, the filtered list.
//! - `connection.rs`: `/ops/connections/{id}`; `coverage.rs`: its coverage section;
//!   `actions.rs`: its action forms' `POST`s.
//! - `bulk.rs`: bulk actions from the list: the dry run's page, the confirmation.
//! - `console.css`: the stylesheet.

mod actions;
mod bulk;
mod charts;
mod connection;
mod coverage;
mod html;
mod list;
mod samples;
mod session;
mod summary;

use engine::StoreError;
use poem::{
    Endpoint, EndpointExt as _, IntoResponse as _, Response, Route, get,
    http::{HeaderValue, StatusCode, header},
    middleware::SetHeader,
    post,
};
use url::Url;
use workflows::Workflows;

pub use self::samples::{ConsoleSamples, MAX_SAMPLES, SAMPLE_INTERVAL, Sample};
use self::session::Session;
use crate::auth::JwtKeys;

/// Where the server nests the console.
pub const BASE: &str = "/ops";

/// The stylesheet, compiled in.
const CSS: &str = include_str!("console.css");

/// Nothing but this origin's stylesheet and forms; no script, no frames, no other origin.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How the console is served.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// The server's public URL: its origin is the one `POST`s may come from, and `https`
    /// makes the cookie `Secure`.
    pub public_url: Url,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

/// What every console handler reads.
#[derive(Clone)]
pub struct Console {
    workflows: Workflows,
    jwt: JwtKeys,
    /// Derived from the JWT secret, so every process sharing it accepts the others' forms.
    csrf_key: [u8; 32],
    /// The public URL's origin (`scheme://host[:port]`).
    origin: String,
    /// The public URL is `https`: the cookie is `Secure`.
    secure: bool,
    samples: ConsoleSamples,
}

/// The console's routes, to be nested at [`BASE`].
pub fn routes(
    workflows: Workflows,
    jwt: JwtKeys,
    settings: ConsoleSettings,
    samples: ConsoleSamples,
) -> impl Endpoint<Output = Response> {
    let console = Console {
        csrf_key: jwt.derive_key("tributary ops console csrf"),
        workflows,
        jwt,
        origin: settings.public_url.origin().ascii_serialization(),
        secure: settings.public_url.scheme() == "https",
        samples,
    };
    let max_body_bytes = settings.max_body_bytes;
    Route::new()
        .at("/", get(summary::show))
        .at("/login", get(session::login_form).post(session::login))
        .at("/logout", post(session::logout))
        .at("/connections", get(list::list))
        .at("/connections/:id", get(connection::show))
        .at("/connections/:id/:action", post(actions::act))
        .at("/bulk", post(bulk::dry_run))
        .at("/bulk/confirm", post(bulk::confirm))
        .at("/static/console.css", get(stylesheet))
        .data(console)
        .around(move |endpoint, req| crate::middleware::limit_body(endpoint, req, max_body_bytes))
        .catch_all_error(|err| async move { error_page(err.status()) })
        .with(headers())
}

/// Response headers of every console page.
fn headers() -> SetHeader {
    SetHeader::new()
        .overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        )
        .overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"))
        .overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        )
        // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends `Origin: null`
        // with the console's own forms, and the origin check could not tell them apart.
        .overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        )
        .overriding(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

#[poem::handler]
fn stylesheet() -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/css; charset=utf-8")
        .body(CSS)
}

/// A page for what poem itself refuses (no such page, a form that does not parse, …).
fn error_page(status: StatusCode) -> Response {
    let text = match status {
        StatusCode::NOT_FOUND => "There is no such page.",
        StatusCode::METHOD_NOT_ALLOWED => "That page does not take this kind of request.",
        StatusCode::PAYLOAD_TOO_LARGE => "The form was too large.",
        s if s.is_client_error() => "The request could not be read.",
        _ => "Something went wrong on the server.",
    };
    html::page(
        status,
        "Error",
        None,
        "",
        None,
        &format!(
            "<h1>{}</h1><p>{text}</p><p><a href=\"{BASE}\">Back to the summary</a></p>",
            status.as_u16()
        ),
    )
    .into_response()
}

/// The page when the database could not be read.
fn store_failed(session: &Session, err: &StoreError) -> Response {
    tracing::warn!(error = %err, "a console page could not read the store");
    html::page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        Some(session),
        "",
        None,
        "<h1>The database could not be read</h1><p>Reload the page in a moment.</p>",
    )
}
